"""``detkit doctor`` on a generated COCO json of 100k boxes: seconds end to end.

The workload: 15,000 images (five common sizes, both orientations), 100,000 boxes over
80 classes with Zipf-like frequencies (so some classes are rare), log-normal sizes, and
planted defects (0.5 % boxes of zero area, 0.5 % partly outside their image, 100 images
listed without boxes). Two runs of ``detkit.commands.doctor.run`` (reading the json,
every statistic, anchor fit with the k-means suggestion, ``report.json`` and manifest):

- ``no_images``: the image files do not exist (``--check-images header``, the default):
  each folder is listed once, so the missing files cost next to nothing; the report is
  fatal (every image missing), as it should be.
- ``with_images``: every image exists as a small file with a PNG header of its annotated
  size and a random tail (so file sizes vary as real images' do): stat, header read,
  JPEG end check and the duplicate search run on all of them (4 planted duplicates).

Plots are timed separately (``plots_s``, matplotlib). Goal: under 10 s on the 2-core CPU.

Run: ``python -m benchmarks.bench_doctor [--quick]``.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

#: Full and quick workload sizes.
FULL = {"images": 15_000, "boxes": 100_000}
QUICK = {"images": 1_500, "boxes": 10_000}
CLASSES = 80
#: Image sizes of the workload (and their transposes).
SIZES = ((640, 480), (640, 427), (500, 375), (1024, 768), (800, 600))
#: Planted defects.
DEGENERATE_SHARE = OUTSIDE_SHARE = 0.005
EMPTY_IMAGES = 100
DUPLICATES = 4
INPUT_SIZE = 416
GOAL_S = 10.0


def make_coco(images: int, boxes: int, seed: int = 0) -> dict:
    """A COCO ground-truth dict with the defects of the module doc."""
    rng = np.random.default_rng(seed)
    sizes = np.array(SIZES + tuple((h, w) for w, h in SIZES))
    size_of = sizes[rng.integers(0, len(sizes), images)]
    owners = rng.integers(0, images - EMPTY_IMAGES, boxes)      # the last images stay empty
    image_wh = size_of[owners].astype(np.float64)
    wh = np.exp(rng.normal(np.log(60.0), 0.9, (boxes, 2)))
    wh = np.minimum(wh, image_wh * 0.9).clip(2.0)
    xy = rng.uniform(0, 1, (boxes, 2)) * (image_wh - wh)
    degenerate = rng.random(boxes) < DEGENERATE_SHARE
    wh[degenerate, 0] = 0.0
    outside = rng.random(boxes) < OUTSIDE_SHARE
    xy[outside] = image_wh[outside] - wh[outside] / 2          # half outside: clipped
    ranks = np.arange(1, CLASSES + 1)
    weights = 1.0 / ranks ** 1.1
    cats = rng.choice(CLASSES, boxes, p=weights / weights.sum())
    bbox = np.round(np.concatenate([xy, wh], axis=1), 2).tolist()
    return {
        "images": [{"id": i + 1, "width": int(w), "height": int(h),
                    "file_name": f"{i:06d}.png"} for i, (w, h) in enumerate(size_of.tolist())],
        "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(CLASSES)],
        "annotations": [{"id": i + 1, "image_id": int(owners[i]) + 1,
                         "category_id": int(cats[i]) + 1, "bbox": bbox[i], "iscrowd": 0,
                         "area": 1.0} for i in range(boxes)],
    }


def png_stub(width: int, height: int, tail: bytes) -> bytes:
    """A PNG signature and IHDR chunk of ``width x height`` (what a header read needs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + tail)


def write_images(coco: dict, folder: Path, seed: int = 0) -> None:
    """A stub file per image of ``coco`` in ``folder``; the last few duplicate others."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    entries = coco["images"]
    contents = []
    for entry in entries:
        tail = rng.bytes(int(rng.integers(1_000, 60_000)))
        contents.append(png_stub(entry["width"], entry["height"], tail))
    for k in range(DUPLICATES):  # same bytes as image k; give it image k's size too
        dup = len(entries) - 1 - k
        entries[dup]["width"], entries[dup]["height"] = entries[k]["width"], entries[k]["height"]
        contents[dup] = contents[k]
    for entry, content in zip(entries, contents):
        (folder / entry["file_name"]).write_bytes(content)


def _doctor(data: Path, out: Path, plots: bool = False):
    from detkit.commands.doctor import Options, run

    start = time.perf_counter()
    result = run(Options(data=data, out=out, input_size=INPUT_SIZE, plots=plots))
    return result, time.perf_counter() - start


def main(quick: bool = False) -> dict:
    """Time the doctor on both workloads; returns the figures (seconds, counts)."""
    size = QUICK if quick else FULL
    root = Path(tempfile.mkdtemp(prefix="bench_doctor_"))
    try:
        coco = make_coco(**size)
        bare = root / "bare" / "train.json"
        bare.parent.mkdir(parents=True)
        bare.write_text(json.dumps(coco))
        _doctor(bare, root / "warmup")              # imports and caches out of the timing
        result, bare_s = _doctor(bare, root / "out_bare")
        figures = {"images": size["images"], "boxes": size["boxes"],
                   "no_images_s": round(bare_s, 3),
                   "no_images_timings_s": result.report["timings_s"],
                   "no_images_fatal": [f.code for f in result.fatal]}

        with_images = root / "full" / "train.json"
        write_images(coco, with_images.parent / "images")
        with_images.write_text(json.dumps(coco))
        result, full_s = _doctor(with_images, root / "out_full")
        report = result.report
        figures.update({
            "with_images_s": round(full_s, 3),
            "with_images_timings_s": report["timings_s"],
            "found": report["images"]["found"],
            "duplicate_files": report["images"]["duplicates"]["files"],
            "reader_dropped": report["boxes"]["reader"]["dropped_degenerate"],
            "reader_clipped": report["boxes"]["reader"]["clipped"],
            "rare_classes": sum(f["code"] == "rare_classes" for f in report["findings"]),
            "avg_iou": report["anchors"]["quality"]["avg_iou"],
            "suggested_avg_iou": report["anchors"]["suggested"]["quality"]["avg_iou"],
        })
        result, plots_s = _doctor(with_images, root / "out_plots", plots=True)
        figures["plots_s"] = round(plots_s - full_s, 3) if result.plots else None
        figures["plots_note"] = result.plots_note
        figures["goal_s"] = GOAL_S
        figures["goal_met"] = max(bare_s, full_s) < GOAL_S
        return figures
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv), indent=2))
