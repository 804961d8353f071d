"""The 12 COCO summary numbers (``COCOeval.summarize``) from precision and recall arrays."""

from __future__ import annotations

import numpy as np

#: Detections kept per image and category for the AR1 / AR10 / AR100 stats (pycocotools').
MAX_DETS = (1, 10, 100)


def stat_names(max_dets: tuple[int, ...] = MAX_DETS) -> tuple[str, ...]:
    """Names of the 12 stats in pycocotools' order; the three AR stats are named by their
    detection limits (``AR1 AR10 AR100``, or ``AR1 AR100 AR1000`` for proposals)."""
    return ("AP", "AP50", "AP75", "APs", "APm", "APl", *(f"AR{int(d)}" for d in max_dets),
            "ARs", "ARm", "ARl")


#: Names of the 12 stats with pycocotools' detection limits.
STAT_NAMES = stat_names()
#: Area range labels, in the order of the area axis.
AREA_LABELS = ("all", "small", "medium", "large")
#: Value of a stat with nothing to average (pycocotools' convention).
MISSING = -1.0
#: (is AP, IoU threshold or None for all, area label, index into max_dets) per stat.
STAT_SPECS = (
    (True, None, "all", -1), (True, 0.5, "all", -1), (True, 0.75, "all", -1),
    (True, None, "small", -1), (True, None, "medium", -1), (True, None, "large", -1),
    (False, None, "all", 0), (False, None, "all", 1), (False, None, "all", 2),
    (False, None, "small", -1), (False, None, "medium", -1), (False, None, "large", -1),
)


def mean_present(values: np.ndarray) -> float:
    """Mean of the entries that are not ``-1`` (``-1`` when there are none)."""
    present = values[values > MISSING]
    return float(np.mean(present)) if present.size else MISSING


def threshold_index(iou_thresholds: np.ndarray, value: float) -> int | None:
    """Index of ``value`` in ``iou_thresholds`` (to 1e-9), else ``None``."""
    hits = np.flatnonzero(np.abs(np.asarray(iou_thresholds) - value) < 1e-9)
    return int(hits[0]) if hits.size else None


def summarize(precision: np.ndarray, recall: np.ndarray, iou_thresholds: np.ndarray,
              max_dets_count: int = 3) -> np.ndarray:
    """The 12 stats of ``COCOeval.summarize`` (``-1`` where undefined).

    AP and the per-area numbers use the largest ``maxDets``; AR1/AR10/AR100 use the first,
    second and third (pycocotools uses the literal 100 for AP, identical by default).
    AP50 / AP75 are ``-1`` when 0.5 / 0.75 is not among the thresholds.

    Args:
        precision: ``(T, R, K, A, M)``.
        recall: ``(T, K, A, M)``.
        iou_thresholds: ``(T,)``.
        max_dets_count: ``M``.
    """
    stats = np.full(len(STAT_SPECS), MISSING)
    for i, (is_ap, iou, area, m) in enumerate(STAT_SPECS):
        if m >= max_dets_count:
            continue
        values = precision if is_ap else recall
        if iou is not None:
            t = threshold_index(iou_thresholds, iou)
            if t is None:
                continue
            values = values[t:t + 1]
        a = AREA_LABELS.index(area)
        stats[i] = mean_present(values[..., a, m])
    return stats
