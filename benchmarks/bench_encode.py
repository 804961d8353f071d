"""YOLOv3 target encoding: detkit.encode.encode_yolov3 vs keras-yolo3's preprocess_true_boxes.

Workload (the issue's): a batch of 32 images x 20 boxes at input 416, 80 classes, the
COCO anchors. The reference is a re-implementation, written here, of the algorithm of
keras-yolo3's ``preprocess_true_boxes``: centres and sizes normalized, centred IoU of each
box with all anchors, argmax, then for every box a loop over the output layers that writes
a dense ``(B, g, g, 3, 5 + num_classes)`` one-hot target. Both run in the same process.

Run: ``python -m benchmarks.bench_encode [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from detkit.anchors import anchor_masks, default_anchors_path, load_anchors
from detkit.encode import encode_yolov3

BATCH, BOXES, INPUT_SIZE, NUM_CLASSES = 32, 20, 416, 80
#: The speed-up the issue asks for.
TARGET_RATIO = 10.0


def reference_preprocess_true_boxes(true_boxes: np.ndarray, input_shape: tuple[int, int],
                                    anchors: np.ndarray, num_classes: int) -> list:
    """keras-yolo3's algorithm: ``true_boxes`` ``(B, M, 5)`` xyxy+class input pixels
    (all-zero rows are padding) -> per layer ``(B, g, g, 3, 5 + num_classes)``."""
    num_layers = len(anchors) // 3
    masks = anchor_masks(len(anchors))
    true_boxes = np.array(true_boxes, dtype="float32")
    input_shape = np.array(input_shape, dtype="int32")
    boxes_xy = (true_boxes[..., 0:2] + true_boxes[..., 2:4]) // 2
    boxes_wh = true_boxes[..., 2:4] - true_boxes[..., 0:2]
    true_boxes[..., 0:2] = boxes_xy / input_shape[::-1]
    true_boxes[..., 2:4] = boxes_wh / input_shape[::-1]
    batch = true_boxes.shape[0]
    grid_shapes = [input_shape // {0: 32, 1: 16, 2: 8}[level] for level in range(num_layers)]
    y_true = [np.zeros((batch, grid_shapes[level][0], grid_shapes[level][1],
                        len(masks[level]), 5 + num_classes), dtype="float32")
              for level in range(num_layers)]
    anchors = np.expand_dims(anchors, 0)
    anchor_maxes = anchors / 2.0
    anchor_mins = -anchor_maxes
    valid_mask = boxes_wh[..., 0] > 0
    for b in range(batch):
        wh = boxes_wh[b, valid_mask[b]]
        if len(wh) == 0:
            continue
        wh = np.expand_dims(wh, -2)
        box_maxes = wh / 2.0
        box_mins = -box_maxes
        intersect_wh = np.maximum(np.minimum(box_maxes, anchor_maxes) -
                                  np.maximum(box_mins, anchor_mins), 0.0)
        intersect_area = intersect_wh[..., 0] * intersect_wh[..., 1]
        box_area = wh[..., 0] * wh[..., 1]
        anchor_area = anchors[..., 0] * anchors[..., 1]
        iou = intersect_area / (box_area + anchor_area - intersect_area)
        best_anchor = np.argmax(iou, axis=-1)
        for t, n in enumerate(best_anchor):
            for level in range(num_layers):
                if n in masks[level]:
                    i = np.floor(true_boxes[b, t, 0] * grid_shapes[level][1]).astype("int32")
                    j = np.floor(true_boxes[b, t, 1] * grid_shapes[level][0]).astype("int32")
                    k = masks[level].index(n)
                    c = true_boxes[b, t, 4].astype("int32")
                    y_true[level][b, j, i, k, 0:4] = true_boxes[b, t, 0:4]
                    y_true[level][b, j, i, k, 4] = 1
                    y_true[level][b, j, i, k, 5 + c] = 1
    return y_true


def make_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(B, M, 4)`` boxes strictly inside the input and ``(B, M)`` classes."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, INPUT_SIZE - 40, (BATCH, BOXES, 2))
    wh = rng.uniform(4, 300, (BATCH, BOXES, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, INPUT_SIZE - 1)], -1)
    boxes = np.floor(boxes).astype(np.float32)
    classes = rng.integers(0, NUM_CLASSES, (BATCH, BOXES)).astype(np.int32)
    return boxes, classes


def _best_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main(quick: bool = False) -> dict:
    """Time both encoders on the same batch; return the figures."""
    anchors = load_anchors(default_anchors_path("yolov3"))
    boxes, classes = make_batch()
    true_boxes = np.concatenate([boxes, classes[..., None].astype(np.float32)], -1)
    repeats_ref, repeats_fast = (3, 20) if quick else (15, 200)

    # Sanity: same filled slots on this batch (slot collisions aside).
    fast = encode_yolov3(boxes, classes, anchors, INPUT_SIZE)
    ref = reference_preprocess_true_boxes(true_boxes, (INPUT_SIZE, INPUT_SIZE), anchors,
                                          NUM_CLASSES)
    slots_fast = sum(int(t[..., 4].sum()) for t in fast)
    slots_ref = sum(int(t[..., 4].sum()) for t in ref)

    ref_ms = _best_ms(lambda: reference_preprocess_true_boxes(
        true_boxes, (INPUT_SIZE, INPUT_SIZE), anchors, NUM_CLASSES), repeats_ref)
    fast_ms = _best_ms(lambda: encode_yolov3(boxes, classes, anchors, INPUT_SIZE),
                       repeats_fast)
    total_boxes = BATCH * BOXES
    result = {
        "workload": f"{BATCH} images x {BOXES} boxes, input {INPUT_SIZE}, "
                    f"{NUM_CLASSES} classes",
        "reference_ms": round(ref_ms, 3),
        "detkit_ms": round(fast_ms, 3),
        "speedup": round(ref_ms / fast_ms, 1),
        "target_speedup": TARGET_RATIO,
        "met": bool(ref_ms / fast_ms >= TARGET_RATIO),
        "reference_us_per_box": round(ref_ms * 1000 / total_boxes, 2),
        "detkit_us_per_box": round(fast_ms * 1000 / total_boxes, 2),
        "slots_detkit": slots_fast,
        "slots_reference": slots_ref,
        "collisions_detkit": fast.stats.collisions,
    }
    print(f"encode_yolov3: {fast_ms:.2f} ms ({result['detkit_us_per_box']} us/box)  "
          f"keras-yolo3 preprocess_true_boxes: {ref_ms:.2f} ms "
          f"({result['reference_us_per_box']} us/box)  speed-up x{result['speedup']} "
          f"(target x{TARGET_RATIO:g}: {'met' if result['met'] else 'NOT met'})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(quick=parser.parse_args().quick)
