"""pycocotools figures of a Keras detector on a COCO ground truth: the benchmarks' one
evaluation (the reference they measure detkit's training with).

Images are letterboxed to the input side, decoded by the family's decoder
(:meth:`detkit.families.Family.decode`), filtered by predict's postprocessing
(:func:`detkit.postprocess.select_detections`: conf 0.001 and the family's NMS,
:meth:`detkit.families.Family.nms`) and mapped back to image pixels; COCOeval then
scores them, class-agnostic with the family's detection limits for the RPN.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

#: predict's score threshold (keep the whole PR curve).
CONF = 0.001


def coco_results(model, family, val_json: Path, anchors, input_size: int,
                 batch_size: int = 16) -> list[dict]:
    """``model``'s detections on the images of ``val_json`` as COCO results (image pixels)."""
    import numpy as np
    from keras import ops

    from detkit.data.augment import letterbox_image
    from detkit.data.dataset import load_dataset
    from detkit.data.images import read_image
    from detkit.postprocess import select_detections, to_image_coords

    dataset = load_dataset(val_json)
    category_ids = dataset.category_ids or list(range(1, len(dataset.class_names) + 1))
    iou, max_det = family.nms(None, None)
    results = []
    for start in range(0, len(dataset.records), batch_size):
        chunk = dataset.records[start:start + batch_size]
        images, sizes = [], []
        for record in chunk:
            image = read_image(record.image_path)
            sizes.append((image.shape[1], image.shape[0]))
            images.append(letterbox_image(image, input_size))
        outputs = model(np.stack(images).astype(np.float32) / 255.0, training=False)
        boxes, scores = family.decode(outputs, anchors, input_size)
        found = select_detections(boxes, scores, conf=CONF, iou=iou, max_det=max_det,
                                  max_candidates=max(1000, max_det))
        boxes, scores, classes, valid = (ops.convert_to_numpy(t) for t in found)
        for i, record in enumerate(chunk):
            n = int(valid[i])
            image_boxes = to_image_coords(boxes[i, :n], sizes[i][0], sizes[i][1], input_size)
            for box, score, cls in zip(image_boxes, scores[i, :n], classes[i, :n]):
                x1, y1, x2, y2 = (float(v) for v in box)
                results.append({"image_id": int(record.image_id),
                                "category_id": int(category_ids[int(cls)]),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def coco_figures(model, family, val_json: Path, anchors, input_size: int,
                 batch_size: int = 16) -> dict[str, float]:
    """pycocotools' figures of ``model``: ``map50`` and ``map``; for a class-agnostic family
    (the RPN) also ``ar100``, ``ar1000`` and ``recall50_at100`` (recall at IoU 0.5 with
    100 proposals). All 0 when nothing is detected."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    agnostic = family.class_agnostic
    results = coco_results(model, family, val_json, anchors, input_size, batch_size)
    if not results:
        zero = ("map50", "map") + (("ar100", "ar1000", "recall50_at100") if agnostic else ())
        return dict.fromkeys(zero, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val_json))
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        if agnostic:
            evaluator.params.useCats = 0
            evaluator.params.maxDets = list(family.max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    figures = {"map50": float(evaluator.stats[1]), "map": float(evaluator.stats[0])}
    if agnostic:
        figures["ar100"] = float(evaluator.stats[7])
        figures["ar1000"] = float(evaluator.stats[8])
        figures["recall50_at100"] = float(evaluator.eval["recall"][0, 0, 0, 1])  # (T,K,A,M)
    return figures
