"""Greedy detection-to-ground-truth matching of COCOeval, for all thresholds at once.

pycocotools matches each ``(image, category)`` group, each area range and each IoU
threshold separately: detections in score order each take the best still-free
ground-truth box (crowd regions are never used up), preferring boxes that are not
ignored, with ties in IoU going to the later box. The loop is sequential only within a
group, so here it runs in *steps*: step ``s`` handles the ``s``-th detection (in score
order) of every group at once, for every area range and threshold at once. Only pairs
whose IoU reaches the lowest threshold are ever considered, and detections without such a
pair are settled without a step.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from detkit.evaluate.groups import pairs_in_groups, rank_in_runs, run_starts, stable_argsort
from detkit.evaluate.iou import coco_pair_iou

#: pycocotools compares IoUs against ``min(threshold, 1 - 1e-10)``.
IOU_CAP = 1 - 1e-10
#: Marks a detection without a match in :attr:`Matches.gt`.
UNMATCHED = -1


@dataclasses.dataclass
class Matches:
    """Outcome of every detection for every area range and IoU threshold.

    Only *candidates* (detections with at least one ground-truth box at IoU >= the lowest
    threshold) can be matched; every other detection is a false positive, or ignored when
    its area is outside the range, at every threshold.

    Attributes:
        columns: ``(C,)`` sorted output columns of the candidates.
        tp: ``(A, T, C)`` bool, the candidate matched a ground-truth box not ignored.
        ignored: ``(A, T, C)`` bool, neither true nor false positive (matched to an
            ignored box, or unmatched and outside the area range).
        outside: ``(A, D)`` bool, every detection's area is outside the range (columns in
            output order).
    """

    columns: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    outside: np.ndarray

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """``(A, T, D)`` bool true positives and ignored flags of all detections."""
        num_a, num_t, _ = self.tp.shape
        ignored = np.repeat(self.outside[:, None, :], num_t, axis=1)
        tp = np.zeros_like(ignored)
        tp[:, :, self.columns] = self.tp
        ignored[:, :, self.columns] = self.ignored
        return tp, ignored


def outside(area: np.ndarray, area_ranges: np.ndarray) -> np.ndarray:
    """``(A, N)`` bool: ``area`` ``(N,)`` outside each ``[lo, hi]`` of ``(A, 2)`` ranges."""
    lo, hi = area_ranges[:, :1], area_ranges[:, 1:]
    return (area[None, :] < lo) | (area[None, :] > hi)


def match_groups(det_group: np.ndarray, det_boxes: np.ndarray, det_area: np.ndarray,
                 gt_group: np.ndarray, gt_boxes: np.ndarray, gt_area: np.ndarray,
                 gt_crowd: np.ndarray, iou_thresholds: np.ndarray, area_ranges: np.ndarray,
                 out_index: np.ndarray | None = None) -> Matches:
    """Match detections to ground truth exactly as ``COCOeval.evaluateImg`` does.

    Args:
        det_group: ``(D,)`` int64 group key (image, category), sorted; within a group the
            detections are in pycocotools' order (stable sort by descending score) and
            already cut to the largest ``maxDets``.
        det_boxes: ``(D, 4)`` float64 ``[x, y, w, h]``.
        det_area: ``(D,)`` float64 ``w * h``.
        gt_group: ``(G,)`` int64 group key, sorted; file order within a group.
        gt_boxes: ``(G, 4)`` float64 ``[x, y, w, h]``.
        gt_area: ``(G,)`` float64 annotation areas.
        gt_crowd: ``(G,)`` bool crowd regions (always ignored, never used up).
        iou_thresholds: ``(T,)`` ascending IoU thresholds.
        area_ranges: ``(A, 2)`` ``[lo, hi]`` areas in pixels.
        out_index: ``(D,)`` column of each detection in the output (a permutation;
            default the input order), so callers get the order they need without a copy.

    Returns:
        :class:`Matches`.
    """
    num_dets = len(det_group)
    out_index = np.arange(num_dets) if out_index is None else out_index
    thresholds = np.minimum(np.asarray(iou_thresholds, np.float64), IOU_CAP)
    num_t, num_a = len(thresholds), len(area_ranges)
    gt_ignored = (gt_crowd[None, :] | outside(gt_area, area_ranges)).T           # (G, A)
    det_outside = outside(det_area, area_ranges)                                   # (A, D)
    outside_out = np.empty_like(det_outside)
    outside_out[:, out_index] = det_outside
    none = Matches(np.zeros(0, np.int64), np.zeros((num_a, num_t, 0), bool),
                   np.zeros((num_a, num_t, 0), bool), outside_out)
    if num_dets == 0 or len(gt_group) == 0 or num_t == 0:
        return none

    # Candidate pairs: same group, IoU reaching the lowest threshold.
    pair_det, pair_gt = pairs_in_groups(det_group, gt_group)
    iou = coco_pair_iou(det_boxes[pair_det], gt_boxes[pair_gt], gt_crowd[pair_gt])
    keep = iou >= thresholds[0]
    pair_det, pair_gt, iou = pair_det[keep], pair_gt[keep], iou[keep]
    if len(pair_det) == 0:
        return none
    passes = np.searchsorted(thresholds, iou, side="right")   # thresholds met: t < passes

    # Detections with a candidate, and their step: rank among such detections of the group.
    cand_start = run_starts(pair_det)
    candidates = pair_det[cand_start]
    step_of_candidate = rank_in_runs(det_group[candidates])
    cand_of_pair = np.repeat(np.arange(len(candidates)),
                             np.diff(np.r_[cand_start, len(pair_det)]))
    # Pairs by step, detection, then rising (IoU, gt index): the last valid pair of a
    # detection is the one pycocotools' loop ends on.
    order = stable_argsort(pair_gt, iou, cand_of_pair, step_of_candidate[cand_of_pair])
    pair_gt, passes, cand_of_pair = pair_gt[order], passes[order], cand_of_pair[order]
    pair_step = step_of_candidate[cand_of_pair]
    starts_all = run_starts(cand_of_pair)
    pos = np.arange(len(pair_gt)) - np.repeat(starts_all,
                                              np.diff(np.r_[starts_all, len(pair_gt)]))
    span = int(pos.max()) + 1                 # key = preferred * span + pos stays unique
    preferred = (~gt_ignored).astype(np.int32) * np.int32(span)                   # (G, A)
    pos = pos.astype(np.int32)
    crowd_of_pair = gt_crowd[pair_gt][:, None, None]
    step_bounds = np.searchsorted(pair_step, np.arange(int(pair_step.max()) + 2))

    used = np.zeros((len(gt_group), len(area_ranges), num_t), bool)               # gtm > 0
    # Candidates numbered in output order, so the final scatter runs forward.
    columns = out_index[candidates]
    slot_order = np.argsort(columns)
    slot = np.empty(len(candidates), np.int64)
    slot[slot_order] = np.arange(len(candidates))
    cand_tp = np.zeros((num_a, num_t, len(candidates)), bool)
    cand_ignored = np.empty_like(cand_tp)
    cand_ignored[:] = det_outside[:, None, candidates[slot_order]]
    t_index = np.arange(num_t)[None, None, :]
    for step in range(len(step_bounds) - 1):
        lo, hi = step_bounds[step], step_bounds[step + 1]
        gts = pair_gt[lo:hi]
        starts = run_starts(cand_of_pair[lo:hi])
        free = ~used[gts] | crowd_of_pair[lo:hi]                                   # (P, A, T)
        valid = free & (t_index < passes[lo:hi, None, None])
        key = np.where(valid, (preferred[gts] + pos[lo:hi, None])[:, :, None], np.int32(-1))
        best = np.maximum.reduceat(key, starts, axis=0).reshape(-1)         # (S * A * T,)
        found = np.flatnonzero(best >= 0)
        s_i, a_t = np.divmod(found, num_a * num_t)
        a_i, t_i = np.divmod(a_t, num_t)
        winner = gts[starts[s_i] + best[found] % span]
        used[winner, a_i, t_i] = True
        cand = slot[cand_of_pair[lo + starts[s_i]]]
        winner_ignored = gt_ignored[winner, a_i]
        cand_tp[a_i, t_i, cand] = ~winner_ignored
        cand_ignored[a_i, t_i, cand] = winner_ignored
    return Matches(columns[slot_order], cand_tp, cand_ignored, outside_out)
