"""Dataset readers: the vectorized COCO reader vs. the per-box reader it replaced, and the
whole ``detkit kmeans-anchors`` vs. keras-yolo3's ``kmeans.py`` on the same boxes.

Workload (the issue's): a COCO json of 12,500 images (640x480) and 100k boxes, 80
categories, with about 2 % bad boxes (zero area, outside the image, partly outside) so
that the checks, drops and clips all run. The reference reader, below, is detkit's
previous COCO reader: per annotation, Python checks of the ids, a dict lookup and a
float conversion of the bbox; per image, a box repair and a record. Both read the same
file in the same process and must return the same boxes and repair counts.

The command comparison runs ``detkit kmeans-anchors gt.json --k 9`` in-process (Typer
parsing, reading, 10 seeded k-means restarts, writing the anchors, report and manifest)
against :class:`ReferenceYoloKmeans`, a step-by-step re-implementation of keras-yolo3's
``kmeans.py`` (``YOLO_Kmeans.txt2clusters``: ``txt2boxes``, a Python loop over the lines
file of the same valid boxes; one k-means run on integer sizes with median updates; the
sorted anchors written; their mean IoU), timed as the median over seeds (its iteration
count varies by seed). Both are also timed as fresh processes (interpreter start and
imports included).

Figures: seconds (median of the repeats) and ratios, wall and CPU time of this process.
Run: ``python -m benchmarks.bench_readers [--quick]``.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from detkit.data.fixes import FixReport, fix_boxes
from detkit.data.readers import read_coco_json
from detkit.data.records import ImageRecord

IMAGES, BOXES_PER_IMAGE = 12_500, 8
QUICK_IMAGES = 1_250
WIDTH, HEIGHT, CATEGORIES = 640, 480, 80
#: Share of boxes made bad on purpose (a third each: zero area, outside, partly outside).
BAD_SHARE = 0.02
K = 9
#: Timed repeats (the median counts; the machine may be shared).
REPEATS, QUICK_REPEATS = 3, 2
#: Seeded runs of kmeans.py (the median counts; one run takes 1.5-5 s on 100k boxes).
KMEANS_PY_SEEDS, QUICK_KMEANS_PY_SEEDS = 5, 2
#: The read goal of the issue, seconds for 100k boxes.
READ_GOAL_S = 0.4
#: The goals of the issue: the read in at most 0.4 s (where the old one took 2.5 s, i.e.
#: at least 6.25x), the whole command at least 10x faster than kmeans.py.
READ_GOAL_RATIO = 2.5 / 0.4
COMMAND_GOAL_RATIO = 10.0


def make_coco(images: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    """A COCO dict of ``images`` images with :data:`BOXES_PER_IMAGE` boxes each, and the
    ``(M, 4)`` int xyxy boxes that are valid as given (in json order, for kmeans.py)."""
    rng = np.random.default_rng(seed)
    n = images * BOXES_PER_IMAGE
    wh = np.clip(np.exp(rng.normal(np.log(60), 0.8, (n, 2))), 2, 400).astype(int)
    xy = (rng.random((n, 2)) * (np.array([WIDTH, HEIGHT]) - wh)).astype(int)
    boxes = np.concatenate([xy, wh], axis=1)
    bad = rng.random(n) < BAD_SHARE
    kind = rng.integers(0, 3, n)
    boxes[bad & (kind == 0), 2] = 0                      # zero width
    boxes[bad & (kind == 1), 0] = WIDTH + 5              # entirely right of the image
    boxes[bad & (kind == 2), 1] = -boxes[bad & (kind == 2), 3] // 2  # partly above
    image_ids = np.repeat(np.arange(1, images + 1), BOXES_PER_IMAGE)
    order = rng.permutation(n)  # annotations are not grouped by image in the file
    categories = rng.integers(1, CATEGORIES + 1, n)
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": WIDTH, "height": HEIGHT}
                   for i in range(1, images + 1)],
        "annotations": [{"id": int(k) + 1, "image_id": int(image_ids[k]),
                         "category_id": int(categories[k]), "iscrowd": 0,
                         "area": float(boxes[k, 2] * boxes[k, 3]),
                         "bbox": [int(v) for v in boxes[k]]} for k in order],
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, CATEGORIES + 1)],
    }
    valid = ~bad[order]
    xywh = boxes[order][valid]
    return data, np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


# ---------------------------------------------------------------- the previous reader


def _reference_int(entry, key, what, path):
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{path}: {what}: {key!r} must be an integer, got {value!r}")
    return int(value)


def _reference_bbox(annotation, path):
    bbox = annotation.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise ValueError(f"{path}: 'bbox' must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not np.all(np.isfinite([x, y, w, h])):
        raise ValueError(f"{path}: 'bbox' is not finite: {bbox!r}")
    return [x, y, x + w, y + h]


def _reference_record(image_path, width, height, boxes, classes, iscrowd, report, where,
                      image_id):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    boxes, keep = fix_boxes(boxes, width, height, report, where)
    return ImageRecord(image_path=str(image_path), width=int(width), height=int(height),
                       boxes=boxes[keep],
                       classes=np.asarray(classes, np.int32).reshape(n)[keep],
                       iscrowd=np.asarray(iscrowd, bool).reshape(n)[keep],
                       image_id=int(image_id))


def reference_read_coco(path: Path, report: FixReport) -> list[ImageRecord]:
    """detkit's previous COCO reader: Python checks per annotation, a record per image."""
    data = json.loads(path.read_text(encoding="utf-8"))
    ids = {}
    for number, category in enumerate(data["categories"]):
        ids[_reference_int(category, "id", f"category #{number}", path)] = category
    mapping = {cat_id: i for i, cat_id in enumerate(sorted(ids))}
    seen = {}
    for number, image in enumerate(data["images"]):
        image_id = _reference_int(image, "id", f"image #{number}", path)
        if image_id in seen:
            raise ValueError(f"{path}: image id {image_id} is given twice")
        for key in ("width", "height"):
            _reference_int(image, key, f"image id {image_id}", path)
        if not image.get("file_name"):
            raise ValueError(f"{path}: image id {image_id}: no 'file_name'")
        seen[image_id] = image
    boxes, classes, crowd = defaultdict(list), defaultdict(list), defaultdict(list)
    for annotation in data["annotations"]:
        what = f"annotation id {annotation.get('id')}"
        image_id = _reference_int(annotation, "image_id", what, path)
        if image_id not in seen:
            raise ValueError(f"{path}: {what} refers to unknown image id {image_id}")
        cat_id = _reference_int(annotation, "category_id", what, path)
        if cat_id not in mapping:
            raise ValueError(f"{path}: {what} refers to unknown category id {cat_id}")
        boxes[image_id].append(_reference_bbox(annotation, path))
        classes[image_id].append(mapping[cat_id])
        crowd[image_id].append(bool(annotation.get("iscrowd", 0)))
    records = []
    for image_id, image in seen.items():
        file_name = Path(str(image["file_name"]))
        records.append(_reference_record(
            os.path.normpath(path.parent / file_name), int(image["width"]),
            int(image["height"]), boxes[image_id], classes[image_id], crowd[image_id],
            report, f"{path} (image id {image_id})", image_id))
    return records


