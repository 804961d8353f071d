"""Nothing between a model and its mAP loses boxes: perfect outputs score 1.0.

For every family, the outputs that a perfect model would give (built from the family's
own training targets of the ground truth) go through what ``predict`` and ``eval-map
--model`` do after the model: the family's decoder, NMS, the letterbox undone to the
pixels of non-square images, COCO results. pycocotools must then find AP@[.5:.95] and
AR@100 of 1.0 (class-agnostic for the rpn): an encoder and decoder that disagree, a
letterbox off by a pixel or an NMS that drops a true box would show at the high IoUs.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.assign.layout import grid_sizes
from detkit.data.letterbox import Letterbox
from detkit.families import FAMILIES, get_family
from detkit.postprocess import select_detections
from detkit.predict import detections_to_results

INPUT_SIZE = 128
#: Logits of a certain yes and no.
SURE = 12.0
CLASSES = 3
#: Non-square images (width, height) and their boxes (x, y, w, h in image pixels, class):
#: sizes from a few input pixels to half the input, apart enough for NMS at 0.45.
IMAGES = {
    1: ((320, 240), [(10, 12, 30, 20, 0), (150, 40, 120, 150, 1), (60, 150, 18, 40, 2)]),
    2: ((200, 300), [(5, 5, 190, 140, 2), (20, 180, 40, 40, 0), (120, 200, 60, 90, 1)]),
    3: ((257, 255), [(100, 100, 9, 12, 1), (200, 20, 40, 25, 0)]),
}


def ground_truth() -> dict:
    """The COCO ground truth of :data:`IMAGES`."""
    images, annotations = [], []
    for image_id, ((width, height), boxes) in IMAGES.items():
        images.append({"id": image_id, "width": width, "height": height,
                       "file_name": f"{image_id}.jpg"})
        for x, y, w, h, cls in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cls + 1, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(CLASSES)]}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _class_logits(classes: np.ndarray, present: np.ndarray, count: int) -> np.ndarray:
    """``(..., count)``: ``SURE`` for the class of a present slot, ``-SURE`` elsewhere."""
    onehot = np.eye(count)[np.clip(classes, 0, count - 1).astype(int)] * present[..., None]
    return np.where(onehot > 0, SURE, -SURE)


def yolov3_outputs(y_true: dict, anchors: np.ndarray) -> list[np.ndarray]:
    """Raw outputs ``(B, H, W, 3, 5 + C)`` that decode exactly to the compact targets."""
    from detkit.anchors import anchor_masks
    outputs = []
    for target, mask in zip(y_true["targets"], anchor_masks(len(anchors))):
        grid = target.shape[1]
        present = target[..., 4] > 0.5
        cell = np.stack(np.meshgrid(np.arange(grid), np.arange(grid)), axis=-1)[:, :, None]
        raw_xy = _logit(target[..., 0:2] * grid - cell)
        ratio = np.where(present[..., None], target[..., 2:4] * INPUT_SIZE / anchors[mask], 1)
        obj = np.where(present, SURE, -SURE)[..., None]
        outputs.append(np.concatenate(
            [raw_xy, np.log(ratio), obj, _class_logits(target[..., 5], present, CLASSES)],
            axis=-1).astype(np.float32))
    return outputs


def yolov2_outputs(y_true: dict, anchors: np.ndarray) -> list[np.ndarray]:
    """Raw output ``(B, G, G, K, 5 + C)``: sigmoid x/y, log w/h, one softmax of classes."""
    present = y_true["mask"][..., 0] > 0.5
    target = y_true["targets"]
    obj = np.where(present, SURE, -SURE)[..., None]
    return [np.concatenate([_logit(target[..., 0:2]), target[..., 2:4], obj,
                            _class_logits(target[..., 4], present, CLASSES)],
                           axis=-1).astype(np.float32)]


def anchor_head_outputs(y_true: dict, family) -> list[np.ndarray]:
    """Per-level ``(B, H, W, A, 4 + C)``: the matched deltas, a sure logit at positives."""
    if "objectness" in y_true:      # the rpn: one class-agnostic logit
        logits = np.where(y_true["objectness"] > 0.5, SURE, -SURE)[..., None]
    else:
        labels = y_true["labels"]
        logits = _class_logits(labels, labels >= 0, CLASSES)
    flat = np.concatenate([y_true["deltas"], logits], axis=-1).astype(np.float32)
    outputs, start = [], 0
    for height, width in grid_sizes(family.strides, INPUT_SIZE):
        count = height * width * family.anchors_per_scale
        outputs.append(flat[:, start:start + count].reshape(
            len(flat), height, width, family.anchors_per_scale, -1))
        start += count
    return outputs


def perfect_outputs(family, y_true: dict, anchors: np.ndarray) -> list[np.ndarray]:
    if family.name.startswith("yolov3"):
        return yolov3_outputs(y_true, anchors)
    if family.name.startswith("yolov2"):
        return yolov2_outputs(y_true, anchors)
    return anchor_head_outputs(y_true, family)


def test_every_family_is_covered():
    assert set(FAMILIES) == {"yolov3", "yolov3-tiny", "yolov2", "yolov2-tiny", "retinanet",
                             "rpn"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_perfect_outputs_score_one_through_decode_nms_and_letterbox(name):
    family = get_family(name)
    anchors, _ = family.resolve_anchors(None)
    # the rpn samples 256 anchors an image: keep every one so that no positive is left out
    extra = {"sample_anchors": 100_000} if name == "rpn" else {}
    assigner = family.make_assigner(anchors, INPUT_SIZE, CLASSES, **extra)
    iou, max_det = family.nms(None, None)
    gt = ground_truth()
    results = []
    for image_id, ((width, height), boxes) in IMAGES.items():
        letterbox = Letterbox(width, height, INPUT_SIZE)
        xyxy = np.array([(x, y, x + w, y + h) for x, y, w, h, _ in boxes], np.float32)
        classes = np.array([[cls for *_, cls in boxes]])
        y_true = assigner(letterbox.to_input(xyxy)[None], classes)
        outputs = perfect_outputs(family, y_true, anchors)
        found = select_detections(*family.decode(outputs, anchors, INPUT_SIZE), conf=0.5,
                                  iou=iou, max_det=max_det, agnostic=family.class_agnostic)
        n = int(found.valid[0])
        assert n == len(boxes), f"image {image_id}: {n} detections of {len(boxes)} boxes"
        results += detections_to_results(
            image_id, letterbox.to_image(np.asarray(found.boxes[0, :n])),
            np.asarray(found.scores[0, :n]), np.asarray(found.classes[0, :n]),
            [1] * CLASSES if family.class_agnostic else list(range(1, CLASSES + 1)))
    stats = _pycocotools_stats(gt, results, agnostic=family.class_agnostic)
    assert stats["AP"] > 0.995 and stats["AR@100"] > 0.995, stats


def _pycocotools_stats(gt: dict, results: list[dict], agnostic: bool) -> dict:
    if agnostic:  # one category: a class-agnostic evaluation
        gt = dict(gt, categories=[{"id": 1, "name": "object"}],
                  annotations=[dict(a, category_id=1) for a in gt["annotations"]])
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"AP": evaluator.stats[0], "AR@100": evaluator.stats[8]}
