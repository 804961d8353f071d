"""Grouping helpers on sorted integer keys: run starts, ranks within runs, pairs of groups.

Everything here is a few vectorized NumPy calls; keys are int64 arrays sorted ascending.
"""

from __future__ import annotations

import numpy as np


def run_starts(keys: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values begins in sorted ``keys`` ``(N,)``: ``(R,)``."""
    keys = np.asarray(keys)
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def rank_in_runs(keys: np.ndarray) -> np.ndarray:
    """``(N,)`` position of every element inside its run of equal sorted ``keys``."""
    starts = run_starts(keys)
    lengths = np.diff(np.r_[starts, len(keys)])
    return np.arange(len(keys)) - np.repeat(starts, lengths)


def pairs_in_groups(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` with ``left[i] == right[j]``.

    Args:
        left: ``(N,)`` sorted group keys.
        right: ``(M,)`` sorted group keys.

    Returns:
        ``(i, j)``: two ``(P,)`` int64 arrays, ordered by ``i`` then ``j``.
    """
    begin = np.searchsorted(right, left, side="left")
    end = np.searchsorted(right, left, side="right")
    counts = end - begin
    total = int(counts.sum())
    i = np.repeat(np.arange(len(left), dtype=np.int64), counts)
    offsets = np.cumsum(counts) - counts
    j = np.arange(total, dtype=np.int64) - np.repeat(offsets - begin, counts)
    return i, j


#: Largest mixed-radix key :func:`stable_argsort` builds before falling back to lexsort.
MAX_COMBINED_KEY = 2 ** 62


def dense_rank(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``(N,)`` rank of each value among the distinct values (0 = smallest), and their count."""
    values = np.asarray(values)
    if len(values) == 0:
        return np.zeros(0, np.int64), 0
    order = np.argsort(values)
    ordered = values[order]
    ranks_sorted = np.cumsum(np.r_[False, ordered[1:] != ordered[:-1]], dtype=np.int64)
    ranks = np.empty(len(values), np.int64)
    ranks[order] = ranks_sorted
    return ranks, int(ranks_sorted[-1]) + 1


def stable_argsort(*keys: np.ndarray) -> np.ndarray:
    """``np.lexsort(keys)`` (last key primary; ties keep input order), usually faster.

    Each key becomes dense integer ranks; the ranks and the element index are packed
    into one int64 per element, whose plain sort is stable because packed keys are unique.
    Falls back to ``np.lexsort`` when the packed key would not fit.
    """
    size = len(keys[0])
    packed = np.arange(size, dtype=np.int64)
    radix = max(size, 1)
    for key in keys:
        key = np.asarray(key)
        if key.dtype.kind in "iub" and size:
            low = int(key.min())
            ranks, count = key.astype(np.int64) - low, int(key.max()) - low + 1
            if radix * count >= MAX_COMBINED_KEY:
                ranks, count = dense_rank(key)
        else:
            ranks, count = dense_rank(key)
        if radix * max(count, 1) >= MAX_COMBINED_KEY:
            return np.lexsort(keys)
        packed += ranks * radix
        radix *= max(count, 1)
    return np.argsort(packed)