# ------------------------------------------------------------ keras-yolo3's kmeans.py


def write_lines(path: Path, boxes: np.ndarray) -> None:
    """A keras-yolo3 lines file of ``(M, 4)`` int xyxy boxes, 8 a line, class 0."""
    rows = [" ".join(f"{x1},{y1},{x2},{y2},0" for x1, y1, x2, y2 in boxes[i:i + 8])
            for i in range(0, len(boxes), BOXES_PER_IMAGE)]
    path.write_text("".join(f"img{i}.jpg {row}\n" for i, row in enumerate(rows)))


class ReferenceYoloKmeans:
    """keras-yolo3's ``kmeans.py`` (its ``YOLO_Kmeans`` class), re-implemented step by step.

    ``txt2boxes`` reads the lines file with a Python loop a box into an int array of
    widths and heights; ``kmeans`` draws ``k`` boxes at random as clusters (an int array,
    so the median updates are truncated to integers, as there), assigns by ``1 - IoU``
    computed with ``(N, k)`` repeat/tile matrices, and updates each cluster to the median
    of its boxes until no box changes cluster; ``txt2clusters`` sorts the clusters by
    width, writes them (``w,h, w,h, ...``) and measures their mean IoU. Differences,
    both for the benchmark's sake: the initial draw is seeded (kmeans.py reseeds from
    the clock), and an emptied cluster keeps its center (kmeans.py would write the
    median of nothing, NaN cast to an integer).
    """

    def __init__(self, cluster_number: int, filename: Path, out: Path, seed: int = 0):
        self.cluster_number = cluster_number
        self.filename = filename
        self.out = out
        self.random = np.random.RandomState(seed)

    def iou(self, boxes: np.ndarray, clusters: np.ndarray) -> np.ndarray:
        """``(n, k)`` IoU of centered boxes, from repeated and tiled ``(n, k)`` matrices."""
        n, k = boxes.shape[0], self.cluster_number
        box_area = np.reshape((boxes[:, 0] * boxes[:, 1]).repeat(k), (n, k))
        cluster_area = np.reshape(np.tile(clusters[:, 0] * clusters[:, 1], [1, n]), (n, k))
        box_w_matrix = np.reshape(boxes[:, 0].repeat(k), (n, k))
        cluster_w_matrix = np.reshape(np.tile(clusters[:, 0], (1, n)), (n, k))
        min_w_matrix = np.minimum(cluster_w_matrix, box_w_matrix)
        box_h_matrix = np.reshape(boxes[:, 1].repeat(k), (n, k))
        cluster_h_matrix = np.reshape(np.tile(clusters[:, 1], (1, n)), (n, k))
        min_h_matrix = np.minimum(cluster_h_matrix, box_h_matrix)
        inter_area = np.multiply(min_w_matrix, min_h_matrix)
        return inter_area / (box_area + cluster_area - inter_area)

    def avg_iou(self, boxes: np.ndarray, clusters: np.ndarray) -> float:
        return float(np.mean([np.max(self.iou(boxes, clusters), axis=1)]))

    def kmeans(self, boxes: np.ndarray, k: int, dist=np.median) -> np.ndarray:
        box_number = boxes.shape[0]
        last_nearest = np.zeros((box_number,))
        clusters = boxes[self.random.choice(box_number, k, replace=False)]
        while True:
            distances = 1 - self.iou(boxes, clusters)
            current_nearest = np.argmin(distances, axis=1)
            if (last_nearest == current_nearest).all():
                break
            for cluster in range(k):
                members = boxes[current_nearest == cluster]
                if len(members):  # kmeans.py: NaN (the median of nothing) cast to int
                    clusters[cluster] = dist(members, axis=0)
            last_nearest = current_nearest
        return clusters

    def result2txt(self, data: np.ndarray) -> None:
        text = ", ".join(f"{int(w)},{int(h)}" for w, h in data)
        self.out.write_text(text)

    def txt2boxes(self) -> np.ndarray:
        data_set = []
        with open(self.filename) as handle:
            for line in handle:
                infos = line.split(" ")
                for i in range(1, len(infos)):
                    width = int(infos[i].split(",")[2]) - int(infos[i].split(",")[0])
                    height = int(infos[i].split(",")[3]) - int(infos[i].split(",")[1])
                    data_set.append([width, height])
        return np.array(data_set)

    def txt2clusters(self) -> tuple[np.ndarray, float]:
        all_boxes = self.txt2boxes()
        result = self.kmeans(all_boxes, k=self.cluster_number)
        result = result[np.lexsort(result.T[0, None])]
        self.result2txt(result)
        return result, self.avg_iou(all_boxes, result)


