"""detkit doctor: every figure of report.json on a hand-made dataset, one test per planted
problem, exit codes, and the vectorized statistics against slow loop references."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit import kmeans
from detkit.cli import app
from detkit.data.dataset import Dataset, load_dataset
from detkit.data.letterbox import Letterbox, letterbox_records
from detkit.data.records import ImageRecord, drop_crowds
from detkit.doctor import diagnose
from detkit.doctor.boxes import (aspect_edges, box_table, group_medians,
                                 letterbox_table, side_edges)
from detkit.doctor.images import check_images
from detkit.families import get_family

TINY = get_family("yolov3-tiny")
TINY_ANCHORS = TINY.resolve_anchors(None)[0]


def invoke(*args):
    return CliRunner().invoke(app, ["doctor", *map(str, args)])


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A noisy image of ``width x height`` (PNG or JPEG by the suffix)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def write_coco(root: Path, images: list[dict], categories: list[str]) -> Path:
    """``root/train.json`` from ``images`` (``file``, ``size``, ``boxes``: ``[x1, y1, x2,
    y2, class]``); the image files are written by the caller."""
    entries, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        width, height = image["size"]
        entries.append({"id": image_id, "file_name": image["file"], "width": width,
                        "height": height})
        for x1, y1, x2, y2, cls in image.get("boxes", []):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cls + 1, "iscrowd": 0,
                                "bbox": [x1, y1, x2 - x1, y2 - y1]})
    data = {"images": entries, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)]}
    root.mkdir(parents=True, exist_ok=True)
    path = root / "train.json"
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------ the hand-made dataset

CAT, DOG, BIRD = 0, 1, 2
CLASSES = ["cat", "dog", "bird", "fish"]
#: Input 64: a 128x64 image letterboxes with scale 0.5 and offset (0, 16).
HAND_IMAGES = [
    {"file": "a.png", "size": (128, 64), "boxes": [
        [8, 8, 40, 40, CAT], [0, 0, 128, 64, CAT], [120, 40, 140, 70, DOG]]},   # A3 clipped
    {"file": "b.png", "size": (128, 64), "boxes": [[16, 16, 48, 32, CAT]]},     # a's bytes
    {"file": "c.png", "size": (64, 64)},                                       # no boxes
    {"file": "d.png", "size": (128, 64), "boxes": [[0, 0, 32, 32, CAT]]},       # missing
    {"file": "e.png", "size": (128, 64), "boxes": [
        [10, 10, 12, 11, BIRD],            # 1 x 0.5 px at the input: dropped by training
        [64, 0, 128, 64, BIRD],
        [5, 5, 5, 9, CAT],                 # zero area: dropped by the reader
        [200, 10, 220, 20, DOG]]},         # outside the image: dropped by the reader
    {"file": "f.png", "size": (128, 64), "boxes": [                            # 64x128 file
        [0, 0, 64, 64, DOG], [64, 0, 96, 32, DOG]]},
    {"file": "g.png", "size": (128, 64)},                                      # garbage
    {"file": "h.jpg", "size": (128, 64), "boxes": [[0, 0, 64, 64, CAT]]},       # truncated
]
#: The kept boxes' input-pixel sizes, in order (A1 A2 A3 B1 D1 E2 F1 F2 H1).
HAND_WH = [(16, 16), (64, 32), (4, 12), (16, 8), (16, 16), (32, 32), (32, 32), (16, 16),
           (32, 32)]


@pytest.fixture
def hand(tmp_path):
    root = tmp_path / "data"
    images = root / "images"
    write_image(images / "a.png", 128, 64, seed=1)
    shutil.copyfile(images / "a.png", images / "b.png")
    write_image(images / "c.png", 64, 64, seed=2)
    write_image(images / "e.png", 128, 64, seed=3)
    write_image(images / "f.png", 64, 128, seed=4)
    (images / "g.png").write_bytes(b"this is not an image")
    jpeg = write_image(images / "h.jpg", 128, 64, seed=5).read_bytes()
    (images / "h.jpg").write_bytes(jpeg[:-100])
    entries = [dict(image, file=f"images/{image['file']}") for image in HAND_IMAGES]
    return write_coco(root, entries, CLASSES)


def slow_best_anchor(wh, anchors):
    """Per box, the anchor of highest centered IoU (lowest index on ties), by loops."""
    labels = []
    for w, h in wh:
        ious = [min(w, a) * min(h, b) / (w * h + a * b - min(w, a) * min(h, b))
                for a, b in anchors]
        labels.append(int(np.argmax(ious)))
    return labels


def slow_unfit(wh, anchors, anchor_t):
    kinds = {"too_small": 0, "too_large": 0, "aspect": 0}
    areas = [a * b for a, b in anchors]
    for w, h in wh:
        fits = any(min(w / a, a / w, h / b, b / h) > 1 / anchor_t for a, b in anchors)
        if fits:
            continue
        kind = ("too_small" if w * h < min(areas) else "too_large" if w * h > max(areas)
                else "aspect")
        kinds[kind] += 1
    return kinds


def r4(value):
    return round(float(value), 4)


def test_hand_made_dataset_report_figures(hand, tmp_path):
    out = tmp_path / "doctor"
    result = invoke(hand, "--model", "yolov3-tiny", "--input-size", 64, "--out", out,
                    "--rare-count", 3, "--rare-fraction", 0, "--max-missing", 0.3)
    assert result.exit_code == 1, result.output      # an image of another size than annotated
    report = json.loads((out / "report.json").read_text())
    images_dir = hand.parent / "images"

    assert report["format_version"] == 1
    assert report["dataset"] == {"path": str(hand), "format": "coco", "num_classes": 4,
                                 "class_names": CLASSES}
    assert report["settings"] == {
        "input_size": 64, "check_images": "header", "anchor_t": 4.0, "seed": 0,
        "rare_fraction": 0.0, "rare_count": 3, "max_imbalance": 20.0, "max_missing": 0.3,
        "model": "yolov3-tiny", "anchors": str(TINY.default_anchors_path())}

    images = dict(report["images"])
    unreadable = images["examples"].pop("unreadable")
    assert len(unreadable) == 1 and unreadable[0].startswith(f"{images_dir / 'g.png'}: ")
    assert images == {
        "records": 8, "with_boxes": 6, "without_boxes": 2, "repeated_entries": 0,
        "checked": "header", "files": 8, "found": 6, "missing": 1, "unreadable": 1,
        "records_missing_or_unreadable": 2, "size_mismatch": 1, "size_transposed": 1,
        "truncated_jpeg": 1,
        "duplicates": {"groups": 1, "files": 1, "examples": [
            [str(images_dir / "a.png"), str(images_dir / "b.png")]]},
        "examples": {"missing": [str(images_dir / "d.png")],
                     "size_mismatch": [str(images_dir / "f.png")],
                     "truncated_jpeg": [str(images_dir / "h.jpg")]},
        "sizes": {"distinct": 2, "invalid": 0,
                  "width": {"min": 64.0, "p5": 86.4, "p25": 128.0, "median": 128.0,
                            "p75": 128.0, "p95": 128.0, "max": 128.0, "mean": 120.0},
                  "height": {"min": 64.0, "p5": 64.0, "p25": 64.0, "median": 64.0,
                             "p75": 64.0, "p95": 64.0, "max": 64.0, "mean": 64.0},
                  "most_common": [[128, 64, 7], [64, 64, 1]]},
    }
    assert report["boxes"] == {
        "annotated": 12, "after_reader": 10, "kept": 9,
        "reader": {"dropped_degenerate": 1, "dropped_outside": 1, "clipped": 1,
                   "examples": [f"{hand} (image id 1)", f"{hand} (image id 5)"]},
        "letterbox": {"clipped": 0, "dropped": 1}, "crowd": 0, "difficult": 0,
        "unit_range": 0, "per_image": {"mean": 1.25, "max": 3}}

    wh = np.array(HAND_WH, np.float64)
    side = np.sqrt(wh.prod(axis=1))

    def dist(values):
        points = np.percentile(values, [0, 5, 25, 50, 75, 95, 100])
        return {**dict(zip(["min", "p5", "p25", "median", "p75", "p95", "max"],
                           map(r4, points))), "mean": r4(np.mean(values))}

    assert report["sizes"] == {
        "width": dist(wh[:, 0]), "height": dist(wh[:, 1]), "side": dist(side),
        "aspect": dist(wh[:, 0] / wh[:, 1]),
        "area_classes": {"small": 5, "medium": 4, "large": 0},
        "side_histogram": {"edges": [0, 2, 4, 8, 16, 32, 64], "counts": [0, 0, 1, 1, 3, 4]},
        "aspect_histogram": {
            "edges": [0.0156, 0.125, 0.25, 0.5, 0.7071, 1.4142, 2.0, 4.0, 8.0, 64.0],
            "counts": [0, 0, 1, 0, 6, 0, 2, 0, 0]},
    }
    assert report["classes"] == [
        {"id": 0, "name": "cat", "boxes": 5, "share": 0.5, "images": 4, "median_w": 16.0,
         "median_h": 16.0, "dropped": 0},
        {"id": 1, "name": "dog", "boxes": 3, "share": 0.3, "images": 2, "median_w": 16.0,
         "median_h": 16.0, "dropped": 0},
        {"id": 2, "name": "bird", "boxes": 2, "share": 0.2, "images": 1, "median_w": 32.0,
         "median_h": 32.0, "dropped": 1},
        {"id": 3, "name": "fish", "boxes": 0, "share": 0.0, "images": 0, "median_w": None,
         "median_h": None, "dropped": 0}]
    assert report["balance"] == {"imbalance": 2.5, "most": "cat", "least": "bird"}

    quality = kmeans.anchor_quality(wh, TINY_ANCHORS, 4.0)
    anchors = report["anchors"]
    assert anchors["suggested"] is None and "distinct" in anchors["suggested_note"]
    assert anchors == {
        "anchors": TINY_ANCHORS.tolist(), "k": 6, "strides": [32, 16], "anchor_t": 4.0,
        "n_measured": 9, "n_under_min_size": 0, "min_size": 2.0,
        "under_finest_stride": 1,
        "quality": {"avg_iou": r4(quality.avg_iou), "bpr": r4(quality.bpr),
                    "anchors_per_target": r4(quality.anchors_per_target),
                    "fitness": r4(quality.fitness), "n_boxes": 9},
        "per_anchor": np.bincount(slow_best_anchor(wh, TINY_ANCHORS), minlength=6).tolist(),
        "unfit": slow_unfit(wh, TINY_ANCHORS, 4.0),
        "suggested": None, "suggested_note": anchors["suggested_note"]}
    assert sum(anchors["unfit"].values()) == round(9 * (1 - quality.bpr))

    codes = [(f["level"], f["code"]) for f in report["findings"]]
    assert codes == [
        ("fatal", "size_mismatch"), ("warning", "missing_images"),
        ("warning", "truncated_jpeg"), ("warning", "duplicate_images"),
        ("warning", "repaired_boxes"), ("warning", "tiny_boxes"),
        ("warning", "absent_classes"), ("warning", "rare_classes"),
        ("warning", "small_boxes"), ("warning", "default_anchors_size"),
        ("note", "negatives")]
    assert report["fatal"] is True
    assert set(report["timings_s"]) == {"boxes", "images", "statistics", "anchors"}
    assert report["plots"] == ["box_sizes.png", "box_side_hist.png", "aspect_hist.png",
                               "class_counts.png"]
    assert all((out / name).stat().st_size > 0 for name in report["plots"])
    manifest = json.loads((out / "report.json.manifest.json").read_text())
    assert manifest["command"] == "doctor" and manifest["config"]["input_size"] == 64
    assert manifest["fatal"] is True and str(hand) in manifest["inputs"]
    messages = {f["code"]: f["message"] for f in report["findings"]}
    assert messages["rare_classes"].endswith(": bird (2)")
    assert messages["absent_classes"] == "1 class without boxes: fish"
    assert messages["repaired_boxes"] == (
        "fixed 3 boxes: dropped 1 with zero or negative area, dropped 1 entirely outside "
        f"the image, clipped 1 to the image (e.g. {hand} (image id 1), {hand} (image id 5))")
    assert messages["missing_images"].startswith("2 of 8 images are missing or unreadable")
    assert messages["size_mismatch"] == (
        f"1 image differs in size from its annotation ({images_dir / 'f.png'}), 1 of them "
        "transposed (EXIF rotation?): training stops at the first one (fix the annotated "
        "width and height)")
    assert "warning: 1 rare class" in result.output
    assert [line for line in result.output.splitlines() if line.startswith("fatal:")] == [
        "fatal: " + messages["size_mismatch"]]


def test_default_max_missing_makes_one_missing_image_fatal(hand, tmp_path):
    out = tmp_path / "doctor"
    result = invoke(hand, "--model", "yolov3-tiny", "--input-size", 64, "--out", out,
                    "--no-plots")
    assert result.exit_code == 1
    assert "fatal: 2 of 8 images (25.0%) are missing or unreadable" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["fatal"] is True and report["findings"][0]["code"] == "missing_images"
    assert report["plots"] == [] and not list(out.glob("*.png"))


def test_check_images_levels(hand, tmp_path):
    """none skips the files; stat finds missing and duplicates but reads no header;
    decode also finds image data that does not decode."""
    def images(level):
        out = tmp_path / level
        invoke(hand, "--model", "yolov3-tiny", "--input-size", 64, "--out", out,
               "--no-plots", "--check-images", level, "--max-missing", 1)
        return json.loads((out / "report.json").read_text())["images"]

    assert images("none")["checked"] == "none" and "found" not in images("none")
    stat = images("stat")
    assert (stat["found"], stat["missing"], stat["unreadable"], stat["size_mismatch"],
            stat["truncated_jpeg"], stat["duplicates"]["files"]) == (7, 1, 0, 0, 0, 1)
    # A PNG whose header is fine but whose data is not: only decode notices.
    png = (hand.parent / "images" / "c.png")
    data = bytearray(png.read_bytes())
    data[60:-20] = bytes(len(data) - 80)
    png.write_bytes(bytes(data))
    assert images("header")["unreadable"] == 1
    decode = images("decode")
    # OpenCV rejects the truncated JPEG too (so would training).
    assert decode["unreadable"] == 3 and decode["truncated_jpeg"] == 1
    unreadable = decode["examples"]["unreadable"]
    folder = hand.parent / "images"
    assert unreadable[0] == f"{folder / 'c.png'}: cannot decode the image data"
    assert unreadable[1].startswith(f"{folder / 'g.png'}: ")
    assert unreadable[2] == f"{folder / 'h.jpg'}: cannot decode the image data"


# ---------------------------------------------------------- one test per problem


def small_coco(tmp_path, boxes_per_image, *, sizes=None, categories=("a", "b"),
               missing=(), files=None):
    """A COCO dataset of real 64x64 images (``boxes_per_image``: a list per image)."""
    root = tmp_path / "data"
    images = []
    for i, boxes in enumerate(boxes_per_image):
        width, height = (sizes or {}).get(i, (64, 64))
        name = f"images/{i}.png"
        if i not in missing:
            write_image(root / name, width, height, seed=i)
        images.append({"file": name, "size": (width, height), "boxes": boxes})
    for i, content in (files or {}).items():
        (root / f"images/{i}.png").write_bytes(content)
    return write_coco(root, images, list(categories))


def codes_of(path, tmp_path, *extra):
    """Findings at input 64 with the default anchors' values (given as a file: the
    defaults themselves are COCO's at 416, which is a finding at 64)."""
    out = tmp_path / "out"
    anchors = tmp_path / "tiny.anchors.txt"
    anchors.write_text(TINY.default_anchors_path().read_text())
    result = invoke(path, "--model", "yolov3-tiny", "--input-size", 64, "--out", out,
                    "--no-plots", "--anchors", anchors, *extra)
    report = json.loads((out / "report.json").read_text())
    return result, {f["code"]: f["level"] for f in report["findings"]}, report


