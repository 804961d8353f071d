"""report.json content and the per-class table rows of ``eval-map``.

COCO: ``stats`` (the 12 numbers in pycocotools' order), the same under their names
(``AP`` ... ``ARl``), ``per_class``. VOC: ``mAP`` and ``per_class``. Both add the
F1-optimal confidence overall (``f1_optimal``) and per class, with the TP / FP counts there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detkit.evaluate.coco import CocoResult
from detkit.evaluate.curves import OperatingPoint, ScoredMatches, best_f1
from detkit.evaluate.voc import VocResult

#: Report layout version (bump when keys change meaning).
REPORT_VERSION = 1


def class_operating_points(matches: ScoredMatches) -> list[OperatingPoint]:
    """The F1-optimal operating point of every class."""
    points = []
    for k in range(len(matches.num_gt)):
        scores, tp = matches.of_class(k)
        points.append(best_f1(scores, tp, int(matches.num_gt[k])))
    return points


def overall_operating_point(matches: ScoredMatches) -> OperatingPoint:
    """The F1-optimal confidence with all classes pooled (micro-averaged counts)."""
    scores, tp, num_gt = matches.pooled()
    return best_f1(scores, tp, num_gt)


def _class_entry(point: OperatingPoint, num_dets: int) -> dict[str, Any]:
    return {"gt": point.num_gt, "detections": num_dets, "tp": point.tp, "fp": point.fp,
            "fn": point.num_gt - point.tp, "precision": point.precision,
            "recall": point.recall, "f1": point.f1, "confidence": point.confidence}


def _detections_per_class(matches: ScoredMatches) -> np.ndarray:
    return np.bincount(matches.category, minlength=len(matches.num_gt))


def coco_report(result: CocoResult, **inputs: Any) -> dict[str, Any]:
    """The report.json mapping of a COCO evaluation; ``inputs`` are recorded as given."""
    aps = result.class_ap()
    points = class_operating_points(result.matches)
    dets = _detections_per_class(result.matches)
    per_class = {}
    for k, name in enumerate(result.class_names):
        entry = {"AP": float(aps[k, 0]), "AP50": float(aps[k, 1]), "AP75": float(aps[k, 2])}
        entry.update(_class_entry(points[k], int(dets[k])))
        per_class[name] = entry
    return {
        "report_version": REPORT_VERSION, "metric": "coco",
        "stats": [float(v) for v in result.stats], **result.stats_dict,
        "per_class": per_class,
        "f1_optimal": overall_operating_point(result.matches).as_dict(),
        "counts_iou": result.matches.iou,
        "params": result.params.as_dict(),
        "num_images": result.num_images, "num_gt_boxes": result.num_gt_boxes,
        "num_detections": result.num_detections, "inputs": dict(inputs),
    }


def voc_report(result: VocResult, **inputs: Any) -> dict[str, Any]:
    """The report.json mapping of a VOC evaluation; ``inputs`` are recorded as given."""
    points = class_operating_points(result.matches)
    dets = _detections_per_class(result.matches)
    per_class = {}
    for k, name in enumerate(result.class_names):
        entry = {"AP": float(result.ap[k])}
        entry.update(_class_entry(points[k], int(dets[k])))
        per_class[name] = entry
    return {
        "report_version": REPORT_VERSION, "metric": result.metric, "mAP": result.mAP,
        "iou": result.iou, "per_class": per_class,
        "f1_optimal": overall_operating_point(result.matches).as_dict(),
        "counts_iou": result.iou,
        "num_images": result.num_images, "num_gt_boxes": result.num_gt_boxes,
        "num_detections": result.num_detections, "inputs": dict(inputs),
    }


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class for the CLI table: name, AP columns, GT, TP, FP, confidence."""
    ap_keys = ["AP", "AP50", "AP75"] if report["metric"] == "coco" else ["AP"]
    rows = []
    for name, entry in report["per_class"].items():
        row = {"class": name}
        row.update({key: entry[key] for key in ap_keys})
        row.update({key: entry[key] for key in ("gt", "tp", "fp", "f1", "confidence")})
        rows.append(row)
    return rows