def reference_kmeans_py(path: Path, k: int = K, seed: int = 0,
                        out: Path | None = None) -> tuple[np.ndarray, float]:
    """keras-yolo3's ``kmeans.py`` run: anchors (sorted by width) and their mean IoU."""
    out = path.with_name("yolo_anchors.txt") if out is None else out
    return ReferenceYoloKmeans(k, path, out, seed).txt2clusters()


# ----------------------------------------------------------------------------- main


def _timed(fn, repeats: int):
    """``(last value, median wall s, median CPU s of this process)`` over ``repeats``."""
    walls, cpus, value = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return value, statistics.median(walls), statistics.median(cpus)


def _same_records(ours: list[ImageRecord], theirs: list[ImageRecord]) -> bool:
    return len(ours) == len(theirs) and all(
        a.image_id == b.image_id and a.image_path == b.image_path
        and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.classes, b.classes)
        for a, b in zip(ours, theirs))


def _run_detkit(json_path: Path, out: Path) -> None:
    from typer.testing import CliRunner

    from detkit.cli import app

    result = CliRunner().invoke(app, ["kmeans-anchors", str(json_path), "--k", str(K),
                                      "--out", str(out)])
    if result.exit_code != 0:
        raise RuntimeError(f"detkit kmeans-anchors failed: {result.output}")


def _run_detkit_process(json_path: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "detkit", "kmeans-anchors", str(json_path),
                    "--k", str(K), "--out", str(out)], check=True, capture_output=True)


def _run_kmeans_py_process(lines_path: Path, seed: int) -> None:
    code = ("import sys; from pathlib import Path; "
            "from benchmarks.bench_readers import reference_kmeans_py; "
            "reference_kmeans_py(Path(sys.argv[1]), seed=int(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(lines_path), str(seed)], check=True,
                   capture_output=True, cwd=Path(__file__).resolve().parent.parent)