def test_default_anchors_at_another_input_size_are_a_warning(tmp_path):
    path = small_coco(tmp_path, [GOOD] * 10)
    out = tmp_path / "out"
    result = invoke(path, "--model", "yolov3-tiny", "--input-size", 64, "--out", out,
                    "--no-plots")
    assert result.exit_code == 0, result.output
    assert ("the default anchors (yolov3-tiny_coco.txt) are COCO's at input 416, this runs "
            "at 64: fit anchors") in " ".join(result.output.split())
    report = json.loads((out / "report.json").read_text())
    assert {"level": "warning", "code": "default_anchors_size"} in [
        {k: f[k] for k in ("level", "code")} for f in report["findings"]]


GOOD = [[8, 8, 40, 40, 0], [20, 20, 50, 60, 1]]


def test_dataset_file_header_names_the_file_and_the_split_read(tmp_path):
    """``doctor data.yaml`` is headed by the file the user gave, then the split it read."""
    path = small_coco(tmp_path, [GOOD] * 10)
    yaml_file = path.parent / "data.yaml"
    yaml_file.write_text(f"train: {path.name}\nval: {path.name}\n")
    out = tmp_path / "out"
    result = invoke(yaml_file, "--input-size", 64, "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    assert f"doctor: {yaml_file} ({path}, coco, 2 classes)" in " ".join(result.output.split())
    dataset = json.loads((out / "report.json").read_text())["dataset"]
    assert (dataset["path"], dataset["read"]) == (str(yaml_file), str(path))


def test_clean_dataset_has_no_warning(tmp_path):
    path = small_coco(tmp_path, [GOOD] * 10)      # 10 boxes a class: not rare
    result, codes, report = codes_of(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert not [c for c, level in codes.items() if level != "note"], codes
    assert report["fatal"] is False


def test_flags_missing_image(tmp_path):
    path = small_coco(tmp_path, [GOOD] * 4, missing={2})
    result, codes, report = codes_of(path, tmp_path)
    assert result.exit_code == 1 and codes["missing_images"] == "fatal"
    assert report["images"]["missing"] == 1
    result, codes, _ = codes_of(path, tmp_path, "--max-missing", 0.25)
    assert result.exit_code == 0 and codes["missing_images"] == "warning"


def test_no_readable_image_is_fatal(tmp_path):
    path = small_coco(tmp_path, [GOOD] * 2, missing={0, 1})
    result, codes, _ = codes_of(path, tmp_path, "--max-missing", 1)
    assert result.exit_code == 1 and codes["no_images"] == "fatal"
    assert "none of the 2 image files can be read" in result.output


def test_flags_unreadable_image(tmp_path):
    path = small_coco(tmp_path, [GOOD] * 3, files={1: b"\x89PNG broken"})
    result, codes, report = codes_of(path, tmp_path, "--max-missing", 0.5)
    assert result.exit_code == 0 and codes["missing_images"] == "warning"
    assert report["images"]["unreadable"] == 1


def test_flags_duplicate_image(tmp_path):
    path = small_coco(tmp_path, [GOOD] * 3)
    images = path.parent / "images"
    shutil.copyfile(images / "0.png", images / "2.png")
    result, codes, report = codes_of(path, tmp_path)
    assert result.exit_code == 0 and codes["duplicate_images"] == "warning"
    assert report["images"]["duplicates"]["examples"] == [
        [str(images / "0.png"), str(images / "2.png")]]


def _line(output, start):
    """The one output line that starts with ``start``."""
    found = [line for line in output.splitlines() if line.startswith(start)]
    assert len(found) == 1, output
    return found[0]


def test_fatal_and_warning_lines_name_the_files(tmp_path):
    """Each image finding names its first files (at most 3; 'first: ..., ...' past them)."""
    path = small_coco(tmp_path, [GOOD] * 4, missing={2})
    images = path.parent / "images"
    result, _, _ = codes_of(path, tmp_path)
    assert _line(result.output, "fatal:") == (
        f"fatal: 1 of 4 images (25.0%) are missing or unreadable ({images / '2.png'}), "
        "above --max-missing 0")
    shutil.copyfile(images / "0.png", images / "1.png")
    write_image(images / "3.png", 32, 64)                 # annotated 64x64
    result, _, _ = codes_of(path, tmp_path, "--max-missing", 0.5)
    assert _line(result.output, "warning: 1 of 4") == (
        f"warning: 1 of 4 images are missing or unreadable ({images / '2.png'}): training "
        "stops at the first one")
    assert _line(result.output, "fatal: 1 image differs") == (
        f"fatal: 1 image differs in size from its annotation ({images / '3.png'}): training "
        "stops at the first one (fix the annotated width and height)")
    assert result.exit_code == 1
    assert _line(result.output, "warning: 1 image file") == (
        "warning: 1 image file duplicates another byte for byte (1 group: "
        f"{images / '0.png'} = {images / '1.png'})")


def test_finding_lines_cite_at_most_three_files(tmp_path):
    path = small_coco(tmp_path, [GOOD] * 6, missing={1, 2, 3}, files={4: b"\x89PNG bad"})
    images = path.parent / "images"
    result, _, _ = codes_of(path, tmp_path, "--max-missing", 1)
    first = ", ".join(str(images / f"{i}.png") for i in (1, 2, 3))
    assert _line(result.output, "warning: 4 of 6") == (
        f"warning: 4 of 6 images are missing or unreadable (first: {first}, ...): "
        "training stops at the first one")
    path = small_coco(tmp_path / "none", [GOOD] * 2, files={0: b"", 1: b"x"})
    result, codes, _ = codes_of(path, tmp_path, "--max-missing", 1)
    images = path.parent / "images"
    assert codes["no_images"] == "fatal"
    assert _line(result.output, "fatal:") == (
        f"fatal: none of the 2 image files can be read ({images / '0.png'}, "
        f"{images / '1.png'})")


def test_help_says_what_the_default_max_missing_does():
    text = " ".join(invoke("--help").output.replace("│", " ").split())
    assert "the default 0 makes any one fatal, since training stops at the first" in text


def test_flags_images_without_boxes(tmp_path):
    path = small_coco(tmp_path, [GOOD, [], GOOD])
    _, codes, report = codes_of(path, tmp_path)
    assert codes["negatives"] == "note" and report["images"]["without_boxes"] == 1
    path = small_coco(tmp_path / "many", [GOOD, [], [], []])
    _, codes, _ = codes_of(path, tmp_path)
    assert codes["many_negatives"] == "warning"


def test_flags_box_outside_image(tmp_path):
    path = small_coco(tmp_path, [GOOD + [[50, 50, 90, 90, 0], [70, 0, 90, 10, 1]]] * 2)
    _, codes, report = codes_of(path, tmp_path)
    assert codes["repaired_boxes"] == "warning"
    assert report["boxes"]["reader"] == {"dropped_degenerate": 0, "dropped_outside": 2,
                                         "clipped": 2, "examples": [f"{path} (image id 1)",
                                                                 f"{path} (image id 2)"]}


def test_one_class_wording_and_the_readers_repairs(tmp_path):
    """One class: ``1 class`` in the header; under ``--rare-count`` boxes it has few boxes
    (not 'rare': it holds all of them); the reader's repairs are the line every other
    command prints (``FixReport.summary``)."""
    boxes = [[8, 8, 40, 40, 0], [50, 50, 70, 70, 0]]       # the second clipped to 64x64
    path = small_coco(tmp_path, [boxes] * 3, categories=("raccoon",))
    result, codes, report = codes_of(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert _line(result.output, "doctor:") == f"doctor: {path} (coco, 1 class)"
    assert _line(result.output, "warning: few") == (
        "warning: few boxes: raccoon, the only class, has 6 (under --rare-count 10)")
    assert codes["few_boxes"] == "warning" and "rare_classes" not in codes
    summary = load_dataset(path).fixes.summary()
    assert summary.startswith("fixed 3 boxes: clipped 3 to the image (e.g. ")
    assert _line(result.output, "warning: fixed") == f"warning: {summary}"
    assert report["boxes"]["reader"]["examples"] == load_dataset(path).fixes.examples
    path = small_coco(tmp_path / "two", [boxes] * 3, categories=("raccoon", "dog"))
    result, codes, _ = codes_of(path, tmp_path)
    assert _line(result.output, "doctor:") == f"doctor: {path} (coco, 2 classes)"
    assert _line(result.output, "warning: few") == (
        "warning: few boxes: raccoon, the only class with boxes, has 6 (under --rare-count "
        "10)")
    assert codes["absent_classes"] == "warning" and "rare_classes" not in codes
    path = small_coco(tmp_path / "more", [boxes] * 5, categories=("raccoon",))
    _, codes, _ = codes_of(path, tmp_path)                  # 10 boxes: enough
    assert "few_boxes" not in codes and "rare_classes" not in codes


def test_flags_boxes_dropped_after_letterbox(tmp_path):
    path = small_coco(tmp_path, [GOOD + [[10, 10, 11.5, 30, 0]]], sizes={0: (64, 64)})
    _, codes, report = codes_of(path, tmp_path)
    assert codes.get("tiny_boxes") is None            # 1.5 px at scale 1: kept
    path = small_coco(tmp_path / "big", [GOOD + [[10, 10, 11.5, 30, 0]]],
                      sizes={0: (256, 256)})          # 0.375 px at the input
    _, codes, report = codes_of(path, tmp_path)
    assert codes["tiny_boxes"] == "warning" and report["boxes"]["letterbox"]["dropped"] == 1


def test_flags_rare_and_absent_classes(tmp_path):
    many = [[8, 8, 40, 40, 0]] * 30
    path = small_coco(tmp_path, [many, [[8, 8, 40, 40, 1]]], categories=("a", "b", "c"))
    _, codes, report = codes_of(path, tmp_path)
    assert codes["rare_classes"] == "warning" and codes["absent_classes"] == "warning"
    assert codes["class_imbalance"] == "warning"
    assert report["balance"] == {"imbalance": 30.0, "most": "a", "least": "b"}
    _, codes, _ = codes_of(path, tmp_path, "--rare-count", 0, "--rare-fraction", 0,
                           "--max-imbalance", 30)
    assert "rare_classes" not in codes and "class_imbalance" not in codes


def test_flags_boxes_under_the_finest_stride(tmp_path):
    path = small_coco(tmp_path, [[[2, 2, 5, 5, 0], [20, 20, 22, 23, 1]]] * 3)
    _, codes, report = codes_of(path, tmp_path)
    assert codes["small_boxes"] == "warning"
    assert report["anchors"]["under_finest_stride"] == 6
    assert codes["anchor_fit"] == "warning"        # the COCO anchors are far too big
    assert report["anchors"]["unfit"]["too_small"] == 6


def test_flags_normalized_coordinates(tmp_path):
    path = small_coco(tmp_path, [[[0.1, 0.1, 0.5, 0.6, 0], [0.2, 0.3, 0.9, 0.8, 1]]] * 2)
    result, codes, report = codes_of(path, tmp_path)
    assert codes["normalized_coordinates"] == "warning"
    assert codes["no_boxes"] == "fatal" and result.exit_code == 1
    assert report["boxes"]["unit_range"] == 4
    assert "all 4 boxes are dropped" in result.output


def test_no_boxes_is_fatal(tmp_path):
    path = small_coco(tmp_path, [[], []])
    result, codes, _ = codes_of(path, tmp_path)
    assert result.exit_code == 1 and codes["no_boxes"] == "fatal"
    assert "no box left for training: the dataset has no boxes" in result.output


def test_yolo_labels_in_pixels_are_an_error(tmp_path):
    root = tmp_path / "yolo"
    write_image(root / "images" / "a.png", 64, 64)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 32 32 20 20\n")
    result = invoke(root, "--model", "yolov3-tiny", "--input-size", 64, "--out",
                    tmp_path / "out")
    assert result.exit_code == 1 and "look like pixel coordinates" in result.output


def test_lines_dataset_and_repeated_entries(tmp_path):
    write_image(tmp_path / "a.png", 64, 48)
    lines = tmp_path / "train.txt"
    lines.write_text("a.png 1,1,30,30,0\na.png 2,2,40,40,0 0,0,64,48,0\n")
    result, codes, report = codes_of(lines, tmp_path)
    assert result.exit_code == 0, result.output
    assert codes["repeated_entries"] == "warning"
    assert (report["images"]["records"], report["images"]["files"],
            report["images"]["repeated_entries"]) == (2, 1, 1)
    assert report["images"]["duplicates"]["files"] == 0


def test_usage_errors(tmp_path, hand):
    result = invoke(hand, "--input-size", 100, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--input-size must be a multiple of 32" in result.output
    result = invoke(hand, "--check-images", "all", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--check-images must be one of" in result.output
    (tmp_path / "file").write_text("x")
    result = invoke(hand, "--out", tmp_path / "file")
    assert result.exit_code == 2 and "--out must be a folder" in result.output
    result = invoke(hand, "--out", hand.parent, "--no-plots")
    assert result.exit_code == 1  # a missing image is fatal; train.json is not clobbered
    assert json.loads(hand.read_text())["images"][0]["file_name"] == "images/a.png"
    anchors = tmp_path / "three.txt"
    anchors.write_text("10,13, 16,30, 33,23\n")
    result = invoke(hand, "--anchors", anchors, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "yolov3 needs 9 anchors" in result.output


def test_plots_without_matplotlib_is_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import now fails
    path = small_coco(tmp_path, [GOOD] * 2)
    out = tmp_path / "out"
    result = invoke(path, "--model", "yolov3-tiny", "--input-size", 64, "--out", out)
    assert result.exit_code == 0, result.output
    assert "plots skipped: matplotlib is not installed" in result.output
    assert json.loads((out / "report.json").read_text())["plots"] == []


def test_box_size_plot_shows_anchors_larger_than_the_input(tmp_path, monkeypatch):
    """COCO's anchors at a 128 px input: the axes reach the largest anchor (and the
    suggestion), so that no anchor falls outside the drawing."""
    pytest.importorskip("matplotlib")
    from detkit.doctor import plots

    limits = {}

    def keep_limits(plt, fig, path):
        limits[path.name] = (fig.axes[0].get_xlim(), fig.axes[0].get_ylim())
        plt.close(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep_limits)
    wh = np.array([[20.0, 30.0], [100.0, 90.0]])
    anchors = np.array([[10.0, 13.0], [135.0, 169.0], [344.0, 319.0]])
    plots.write_plots(wh, [2], ["cat"], anchors, np.array([[25.0, 400.0]]), [16, 32], 128,
                      tmp_path)
    (x_low, x_high), (y_low, y_high) = limits[plots.SIZES_FILE]
    assert x_low < 10 and x_high > 400 and y_low < 13 and y_high > 400
    plots.write_plots(wh, [2], ["cat"], anchors[:1], None, [16, 32], 128, tmp_path)
    assert limits[plots.SIZES_FILE][0][1] == pytest.approx(128 * 1.1)   # the input bounds


# ------------------------------------------------- fast code vs slow references


def random_dataset(seed: int, images: int = 300, classes: int = 7) -> Dataset:
    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (480, 640), (333, 500), (1000, 200), (64, 64)]
    records = []
    for i in range(images):
        width, height = sizes[rng.integers(len(sizes))]
        n = int(rng.integers(0, 9))
        wh = np.exp(rng.normal(3.0, 1.2, (n, 2))).clip(0.2, None)
        xy = rng.uniform(-0.05, 1.0, (n, 2)) * np.array([width, height])
        boxes = np.concatenate([xy, xy + wh], axis=1)       # some reach outside
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[keep]
        cls = np.minimum(rng.geometric(0.4, len(boxes)) - 1, classes - 1)
        records.append(ImageRecord(f"img{i}.png", width, height, boxes, cls,
                                   iscrowd=rng.random(len(boxes)) < 0.1, image_id=i))
    return Dataset(path=Path("random.json"), format="coco", records=records,
                   class_names=[f"c{k}" for k in range(classes)])


@pytest.mark.parametrize("seed", [0, 1])
def test_statistics_match_slow_references(seed):
    dataset = random_dataset(seed)
    size = 128
    diagnosis = diagnose(dataset, input_size=size, anchors=TINY_ANCHORS,
                         strides=TINY.strides, check="none", seed=seed)
    report = diagnosis.report

    # Letterboxing: the library's per-record path, image by image; the sizes and classes
    # are of the boxes training keeps (not the crowd regions), the counts of all.
    kept_wh, kept_cls, clipped, dropped = [], [], 0, 0
    for record in dataset.records:
        boxes, classes, counts = letterbox_records([record], size, len(dataset.class_names))
        clipped += counts.clipped
        dropped += counts.too_small
        boxes, classes, _ = letterbox_records(drop_crowds([record])[0], size,
                                              len(dataset.class_names))
        rows = classes[0] >= 0
        kept_wh += (boxes[0][rows, 2:] - boxes[0][rows, :2]).tolist()
        kept_cls += classes[0][rows].tolist()
    kept_wh = np.array(kept_wh, np.float32)
    assert report["boxes"]["letterbox"] == {"clipped": clipped, "dropped": dropped}
    np.testing.assert_array_equal(diagnosis.wh, kept_wh)
    np.testing.assert_array_equal(diagnosis.classes, kept_cls)
    assert report["boxes"]["kept"] == len(kept_wh) and dropped > 0 and clipped > 0

    # Classes by loops.
    for c, row in enumerate(report["classes"]):
        boxes = sum(int((r.classes == c).sum()) for r in dataset.records)
        images = sum(int((r.classes == c).any()) for r in dataset.records)
        mine = kept_wh[np.array(kept_cls) == c]
        assert (row["boxes"], row["images"]) == (boxes, images)
        assert row["median_w"] == (r4(np.median(mine[:, 0])) if len(mine) else None)
        assert row["median_h"] == (r4(np.median(mine[:, 1])) if len(mine) else None)
    crowd = sum(int(r.iscrowd.sum()) for r in dataset.records)
    assert report["boxes"]["crowd"] == crowd > 0

    # Histograms by loops over the boxes.
    side_counts = [0] * (len(side_edges(size)) - 1)
    aspect_counts = [0] * (len(aspect_edges(size)) - 1)
    for w, h in kept_wh.astype(np.float64):
        for counts, edges, value in ((side_counts, side_edges(size), np.sqrt(w * h)),
                                     (aspect_counts, aspect_edges(size), np.log2(w / h))):
            for b in range(len(edges) - 1):
                last = b == len(edges) - 2
                if edges[b] <= value < edges[b + 1] or (last and value == edges[b + 1]):
                    counts[b] += 1
    assert report["sizes"]["side_histogram"]["counts"] == side_counts
    assert report["sizes"]["aspect_histogram"]["counts"] == aspect_counts
    assert sum(side_counts) == len(kept_wh)

    # Anchors: measured boxes, best anchors and unfit kinds by loops.
    measured = [(w, h) for w, h in kept_wh.astype(np.float64) if w >= 2 and h >= 2]
    anchors = report["anchors"]
    assert anchors["n_measured"] == len(measured)
    assert anchors["per_anchor"] == np.bincount(
        slow_best_anchor(measured, TINY_ANCHORS.astype(np.float64)), minlength=6).tolist()
    assert anchors["unfit"] == slow_unfit(measured, TINY_ANCHORS.astype(np.float64), 4.0)
    assert anchors["under_finest_stride"] == sum(1 for w, h in kept_wh if max(w, h) < 16)
    suggested = anchors["suggested"]
    assert len(suggested["anchors"]) == 6 and suggested["quality"]["n_boxes"] == len(measured)
    assert suggested["quality"]["avg_iou"] > anchors["quality"]["avg_iou"]


def test_letterbox_table_equals_letterbox_per_image():
    dataset = random_dataset(3, images=50)
    table = box_table(dataset.records)
    boxed = letterbox_table(table, 96)
    expected = np.concatenate([
        np.clip(Letterbox(r.width, r.height, 96).to_input(r.boxes), 0, 96)
        for r in dataset.records])
    np.testing.assert_array_equal(boxed.boxes, expected)


def test_group_medians_against_numpy():
    rng = np.random.default_rng(0)
    values, groups = rng.random(500), rng.integers(0, 9, 500)
    medians = group_medians(values, groups, 10)
    for g in range(9):
        np.testing.assert_allclose(medians[g], np.median(values[groups == g]), rtol=0)
    assert np.isnan(medians[9])


def test_duplicate_search_reads_only_size_collisions(tmp_path, monkeypatch):
    from detkit.doctor import images as images_module

    paths = []
    for i, content in enumerate([b"x" * 10, b"y" * 10, b"x" * 10, b"z" * 11,
                                 b"q" * 5000 + b"1", b"q" * 5000 + b"2"]):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(content)
        paths.append(str(path))
    read = []
    real = images_module._digest
    monkeypatch.setattr(images_module, "_digest",
                        lambda path, limit: read.append(path) or real(path, limit))
    check = check_images(paths, np.zeros(6), np.zeros(6), "stat")
    assert check.duplicate_groups == [[0, 2]]
    assert paths[3] not in read                      # a unique size is never read
    assert read.count(paths[4]) == 2                 # heads agree: read in full


def voc_xml(name: str, width: int, height: int, objects: list) -> str:
    parts = [f"<annotation><filename>{name}</filename><size><width>{width}</width>"
             f"<height>{height}</height><depth>3</depth></size>"]
    for cls, (x1, y1, x2, y2) in objects:
        parts.append(f"<object><name>{cls}</name><difficult>0</difficult><bndbox>"
                     f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                     "</bndbox></object>")
    return "".join(parts) + "</annotation>"


def test_voc_folder_with_a_missing_image(tmp_path):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    for i in range(3):
        (root / "Annotations" / f"{i}.xml").write_text(
            voc_xml(f"{i}.png", 64, 48, [("cat", (5, 5, 30, 30)), ("dog", (10, 10, 60, 40))]))
        if i != 1:
            write_image(root / "JPEGImages" / f"{i}.png", 64, 48, seed=i)
    result, codes, report = codes_of(root, tmp_path)
    assert result.exit_code == 1 and codes["missing_images"] == "fatal"
    assert report["dataset"]["format"] == "voc"
    assert report["images"]["examples"]["missing"] == [str(root / "JPEGImages" / "1.png")]
    assert [row["boxes"] for row in report["classes"]] == [3, 3]


def test_yolo_folder_and_config_file(tmp_path):
    root = tmp_path / "yolo"
    for i in range(2):
        write_image(root / "images" / f"{i}.jpg", 80, 40, seed=i)
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.2 0.2 0.1 0.2\n")
    config = tmp_path / "doctor.yaml"
    config.write_text("input-size: 64\nmodel: yolov3-tiny\ncheck_images: stat\nplots: false\n"
                      f"out: {tmp_path / 'out'}\n")
    result = invoke(root, "--config", config)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"]["format"] == "yolo"
    assert report["settings"]["check_images"] == "stat" and report["plots"] == []
    # 80x40 -> scale 0.8 into 64: a 20x20 box becomes 16x16.
    assert report["classes"][0]["median_w"] == 16.0 and report["boxes"]["kept"] == 4
