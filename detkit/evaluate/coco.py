"""COCO bbox evaluation that reproduces pycocotools' ``COCOeval`` exactly, on arrays.

Same IoU thresholds, 101 recall points, area ranges (ground truth by its ``area`` field,
detections by box area), ``maxDets`` per image and category, crowd regions, stable score
sort, precision envelope, ``-1`` for categories without ground truth and the 12 summary
stats. The work is grouped and vectorized (see :mod:`detkit.evaluate.coco_match` and
:mod:`detkit.evaluate.coco_accumulate`).
"""

from __future__ import annotations

import dataclasses
import numpy as np

from detkit.errors import UsageError
from detkit.evaluate.coco_accumulate import accumulate
from detkit.evaluate.coco_match import match_groups
from detkit.evaluate.curves import ScoredMatches
from detkit.evaluate.groups import rank_in_runs, stable_argsort
from detkit.evaluate.inputs import Detections, GroundTruth
from detkit.evaluate.summary import (MAX_DETS, mean_present, stat_names, summarize,
                                     threshold_index)

#: pycocotools' IoU thresholds 0.5:0.05:0.95, built the same way (bit-identical).
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
#: pycocotools' 101 recall points 0:0.01:1.
RECALL_POINTS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
#: Area ranges all / small / medium / large in pixels, ``[lo, hi]`` inclusive.
AREA_RANGES = np.array([[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2],
                        [96 ** 2, 1e5 ** 2]], dtype=np.float64)
#: Name of the single class of a class-agnostic evaluation.
AGNOSTIC_NAME = "all"
#: IoU threshold of the per-class TP/FP counts and curves.
CURVE_IOU = 0.5


@dataclasses.dataclass(frozen=True)
class CocoParams:
    """Settings of a COCO evaluation (defaults: pycocotools' bbox defaults).

    Attributes:
        iou_thresholds: ascending IoU thresholds in ``(0, 1]``.
        max_dets: three increasing detection limits per image and category
            (AR1 / AR10 / AR100 use them in order; AP uses the last).
        class_agnostic: pool all categories (pycocotools' ``useCats = 0``).
    """

    iou_thresholds: tuple[float, ...] = tuple(IOU_THRESHOLDS.tolist())
    max_dets: tuple[int, ...] = MAX_DETS
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        ious = np.asarray(self.iou_thresholds, dtype=np.float64).reshape(-1)
        if ious.size == 0 or not np.all((ious > 0) & (ious <= 1)):
            raise UsageError(f"IoU thresholds must be in (0, 1], got {list(ious)}")
        if np.any(np.diff(np.sort(ious)) == 0):
            raise UsageError(f"IoU thresholds must be distinct, got {list(ious)}")
        dets = list(self.max_dets)
        if (len(dets) != 3 or any(int(d) != d or d < 1 for d in dets)
                or sorted(dets) != dets or len(set(dets)) != 3):
            raise UsageError("max-dets must be three increasing positive integers "
                             f"(for AR1, AR10, AR100), got {dets}")
        object.__setattr__(self, "iou_thresholds", tuple(np.sort(ious).tolist()))
        object.__setattr__(self, "max_dets", tuple(int(d) for d in dets))

    def as_dict(self) -> dict:
        return {"iou_thresholds": list(self.iou_thresholds), "max_dets": list(self.max_dets),
                "class_agnostic": self.class_agnostic,
                "area_ranges": AREA_RANGES.tolist(), "recall_points": len(RECALL_POINTS)}


@dataclasses.dataclass
class CocoResult:
    """What :func:`evaluate_coco` returns.

    Attributes:
        params: the settings used.
        precision: ``(T, R, K, A, M)`` as pycocotools' ``eval["precision"]``.
        recall: ``(T, K, A, M)`` as pycocotools' ``eval["recall"]``.
        stats: ``(12,)`` the summary, pycocotools' ``stats``.
        class_names: ``K`` names (one, ``"all"``, when class-agnostic).
        num_gt: ``(A, K)`` ground-truth boxes that count, per area range and class.
        matches: per-class scored TP/FP at IoU 0.5 (area all, largest maxDets).
        num_images, num_gt_boxes, num_detections: input sizes.
    """

    params: CocoParams
    precision: np.ndarray
    recall: np.ndarray
    stats: np.ndarray
    class_names: list[str]
    num_gt: np.ndarray
    matches: ScoredMatches
    num_images: int
    num_gt_boxes: int
    num_detections: int

    @property
    def stats_dict(self) -> dict[str, float]:
        """The 12 stats by name (``AP``, ``AP50``, ... ``ARl``; the AR stats named by the
        detection limits, :func:`~detkit.evaluate.summary.stat_names`)."""
        return {name: float(value)
                for name, value in zip(stat_names(self.params.max_dets), self.stats)}

    def class_ap(self) -> np.ndarray:
        """``(K, 3)`` AP, AP50, AP75 per class (area all, largest maxDets; -1 if absent)."""
        out = np.full((len(self.class_names), 3), -1.0)
        thresholds = np.asarray(self.params.iou_thresholds)
        for k in range(len(self.class_names)):
            out[k, 0] = mean_present(self.precision[:, :, k, 0, -1])
            for j, iou in ((1, 0.5), (2, 0.75)):
                t = threshold_index(thresholds, iou)
                if t is not None:
                    out[k, j] = mean_present(self.precision[t, :, k, 0, -1])
        return out


