"""Precision-recall and F1-confidence curves, and the F1-optimal confidence threshold.

Input is one list of scored detections per class, each marked true or false positive at
one IoU threshold (ignored detections already removed): :class:`ScoredMatches`.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ScoredMatches:
    """True/false positive detections of every class, best score first within a class.

    Attributes:
        category: ``(N,)`` int64 class index, sorted ascending.
        scores: ``(N,)`` float64, descending within a class.
        tp: ``(N,)`` bool true positive (else false positive).
        num_gt: ``(K,)`` int64 ground-truth boxes that count, per class.
        iou: the IoU threshold the matches were made at.
    """

    category: np.ndarray
    scores: np.ndarray
    tp: np.ndarray
    num_gt: np.ndarray
    iou: float

    def of_class(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, tp)`` of class ``k``."""
        lo, hi = np.searchsorted(self.category, [k, k + 1])
        return self.scores[lo:hi], self.tp[lo:hi]

    def pooled(self) -> tuple[np.ndarray, np.ndarray, int]:
        """All classes together: ``(scores, tp, num_gt)``, best score first."""
        order = np.argsort(-self.scores, kind="stable")
        return self.scores[order], self.tp[order], int(self.num_gt.sum())


@dataclasses.dataclass
class OperatingPoint:
    """Counts at a confidence threshold (detections with ``score >= confidence`` kept)."""

    confidence: float | None
    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    num_gt: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def cumulative(scores: np.ndarray, tp: np.ndarray, num_gt: int):
    """Cumulative counts at the end of every run of tied scores.

    Returns:
        ``(confidence, tp, fp, precision, recall)``, one entry per distinct score,
        highest score first (a threshold keeps a whole tie run or none of it).
    """
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(~tp)
    ends = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True]) if len(scores) else \
        np.zeros(0, np.int64)
    tps, fps = tp_cum[ends], fp_cum[ends]
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / num_gt if num_gt > 0 else np.zeros(len(ends))
    return scores[ends], tps, fps, precision, recall


def f1_score(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """``2 P R / (P + R)``, 0 where both are 0."""
    total = precision + recall
    return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)


def best_f1(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> OperatingPoint:
    """The confidence threshold with the highest F1 (the highest such threshold on ties).

    Args:
        scores: ``(N,)`` descending.
        tp: ``(N,)`` bool.
        num_gt: ground-truth boxes that count.
    """
    conf, tps, fps, precision, recall = cumulative(scores, np.asarray(tp, bool), num_gt)
    if len(conf) == 0:
        return OperatingPoint(None, 0.0, 0.0, 0.0, 0, 0, int(num_gt))
    f1 = f1_score(precision, recall)
    i = int(np.argmax(f1))
    return OperatingPoint(float(conf[i]), float(f1[i]), float(precision[i]), float(recall[i]),
                          int(tps[i]), int(fps[i]), int(num_gt))


def f1_at(scores: np.ndarray, tp: np.ndarray, num_gt: int,
          confidences: np.ndarray) -> np.ndarray:
    """F1 when keeping detections with ``score >= c`` for each ``c`` of ``confidences``."""
    kept = len(scores) - np.searchsorted(scores[::-1], confidences, side="left")
    tp_cum = np.r_[0, np.cumsum(tp)]
    tps = tp_cum[kept]
    precision = tps / np.maximum(kept, 1)
    recall = tps / num_gt if num_gt > 0 else np.zeros(len(kept))
    return f1_score(precision, recall)
