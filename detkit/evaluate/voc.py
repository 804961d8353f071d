"""PASCAL VOC detection mAP as the official devkit (``VOCevaldet.m``) computes it.

Per class, detections in descending score order (stable) take their best-overlapping
ground-truth box of the same image (first one on ties, taken or not, difficult or not;
boxes are inclusive pixel ranges, the devkit's +1 convention). At ``overlap >= iou`` a
detection is a true positive if that box is not difficult and not yet taken, ignored if
it is difficult, a false positive otherwise. AP is the 11-point interpolated average
(VOC2007, recall points ``np.arange(0, 1.1, 0.1)``) or the area under the precision
envelope (VOC2010+, ``voc12``). Crowd regions count as difficult.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from detkit.errors import UsageError
from detkit.evaluate.curves import ScoredMatches
from detkit.evaluate.groups import pairs_in_groups, run_starts
from detkit.evaluate.inputs import Detections, GroundTruth
from detkit.evaluate.iou import voc_pair_iou

#: Metric names and whether they use the 11-point (VOC2007) AP.
METRICS = {"voc07": True, "voc12": False}
#: The 11 recall points of VOC2007 AP, as the Python port of the devkit builds them.
RECALL_POINTS_07 = np.arange(0.0, 1.1, 0.1)
#: AP of a class without ground truth that counts (left out of the mean).
ABSENT = -1.0


@dataclasses.dataclass
class VocResult:
    """What :func:`evaluate_voc` returns.

    Attributes:
        metric: ``"voc07"`` or ``"voc12"``.
        iou: the overlap threshold.
        ap: ``(K,)`` AP per class (``-1`` for a class without non-difficult boxes).
        mAP: mean of the defined APs (``-1`` if none).
        class_names: ``K`` names.
        num_gt: ``(K,)`` non-difficult ground-truth boxes per class.
        matches: per-class scored TP/FP (ignored detections left out).
        num_images, num_gt_boxes, num_detections: input sizes.
    """

    metric: str
    iou: float
    ap: np.ndarray
    mAP: float
    class_names: list[str]
    num_gt: np.ndarray
    matches: ScoredMatches
    num_images: int
    num_gt_boxes: int
    num_detections: int


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from cumulative ``recall`` / ``precision`` ``(N,)`` (detections by score).

    11-point: mean over the recall points of the best precision at recall >= point (0 if
    none). Otherwise: area under the non-increasing envelope of precision, summed where
    recall changes.
    """
    if use_07_metric:
        total = 0.0
        for point in RECALL_POINTS_07:
            reached = precision[recall >= point]
            total += (reached.max() if reached.size else 0.0) / len(RECALL_POINTS_07)
        return float(total)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``[x, y, w, h]`` -> ``(N, 4)`` corners ``[x1, y1, x1 + w, y1 + h]``."""
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _best_overlaps(gt: GroundTruth, dets: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Every detection's best overlap ``(D,)`` (``-inf`` if none) and that gt's index."""
    num_k = gt.num_classes
    g_order = np.lexsort((np.arange(len(gt)), gt.image * num_k + gt.category))
    d_order = np.argsort(dets.image * num_k + dets.category, kind="stable")
    g_key = (gt.image * num_k + gt.category)[g_order]
    d_key = (dets.image * num_k + dets.category)[d_order]
    pair_d, pair_g = pairs_in_groups(d_key, g_key)
    best_ov = np.full(len(dets), -np.inf)
    best_gt = np.full(len(dets), -1, np.int64)
    if len(pair_d) == 0:
        return best_ov, best_gt
    det_idx, gt_idx = d_order[pair_d], g_order[pair_g]
    ov = voc_pair_iou(xyxy(dets.boxes[det_idx]), xyxy(gt.boxes[gt_idx]))
    order = np.lexsort((gt_idx, -ov, det_idx))        # best overlap first, then file order
    first = order[run_starts(det_idx[order])]
    best_ov[det_idx[first]] = ov[first]
    best_gt[det_idx[first]] = gt_idx[first]
    return best_ov, best_gt


def evaluate_voc(gt: GroundTruth, dets: Detections, metric: str = "voc07",
                 iou: float = 0.5) -> VocResult:
    """VOC mAP of ``dets`` against ``gt``.

    Args:
        gt: ground truth (``difficult`` and ``iscrowd`` boxes are neither TP nor FP).
        dets: detections indexing ``gt``'s images and categories.
        metric: ``"voc07"`` (11-point) or ``"voc12"`` (all points).
        iou: overlap threshold (``>=``, as the devkit).

    Returns:
        :class:`VocResult`.
    """
    if metric not in METRICS:
        raise UsageError(f"unknown VOC metric {metric!r}; expected one of {', '.join(METRICS)}")
    if not 0 < iou <= 1:
        raise UsageError(f"--iou must be in (0, 1], got {iou}")
    num_k = gt.num_classes
    ignored_gt = gt.difficult | gt.iscrowd
    num_gt = np.bincount(gt.category[~ignored_gt], minlength=num_k)
    best_ov, best_gt = _best_overlaps(gt, dets)

    order = np.lexsort((np.arange(len(dets)), -dets.scores, dets.category))
    hit = best_ov[order] >= iou
    target = best_gt[order]
    on_difficult = hit & ignored_gt[np.where(hit, target, 0)]
    claims = np.flatnonzero(hit & ~on_difficult)
    _, first_claim = np.unique(target[claims], return_index=True)
    tp = np.zeros(len(order), bool)
    tp[claims[first_claim]] = True
    kept = ~on_difficult
    category, scores, tp = dets.category[order][kept], dets.scores[order][kept], tp[kept]

    ap = np.full(num_k, ABSENT)
    bounds = np.searchsorted(category, np.arange(num_k + 1))
    for k in range(num_k):
        if num_gt[k] == 0:
            continue
        tp_k = tp[bounds[k]:bounds[k + 1]]
        tp_cum = np.cumsum(tp_k)
        fp_cum = np.cumsum(~tp_k)
        recall = tp_cum / num_gt[k]
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        ap[k] = voc_ap(recall, precision, METRICS[metric])
    defined = ap[ap > ABSENT]
    return VocResult(metric=metric, iou=float(iou), ap=ap,
                     mAP=float(defined.mean()) if defined.size else ABSENT,
                     class_names=list(gt.class_names), num_gt=num_gt,
                     matches=ScoredMatches(category, scores, tp, num_gt, float(iou)),
                     num_images=gt.num_images, num_gt_boxes=len(gt),
                     num_detections=len(dets))