def _sorted_ground_truth(gt: GroundTruth, num_classes: int, agnostic: bool):
    """Ground truth by (image, category, file order): the order pycocotools walks it in."""
    order = stable_argsort(gt.category, gt.image)
    category = np.zeros(len(gt), np.int64) if agnostic else gt.category[order]
    return order, gt.image[order] * num_classes + category, category


def _sorted_detections(dets: Detections, num_classes: int, agnostic: bool, max_det: int):
    """Detections by group, then pycocotools' stable score order; cut to ``max_det``."""
    if agnostic:   # an image's detections are concatenated category by category
        order = stable_argsort(dets.category, -dets.scores, dets.image)
        category = np.zeros(len(dets), np.int64)
    else:
        order = stable_argsort(-dets.scores, dets.image * num_classes + dets.category)
        category = dets.category[order]
    group = dets.image[order] * num_classes + category
    rank = rank_in_runs(group)
    keep = rank < max_det
    return order[keep], group[keep], category[keep], rank[keep]


def family_params(family, params: CocoParams | None = None, *,
                  keep_max_dets: bool = False) -> CocoParams:
    """COCO settings for the detections of a :class:`detkit.families.Family`: pooled
    categories when it scores objects (rpn), its detection limits unless
    ``keep_max_dets`` (``--max-dets`` given); the rest from ``params``."""
    params = params or CocoParams()
    return dataclasses.replace(
        params, class_agnostic=params.class_agnostic or family.class_agnostic,
        max_dets=params.max_dets if keep_max_dets else family.max_dets)


def evaluate_coco(gt: GroundTruth, dets: Detections,
                  params: CocoParams | None = None) -> CocoResult:
    """Evaluate detections like ``COCOeval(gt, dt, "bbox")`` evaluate/accumulate/summarize.

    Args:
        gt: ground truth (all its images and categories take part, as in pycocotools).
        dets: detections whose indices refer to ``gt``'s images and categories.
        params: thresholds, maxDets, class-agnostic (default: pycocotools' defaults).

    Returns:
        :class:`CocoResult` whose ``precision``, ``recall`` and ``stats`` equal
        pycocotools'.
    """
    params = params or CocoParams()
    agnostic = params.class_agnostic
    num_k = 1 if agnostic else gt.num_classes
    thresholds = np.asarray(params.iou_thresholds)
    max_dets = np.asarray(params.max_dets)

    g_order, g_group, g_cat = _sorted_ground_truth(gt, num_k, agnostic)
    g_area, g_crowd = gt.area[g_order], gt.iscrowd[g_order]
    d_order, d_group, d_cat, d_rank = _sorted_detections(dets, num_k, agnostic,
                                                         int(max_dets[-1]))
    # Rows in accumulate's order: category, descending score, then (stable) image and
    # order within the image, which is the order the detections already have.
    scores = dets.scores[d_order]
    perm = stable_argsort(-scores, d_cat)
    out_index = np.empty_like(perm)
    out_index[perm] = np.arange(len(perm))
    d_boxes = dets.boxes[d_order]
    matches = match_groups(d_group, d_boxes, d_boxes[:, 2] * d_boxes[:, 3], g_group,
                           gt.boxes[g_order], g_area, g_crowd, thresholds, AREA_RANGES,
                           out_index=out_index)

    counted = ~(g_crowd[None, :] | (g_area[None, :] < AREA_RANGES[:, :1])
                | (g_area[None, :] > AREA_RANGES[:, 1:]))
    num_gt = np.stack([np.bincount(g_cat[c], minlength=num_k) for c in counted])
    category = d_cat[perm]
    precision, recall = accumulate(matches, category, d_rank[perm], num_gt, max_dets,
                                   RECALL_POINTS)
    stats = summarize(precision, recall, thresholds, len(max_dets))

    t_curve = threshold_index(thresholds, CURVE_IOU)
    t_curve = 0 if t_curve is None else t_curve
    tp = np.zeros(len(perm), bool)
    tp[matches.columns] = matches.tp[0, t_curve]
    ignored = matches.outside[0].copy()
    ignored[matches.columns] = matches.ignored[0, t_curve]
    curve = ScoredMatches(category=category[~ignored], scores=scores[perm][~ignored],
                          tp=tp[~ignored], num_gt=num_gt[0],
                          iou=float(thresholds[t_curve]))
    names = [AGNOSTIC_NAME] if agnostic else list(gt.class_names)
    return CocoResult(params=params, precision=precision, recall=recall, stats=stats,
                      class_names=names, num_gt=num_gt, matches=curve,
                      num_images=gt.num_images, num_gt_boxes=len(gt),
                      num_detections=len(dets))