def main(quick: bool = False) -> dict:
    """Run both comparisons; returns the figures (seconds, ratios, counts)."""
    images = QUICK_IMAGES if quick else IMAGES
    repeats = QUICK_REPEATS if quick else REPEATS
    data, valid = make_coco(images)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        json_path = folder / "gt.json"
        json_path.write_text(json.dumps(data))
        lines_path = folder / "train.txt"
        write_lines(lines_path, valid)
        ours_fixes, theirs_fixes = FixReport(), FixReport()
        ours, read_s, read_cpu = _timed(
            lambda: read_coco_json(json_path, fixes=FixReport()), repeats)
        theirs, ref_s, ref_cpu = _timed(
            lambda: reference_read_coco(json_path, FixReport()), repeats)
        read_coco_json(json_path, fixes=ours_fixes)
        reference_read_coco(json_path, theirs_fixes)
        same_records = _same_records(ours.records, theirs)
        # The commands run as in their own processes: without this process's json dict
        # and both readers' records alive (~250k objects that every full garbage
        # collection during the timed runs would walk, the commands' and kmeans.py's).
        n_boxes = len(data["annotations"])
        del data, ours, theirs
        gc.collect()
        _run_detkit(json_path, folder / "anchors.txt")  # warm-up: imports, first call
        _, command_s, command_cpu = _timed(
            lambda: _run_detkit(json_path, folder / "anchors.txt"), repeats)
        _, process_s, _ = _timed(
            lambda: _run_detkit_process(json_path, folder / "anchors2.txt"), repeats)
        runs = QUICK_KMEANS_PY_SEEDS if quick else KMEANS_PY_SEEDS
        seeds = iter(range(runs))  # one run each; k-means' iterations vary by seed
        _, kmeans_py_s, kmeans_py_cpu = _timed(
            lambda: reference_kmeans_py(lines_path, seed=next(seeds)), runs)
        seeds = iter(range(runs))
        _, kmeans_py_process_s, _ = _timed(
            lambda: _run_kmeans_py_process(lines_path, next(seeds)), runs)
    figures = {
        "images": images, "boxes": n_boxes, "valid_boxes": len(valid),
        "read_detkit_s": read_s, "read_reference_s": ref_s,
        "read_speedup": ref_s / read_s, "read_cpu_speedup": ref_cpu / read_cpu,
        "read_detkit_cpu_s": read_cpu, "read_reference_cpu_s": ref_cpu,
        "read_goal_ratio": READ_GOAL_RATIO, "read_goal_s": READ_GOAL_S,
        "read_goal_met": read_s <= READ_GOAL_S,
        "same_records": same_records,
        "same_fixes": ours_fixes == theirs_fixes,
        "fixes": ours_fixes.summary(),
        "command_detkit_s": command_s, "command_detkit_cpu_s": command_cpu,
        "command_detkit_process_s": process_s,
        "kmeans_py_s": kmeans_py_s, "kmeans_py_cpu_s": kmeans_py_cpu,
        "kmeans_py_process_s": kmeans_py_process_s,
        "command_speedup": kmeans_py_s / command_s,
        "command_cpu_speedup": kmeans_py_cpu / command_cpu,
        "command_process_speedup": kmeans_py_process_s / process_s,
        "command_goal_ratio": COMMAND_GOAL_RATIO,
        "command_goal_met": kmeans_py_s / command_s >= COMMAND_GOAL_RATIO,
    }
    print(f"COCO json, {images} images, {n_boxes} boxes ({figures['fixes']})")
    print(f"  read: detkit {read_s:.3f} s ({read_cpu:.3f} s CPU; goal <= {READ_GOAL_S} s), "
          f"previous per-box reader {ref_s:.3f} s: {figures['read_speedup']:.1f}x wall, "
          f"{figures['read_cpu_speedup']:.1f}x CPU (goal {READ_GOAL_RATIO:.2f}x); same "
          f"records {figures['same_records']}, same repairs {figures['same_fixes']}")
    print(f"  kmeans-anchors --k {K}: detkit {command_s:.3f} s in-process "
          f"({command_cpu:.3f} s CPU), keras-yolo3 kmeans.py {kmeans_py_s:.3f} s "
          f"({kmeans_py_cpu:.3f} s CPU) on the {len(valid)} valid boxes: "
          f"{figures['command_speedup']:.1f}x wall, {figures['command_cpu_speedup']:.1f}x "
          f"CPU (goal {COMMAND_GOAL_RATIO:.0f}x)")
    print(f"  as new processes: detkit {process_s:.3f} s, kmeans.py "
          f"{kmeans_py_process_s:.3f} s: {figures['command_process_speedup']:.1f}x")
    return figures


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
