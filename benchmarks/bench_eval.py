"""COCO bbox evaluation: detkit vs pycocotools vs faster-coco-eval on a COCO-sized workload.

The workload is generated: 5,000 images, 80 categories, ~40k ground-truth boxes (1 %
crowd regions, ``area`` below the box area as for segmented objects) and 500k detections
(jittered copies of ground-truth boxes, some with the wrong class, plus background boxes;
scores rounded to 3 decimals so many tie). Each tool builds its index from the same
parsed json ("load") and then evaluates, accumulates and summarizes ("eval"); the stats
and precision arrays must agree (stats within 1e-6). Peak memory of detkit's eval is measured with
tracemalloc in a separate pass (so it does not slow the timed one).

Run: ``python -m benchmarks.bench_eval [--quick]``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import time
import tracemalloc

import numpy as np

#: Full and quick workload sizes.
FULL = {"images": 5000, "classes": 80, "boxes": 40_000, "detections": 500_000}
QUICK = {"images": 150, "classes": 20, "boxes": 1_200, "detections": 15_000}
#: Image size of the generated workload (pixels).
IMAGE_W, IMAGE_H = 640, 480
#: Largest allowed difference of a stat from pycocotools'.
STAT_TOLERANCE = 1e-6


def make_workload(images: int, classes: int, boxes: int, detections: int,
                  seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dict and a results list of the given sizes."""
    rng = np.random.default_rng(seed)
    image_of = np.sort(rng.integers(0, images, boxes))
    wh = np.clip(np.exp(rng.normal(3.6, 1.0, (boxes, 2))), 2, 400)
    xy = rng.uniform(0, 1, (boxes, 2)) * (np.array([IMAGE_W, IMAGE_H]) - wh).clip(1)
    gt_box = np.round(np.concatenate([xy, wh], axis=1), 2)
    gt_cat = rng.integers(0, classes, boxes)
    crowd = rng.random(boxes) < 0.01
    area = gt_box[:, 2] * gt_box[:, 3] * rng.uniform(0.5, 1.0, boxes)
    cat_ids = np.arange(1, classes + 1) * 2 - 1 + (np.arange(classes) > 10)  # sparse ids
    gt = {
        "images": [{"id": i + 1, "width": IMAGE_W, "height": IMAGE_H,
                    "file_name": f"{i:06d}.jpg"} for i in range(images)],
        "categories": [{"id": int(c), "name": f"class{k}"} for k, c in enumerate(cat_ids)],
        "annotations": [{"id": i + 1, "image_id": int(image_of[i]) + 1,
                         "category_id": int(cat_ids[gt_cat[i]]),
                         "bbox": gt_box[i].tolist(), "area": float(area[i]),
                         "iscrowd": int(crowd[i])} for i in range(boxes)],
    }
    near = rng.random(detections) < 0.6
    source = rng.integers(0, boxes, detections)
    jitter = rng.normal(0, 0.12, (detections, 4)) * np.tile(gt_box[source, 2:], 2)
    det_box = np.where(near[:, None], gt_box[source] + jitter, 0)
    det_box[:, 2:] = np.maximum(det_box[:, 2:], 1)
    rand_wh = np.clip(np.exp(rng.normal(3.6, 1.0, (detections, 2))), 2, 400)
    rand_xy = rng.uniform(0, 1, (detections, 2)) * np.array([IMAGE_W, IMAGE_H])
    det_box = np.where(near[:, None], det_box, np.concatenate([rand_xy, rand_wh], axis=1))
    det_box = np.round(det_box, 2)
    det_image = np.where(near, image_of[source], rng.integers(0, images, detections))
    det_cat = np.where(near & (rng.random(detections) < 0.85), gt_cat[source],
                       rng.integers(0, classes, detections))
    score = np.round(np.where(near, rng.beta(4, 2, detections), rng.beta(1, 4, detections)), 3)
    dets = [{"image_id": int(det_image[i]) + 1, "category_id": int(cat_ids[det_cat[i]]),
             "bbox": det_box[i].tolist(), "score": float(score[i])} for i in range(detections)]
    return gt, dets


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def run_pycocotools(gt: dict, dets: list[dict], module: str) -> dict:
    """Load + evaluate/accumulate/summarize with pycocotools or faster_coco_eval."""
    if module == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    gt, dets = copy.deepcopy(gt), copy.deepcopy(dets)   # both tools edit their inputs
    with _quiet():
        start = time.perf_counter()
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        loaded = time.perf_counter()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        done = time.perf_counter()
    return {"load_s": loaded - start, "eval_s": done - loaded,
            "stats": np.asarray(evaluator.stats, dtype=np.float64),
            "precision": np.asarray(evaluator.eval["precision"])}


def run_detkit(gt: dict, dets: list[dict]) -> dict:
    """Load (dicts -> arrays) + evaluate with detkit."""
    from detkit.evaluate import detections_from_list, evaluate_coco, ground_truth_from_coco

    start = time.perf_counter()
    ground_truth = ground_truth_from_coco(gt)
    detections = detections_from_list(dets, ground_truth)
    loaded = time.perf_counter()
    result = evaluate_coco(ground_truth, detections)
    done = time.perf_counter()
    tracemalloc.start()
    evaluate_coco(ground_truth, detections)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"load_s": loaded - start, "eval_s": done - loaded, "stats": result.stats,
            "precision": result.precision, "peak_mb": peak / 2 ** 20}


def main(quick: bool = False) -> dict:
    """Run the benchmark; return times (s), speed-ups and detkit's peak memory (MiB)."""
    sizes = QUICK if quick else FULL
    gt, dets = make_workload(**sizes)
    print(f"workload: {sizes['images']} images, {sizes['classes']} classes, "
          f"{len(gt['annotations'])} gt boxes, {len(dets)} detections", flush=True)
    ours = run_detkit(gt, dets)
    print(f"detkit           load {ours['load_s']:7.2f} s   eval {ours['eval_s']:7.2f} s   "
          f"peak {ours['peak_mb']:.0f} MiB", flush=True)
    figures = {"workload": {**sizes, "gt_boxes": len(gt["annotations"])},
               "detkit_load_s": ours["load_s"], "detkit_eval_s": ours["eval_s"],
               "detkit_peak_mb": ours["peak_mb"]}
    for module, key in (("faster_coco_eval", "fce"), ("pycocotools", "pycocotools")):
        ref = run_pycocotools(gt, dets, module)
        diff = float(np.max(np.abs(ref["stats"] - ours["stats"])))
        precision_diff = (float(np.max(np.abs(ref["precision"] - ours["precision"])))
                          if ref["precision"].shape == ours["precision"].shape else float("inf"))
        print(f"{module:16s} load {ref['load_s']:7.2f} s   eval {ref['eval_s']:7.2f} s   "
              f"speed-up {ref['eval_s'] / ours['eval_s']:6.1f}x   max stat diff {diff:.1e}   "
              f"max precision diff {precision_diff:.1e}", flush=True)
        figures.update({f"{key}_load_s": ref["load_s"], f"{key}_eval_s": ref["eval_s"],
                        f"speedup_vs_{key}": ref["eval_s"] / ours["eval_s"],
                        f"max_stat_diff_vs_{key}": diff,
                        f"max_precision_diff_vs_{key}": precision_diff})
        if diff > STAT_TOLERANCE:
            raise AssertionError(f"detkit stats differ from {module}'s by {diff}")
    figures["stats"] = ours["stats"].tolist()
    return figures


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
