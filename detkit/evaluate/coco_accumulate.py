"""COCOeval.accumulate on flat arrays: precision at the recall points, and recall.

For one category, pycocotools sorts the kept detections by descending score (stable,
images in id order), takes cumulative true/false positive counts, makes precision
non-increasing from the right (the envelope) and reads it at the first index whose
recall reaches each recall point. Only true positives change recall and the envelope
only takes maxima, so it is enough to look at the ``n``-th true positive of each
category: its precision is ``n / (fp_before + n + eps)``. Everything below is computed
for all categories and thresholds at once.
"""

from __future__ import annotations

import numpy as np

from detkit.evaluate.coco_match import Matches
from detkit.evaluate.groups import dense_rank

#: ``np.spacing(1)``: pycocotools' guard against 0 / 0 in precision.
EPS = np.spacing(1)
#: Precision and recall of a category without (non-ignored) ground truth.
ABSENT = -1.0


def first_recall_index(num_gt: int, recall_points: np.ndarray) -> np.ndarray:
    """``(R,)`` smallest true-positive count whose recall ``k / num_gt`` reaches each point.

    Uses the same float division as pycocotools, so the count is exact.
    """
    recall = np.arange(num_gt + 1) / num_gt
    return np.searchsorted(recall, recall_points, side="left")


def segmented_suffix_max(values: np.ndarray, segment: np.ndarray,
                         num_segments: int) -> np.ndarray:
    """Maximum of ``values[j]`` over ``j >= i`` within ``i``'s segment, exactly.

    Args:
        values: ``(N,)`` floats.
        segment: ``(N,)`` int64 segment index, sorted ascending.
        num_segments: an upper bound on ``segment`` values + 1.

    Returns:
        ``(N,)`` the suffix maxima (float values untouched: ranks are accumulated).
    """
    if len(values) == 0:
        return values.copy()
    rank, distinct = dense_rank(values)
    unique = np.empty(distinct)
    unique[rank] = values
    offset = (num_segments - 1 - segment) * np.int64(len(unique))
    combined = (rank.astype(np.int64) + offset)[::-1]
    best = np.maximum.accumulate(combined)[::-1] - offset
    return unique[best]


def accumulate(matches: Matches, category: np.ndarray, rank: np.ndarray,
               num_gt: np.ndarray, max_dets: np.ndarray,
               recall_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall arrays of ``COCOeval.accumulate``.

    Args:
        matches: the matching, with detection columns sorted by (category, descending
            score, image, order within the image).
        category: ``(D,)`` int64 category index of each column (sorted).
        rank: ``(D,)`` int64 rank of each detection within its (image, category) by score.
        num_gt: ``(A, K)`` int64 count of ground-truth boxes that are not ignored.
        max_dets: ``(M,)`` detections kept per image and category.
        recall_points: ``(R,)`` recall thresholds.

    Returns:
        ``precision`` ``(T, R, K, A, M)`` and ``recall`` ``(T, K, A, M)``, ``-1`` where a
        category has no ground truth that counts.
    """
    num_a, num_t, num_c = matches.tp.shape
    num_d = len(category)
    num_k = num_gt.shape[1]
    num_r = len(recall_points)
    precision = np.full((num_t, num_r, num_k, num_a, len(max_dets)), ABSENT)
    recall = np.full((num_t, num_k, num_a, len(max_dets)), ABSENT)
    min_tp = np.zeros((num_a, num_k, num_r), np.int64)
    cache: dict[int, np.ndarray] = {}
    for a in range(num_a):
        for k in range(num_k):
            n = int(num_gt[a, k])
            if n > 0:
                if n not in cache:
                    cache[n] = first_recall_index(n, recall_points)
                min_tp[a, k] = cache[n]
    first_tp = np.maximum(min_tp, 1)            # recall 0 reads the envelope's maximum
    groups = num_t * num_k
    columns = matches.columns
    cat_start = np.searchsorted(category, np.arange(num_k + 1))
    cand_cat_start = np.searchsorted(columns, cat_start)
    other = np.ones(num_d, bool)                # detections that are never matched
    other[columns] = False
    other_fp = np.zeros(num_d + 1, np.int64)    # other_fp[d]: such FPs before column d
    cand_fp = np.zeros((num_t, num_c + 1), np.int32)   # cand_fp[t, j]: before candidate j
    cand_fp_flags = ~matches.tp & ~matches.ignored
    for m, max_det in enumerate(max_dets):
        kept = rank < max_det
        kept_cand = kept[columns]
        for a in range(num_a):
            np.cumsum(other & kept & ~matches.outside[a], out=other_fp[1:])
            np.cumsum(cand_fp_flags[a] & kept_cand, axis=1, out=cand_fp[:, 1:])
            t_of, j = np.divmod(np.flatnonzero(matches.tp[a] & kept_cand), num_c)
            column = columns[j]
            cat = category[column]
            group = t_of * num_k + cat                     # sorted: by t, category, column
            group_start = np.searchsorted(group, np.arange(groups + 1))
            count = np.diff(group_start).reshape(num_t, num_k)
            nth = (np.arange(len(group)) - group_start[group] + 1).astype(np.float64)
            fp_before = (other_fp[column] - other_fp[cat_start[cat]]
                         + cand_fp[t_of, j] - cand_fp[t_of, cand_cat_start[cat]])
            pr = nth / (fp_before + nth + EPS)
            envelope = segmented_suffix_max(pr, group, groups)
            has_gt = num_gt[a] > 0                                             # (K,)
            with np.errstate(invalid="ignore", divide="ignore"):
                rec = count / num_gt[a][None, :]
            recall[:, :, a, m] = np.where(has_gt[None, :], rec, ABSENT)
            # q[t, k, r]: envelope at the first_tp-th true positive, 0 past the last one.
            reached = first_tp[a][None, :, :] <= count[:, :, None]
            index = (group_start[:-1].reshape(num_t, num_k)[:, :, None]
                     + first_tp[a][None, :, :] - 1)
            q = np.where(reached, envelope[np.where(reached, index, 0)]
                         if len(envelope) else 0.0, 0.0)
            q = np.where(has_gt[None, :, None], q, ABSENT)
            precision[:, :, :, a, m] = q.transpose(0, 2, 1)
    return precision, recall
