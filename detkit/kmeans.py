"""Anchor boxes by k-means on box sizes with the ``1 - IoU`` distance, plus evolution.

Everything here is NumPy on ``(N, 2)`` arrays of box widths and heights in network-input
pixels, so it is testable without a dataset. The pipeline is:

1. :func:`input_box_sizes` scales dataset boxes to the input the way training sees them
   (letterbox or stretch); :func:`drop_tiny` removes boxes under :data:`MIN_BOX_SIZE`.
2. :func:`iou_kmeans` clusters: k-means++ seeding on ``1 - IoU``, Lloyd iterations with
   median (or mean) centers, empty clusters re-seeded with the worst-fitting boxes, an
   iteration cap, several restarts; the best restart (highest mean IoU) wins; a few
   sweeps then move each center to the size maximizing its boxes' summed IoU.
3. :func:`evolve_anchors` (optional) mutates the anchors like YOLOv5's autoanchor and
   keeps a mutation only when the ratio-metric fitness improves.
4. :func:`anchor_quality` reports mean IoU, BPR, anchors per target and fitness.

Speed: identical sizes are merged into weighted unique rows; restarts run on a seeded
subsample of at most :data:`SAMPLE_SIZE` boxes, and the winner is iterated a few times
(:data:`POLISH_ITER`) on all boxes, where IoU bounds (Hamerly's method) skip the boxes
that cannot change cluster, before the IoU refinement.
The result depends only on the data and the seed (byte for byte).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

import numpy as np

from detkit.anchors import sort_by_area
from detkit.boxes import wh_iou
from detkit.errors import DataError, UsageError
from detkit.choices import CENTERS, RESIZE_MODES  # noqa: F401 (re-exported)

#: Boxes with a side under this many input pixels are dropped before clustering.
MIN_BOX_SIZE = 2.0
#: YOLOv5's anchor-size threshold: a box fits an anchor when no side ratio exceeds it.
DEFAULT_ANCHOR_T = 4.0
#: Independent k-means runs (k-means++ seeding each); the best mean IoU wins.
DEFAULT_RESTARTS = 10
#: Lloyd iterations at most, per run.
DEFAULT_MAX_ITER = 300
#: Restarts run on a seeded subsample of at most this many boxes (all boxes refine).
SAMPLE_SIZE = 4096
#: Lloyd iterations stop when at most this share of the boxes changed cluster (on
#: small data sets that means none: exact convergence).
CHANGE_TOL = 1e-3
#: The looser stopping rule of the restarts on the subsample, which only pick a basin.
SEARCH_CHANGE_TOL = 5e-3
#: Lloyd iterations at most on all boxes after the subsample's restarts: they carry the
#: winner from the subsample's optimum towards the whole set's, and the IoU refinement
#: does the rest (iterating to convergence took 1.8x the time on 200k float sizes, for
#: a mean IoU within 0.0003 either way).
POLISH_ITER = 10
#: An anchor whose sides change by a factor within ``exp(+-d)`` changes any IoU with it
#: by a factor within ``exp(+-4 d)`` (see :meth:`_Clusterer.lloyd`).
IOU_DRIFT_POWER = 4.0
#: IoU refinement (:meth:`_Clusterer.refine_iou`): sweeps by default, golden-section
#: steps per size, search radius in log size, and the mean-IoU gain that stops it.
DEFAULT_REFINE = 3
GOLDEN_STEPS = 8
GOLDEN_RADIUS = np.log(1.25)
GOLDEN = (np.sqrt(5.0) - 1) / 2
REFINE_TOL = 1e-6
#: Relative margin on the IoU bounds that absorbs float32 rounding.
BOUND_SLACK = 1e-5

# Evolution settings of YOLOv5's autoanchor: mutation probability, step size and
# the clip range of one multiplicative mutation.
MUTATION_PROB = 0.9
MUTATION_SIGMA = 0.1
MUTATION_RANGE = (0.3, 3.0)


@dataclasses.dataclass(frozen=True)
class AnchorQuality:
    """How well a set of anchors covers a set of boxes.

    Attributes:
        avg_iou: mean over boxes of the best IoU with any anchor (centers aligned).
        bpr: best possible recall, the share of boxes with at least one anchor whose
            side ratios are all within ``anchor_t``.
        anchors_per_target: mean number of anchors within ``anchor_t`` per box.
        fitness: YOLOv5's anchor fitness, mean over boxes of the best ratio metric,
            counting boxes without a fitting anchor as 0.
        n_boxes: number of boxes measured.
    """

    avg_iou: float
    bpr: float
    anchors_per_target: float
    fitness: float
    n_boxes: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class KMeansResult:
    """The outcome of :func:`iou_kmeans`.

    Attributes:
        anchors: ``(k, 2)`` float64 centers in input pixels, sorted by area.
        avg_iou: mean best IoU of all boxes with ``anchors``.
        iterations: Lloyd iterations of the winning restart plus those on all boxes.
        converged: whether the winning restart met its stopping rule (within
            ``max_iter``).
        restarts: how many restarts ran.
    """

    anchors: np.ndarray
    avg_iou: float
    iterations: int
    converged: bool
    restarts: int


@dataclasses.dataclass(frozen=True)
class EvolveResult:
    """The outcome of :func:`evolve_anchors`.

    Attributes:
        anchors: ``(k, 2)`` float64 evolved anchors, sorted by area.
        fitness: their fitness (never below the starting fitness).
        start_fitness: the fitness of the anchors evolution started from.
        accepted: how many mutations improved the fitness and were kept.
        generations: how many mutations were tried.
    """

    anchors: np.ndarray
    fitness: float
    start_fitness: float
    accepted: int
    generations: int


# ----------------------------------------------------------------------------- inputs


def input_box_sizes(records: Iterable, input_size: int,
                    resize: str = "letterbox") -> np.ndarray:
    """Box sizes as the network input sees them.

    Args:
        records: :class:`~detkit.data.records.ImageRecord` objects with ``width``,
            ``height`` and ``(N, 4)`` xyxy ``boxes`` in image pixels.
        input_size: the square input side in pixels.
        resize: ``"letterbox"`` (keep aspect ratio, as training does) or ``"stretch"``
            (scale each axis to the input side).

    Returns:
        ``(M, 2)`` float32 widths and heights in input pixels, all boxes concatenated.
    """
    if resize not in RESIZE_MODES:
        raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    records = list(records)
    boxes = [record.boxes for record in records]
    counts = np.fromiter(map(len, boxes), np.int64, len(boxes))
    try:  # records' boxes are (N, 4) arrays: one concatenation
        all_boxes = np.concatenate(boxes).astype(np.float32, copy=False) if boxes else None
    except ValueError:
        all_boxes = None
    if all_boxes is None or all_boxes.shape != (int(counts.sum()), 4):
        boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]
        counts = np.fromiter(map(len, boxes), np.int64, len(boxes))
        all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    sizes = np.array([[record.width or 0, record.height or 0] for record in records],
                     np.float64).reshape(-1, 2)
    unknown = (counts > 0) & (sizes == 0).any(axis=1)
    if unknown.any():
        record = records[int(np.flatnonzero(unknown)[0])]
        raise DataError(f"image size unknown for {record.image_path}",
                        line=record.source_line)
    if not counts.sum():
        return np.zeros((0, 2), np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # images without boxes: no size
        if resize == "letterbox":
            # Letterbox.scale_xy for every image at once, in the same float64 steps.
            scale = np.min(input_size / sizes, axis=1, keepdims=True)
            new = np.clip(np.trunc(sizes * scale), 1, input_size)
            scales = new / sizes
        else:
            scales = input_size / sizes
    wh = all_boxes[:, 2:4] - all_boxes[:, 0:2]
    return wh * np.repeat(scales.astype(np.float32), counts, axis=0)


def check_sizes(wh: np.ndarray) -> np.ndarray:
    """Validate ``(N, 2)`` box sizes; returns them as float32.

    Raises:
        DataError: not ``(N, 2)``, a non-finite size, or a size that is not positive.
    """
    wh = np.asarray(wh, dtype=np.float32)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise DataError(f"box sizes must be an (N, 2) array, got shape {wh.shape}")
    bad = ~np.isfinite(wh).all(axis=1) | (wh <= 0).any(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{int(bad.sum())} box sizes are not positive finite numbers "
                        f"(first: box {first} has w,h = {wh[first, 0]:g},{wh[first, 1]:g})")
    return wh


def drop_tiny(wh: np.ndarray, min_size: float = MIN_BOX_SIZE) -> tuple[np.ndarray, int]:
    """Drop boxes with a side under ``min_size`` pixels.

    Returns:
        ``(kept (M, 2), number dropped)``.
    """
    wh = np.asarray(wh, dtype=np.float32).reshape(-1, 2)
    keep = (wh >= min_size).all(axis=1)
    return wh[keep], int(len(wh) - keep.sum())


def unique_sizes(wh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge identical sizes: ``(N, 2)`` -> ``(U, 2)`` float32 unique rows, ``(U,)`` counts.

    Rows come out in a fixed order (by the float32 bit patterns of ``(w, h)``), so the
    result does not depend on the input order.
    """
    wh = np.ascontiguousarray(wh, dtype=np.float32).reshape(-1, 2)
    # Positive float32 bit patterns sort like the values; pack (w, h) into one uint64.
    bits = wh.view(np.uint32).astype(np.uint64)
    keys = (bits[:, 0] << np.uint64(32)) | bits[:, 1]
    keys, counts = np.unique(keys, return_counts=True)
    pairs = np.empty((len(keys), 2), np.uint32)
    pairs[:, 0] = (keys >> np.uint64(32)).astype(np.uint32)
    pairs[:, 1] = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return pairs.view(np.float32), counts.astype(np.float64)


# ----------------------------------------------------------------------------- metrics


def best_iou(wh: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest anchor of every box by IoU of centered boxes.

    Args:
        wh: ``(N, 2)`` box sizes.
        anchors: ``(k, 2)`` anchor sizes.

    Returns:
        ``(labels (N,) intp, iou (N,) float32)``: the index of the anchor with the
        highest IoU (the lowest index on ties) and that IoU.
    """
    return _Assigner(wh).assign(anchors)


def avg_iou(wh: np.ndarray, anchors: np.ndarray,
            weights: Optional[np.ndarray] = None) -> float:
    """Mean over boxes (weighted by ``weights``) of the best IoU with any anchor."""
    sides = np.asarray(wh, dtype=np.float32).reshape(-1, 2)
    # The best IoU of best_iou, without its labels: (k, N) rows, max across them.
    iou = wh_iou(anchors, sides, dtype=np.float32).max(axis=0)
    return float(np.average(iou.astype(np.float64), weights=weights))


def ratio_metric(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """YOLOv5's ratio metric ``min(w/a_w, a_w/w, h/a_h, a_h/h)``: ``(N, k)`` in ``(0, 1]``."""
    return _ratio_rows(wh, anchors).T


def _ratio_rows(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """:func:`ratio_metric` as ``(k, N)`` float64 (one contiguous row per anchor)."""
    sides = np.asarray(wh, dtype=np.float64).reshape(-1, 2).T                  # (2, N)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    out = None
    for axis in (0, 1):
        ratio = sides[axis][None, :] / anchors[:, axis:axis + 1]              # (k, N)
        np.minimum(ratio, 1 / ratio, out=ratio)
        out = ratio if out is None else np.minimum(out, ratio, out=out)
    return out


def anchor_quality(wh: np.ndarray, anchors: np.ndarray,
                   anchor_t: float = DEFAULT_ANCHOR_T) -> AnchorQuality:
    """Mean IoU, BPR, anchors per target and fitness of ``anchors`` on ``(N, 2)`` sizes."""
    wh = np.asarray(wh, dtype=np.float32).reshape(-1, 2)
    if not len(wh):
        raise DataError("no boxes to measure anchors on")
    threshold = 1.0 / anchor_t
    ratio = _ratio_rows(wh, anchors)                                           # (k, N)
    best = ratio.max(axis=0)
    fits = best > threshold
    return AnchorQuality(
        avg_iou=avg_iou(wh, anchors),
        bpr=float(fits.mean()),
        anchors_per_target=float((ratio > threshold).sum(axis=0).mean()),
        fitness=float(np.where(fits, best, 0.0).mean()),
        n_boxes=int(len(wh)))


def _nearest(wh: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best and second-best anchor IoU of float32 ``(N, 2)`` box sizes.

    Returns:
        ``(labels (N,) intp, best (N,) float32, second (N,) float32)``; ``labels`` is the
        anchor with the highest IoU (the lowest index on ties), ``second`` the highest
        IoU among the other anchors (0 when ``k == 1``).
    """
    iou = wh_iou(anchors, wh, dtype=np.float32)  # (k, N): rows contiguous, cache friendly
    k, n = iou.shape
    best = iou.max(axis=0)
    # argmax along axis 0 is slow in NumPy; a reversed scan keeps the lowest index.
    labels = np.zeros(n, np.intp)
    for index in range(k - 1, 0, -1):
        labels[iou[index] == best] = index
    labels[iou[0] == best] = 0
    iou[labels, np.arange(n)] = 0
    second = iou.max(axis=0)
    return labels, best, second


class _Assigner:
    """Nearest-anchor assignment of fixed ``(N, 2)`` sizes (kept as float32)."""

    def __init__(self, wh: np.ndarray):
        # Widths and heights as two contiguous rows: ``sides.T`` is a column-major (N, 2)
        # view, which wh_iou reads without a copy.
        self.sides = np.ascontiguousarray(np.asarray(wh, dtype=np.float32).reshape(-1, 2).T)

    def sizes(self, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """``(N, 2)`` float32 column-major sizes of all boxes, or of the boxes ``rows``."""
        return (self.sides if rows is None else np.take(self.sides, rows, axis=1)).T

    def assign(self, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(k, 2)`` anchors -> ``(labels (N,), best IoU (N,))``."""
        labels, best, _ = _nearest(self.sizes(), anchors)
        return labels, best

    def top2(self, anchors: np.ndarray,
             rows: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels, best and second-best IoU of all boxes, or of the boxes ``rows``."""
        return _nearest(self.sizes(rows), anchors)

    def iou_one(self, anchor: np.ndarray) -> np.ndarray:
        """``(N,)`` float64 IoU of every box with one ``(2,)`` anchor."""
        return wh_iou(anchor, self.sizes())[0]


# ----------------------------------------------------------------------------- k-means


class _Clusterer:
    """Lloyd iterations on weighted unique sizes (one instance per data set)."""

    def __init__(self, wh: np.ndarray, weights: np.ndarray):
        self.wh = np.asarray(wh, dtype=np.float32)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.total = float(self.weights.sum())
        self.assigner = _Assigner(self.wh)
        # Per axis: the order that sorts the values, used by the grouped median.
        self.orders = [np.argsort(self.wh[:, axis], kind="stable") for axis in (0, 1)]
        self.sorted_values = [self.wh[order, axis].astype(np.float64)
                              for axis, order in enumerate(self.orders)]
        self.sorted_weights = [self.weights[order] for order in self.orders]
        self.unit = bool(np.all(self.weights == 1))

    def seed_plus_plus(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """k-means++ seeding: each next center drawn with probability ``weight * d^2``."""
        n = len(self.wh)
        first = _draw(rng, self.weights)
        chosen = [first]
        distance = 1.0 - self.assigner.iou_one(self.wh[first])
        for _ in range(1, k):
            score = self.weights * distance ** 2
            if score.sum() <= 0:  # every box sits on a center: take any unused row
                unused = np.setdiff1d(np.arange(n), chosen)
                index = int(unused[0])
            else:
                index = _draw(rng, score)
            chosen.append(index)
            new = 1.0 - self.assigner.iou_one(self.wh[index])
            np.minimum(distance, new, out=distance)
        return self.wh[chosen].astype(np.float64)

    def centers(self, labels: np.ndarray, k: int, center: str) -> np.ndarray:
        """``(k, 2)`` centers of the clusters (NaN rows for empty clusters)."""
        counts = np.bincount(labels, weights=self.weights, minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            if center == "mean":
                return np.stack([np.bincount(labels, weights=self.weights * self.wh[:, axis],
                                             minlength=k) / counts for axis in (0, 1)], 1)
        return np.stack([self._median(labels, k, axis, counts) for axis in (0, 1)], 1)

    def _median(self, labels: np.ndarray, k: int, axis: int,
                counts: np.ndarray) -> np.ndarray:
        """Weighted per-cluster median along ``axis``, as ``np.median`` of the expanded data.

        The rows, presorted by value, are grouped by cluster with a stable sort of the
        labels (linear time for small integers), so each group stays sorted by value.
        """
        order = self.orders[axis]
        group_order = np.argsort(labels[order].astype(np.int16), kind="stable")
        values = self.sorted_values[axis][group_order]
        medians = np.full(k, np.nan)
        present = counts > 0
        if self.unit:
            sizes = counts.astype(np.intp)
            starts = np.cumsum(sizes) - sizes
            low = starts + (sizes - 1) // 2
            high = starts + sizes // 2
            medians[present] = (values[low[present]] + values[high[present]]) / 2
            return medians
        cumulative = np.cumsum(self.sorted_weights[axis][group_order])
        ends = np.cumsum(counts)
        halves = ends - counts / 2
        # The lower and upper middle elements of each expanded group (equal when odd).
        low = np.searchsorted(cumulative, halves, side="left")
        high = np.searchsorted(cumulative, halves, side="right")
        high = np.minimum(high, len(values) - 1)
        medians[present] = (values[low[present]] + values[high[present]]) / 2
        return medians

    def lloyd(self, centers: np.ndarray, center: str, max_iter: int,
              change_tol: float = CHANGE_TOL) -> tuple[np.ndarray, float, int, bool]:
        """Alternate center updates and assignments until (almost) no box changes cluster.

        Stops when at most ``change_tol`` of the boxes (by weight) changed cluster in
        the last assignment, or after ``max_iter`` center updates.

        The assignment skips boxes that provably keep their cluster (Hamerly's bounds,
        for IoU): when every side of anchor ``c`` changes by a factor within
        ``exp(+-d_c)``, every IoU with it changes by a factor within ``exp(+-4 d_c)``
        (the union grows at most like the box scaled by ``exp(d_c)``, the intersection
        shrinks at most like it scaled by ``exp(-d_c)``). A box keeps its label while a
        lower bound of its own IoU exceeds an upper bound of every other IoU; the other
        boxes are assigned exactly, so the labels equal a full assignment's.

        Returns:
            ``(centers (k, 2) float64, mean IoU, center updates, converged)``.
        """
        k = len(centers)
        centers = np.asarray(centers, dtype=np.float64)
        labels, lower, upper = self.assigner.top2(centers)
        lower, upper = lower.astype(np.float64), upper.astype(np.float64)
        converged, iteration = False, 0
        for iteration in range(1, max_iter + 1):
            new = self.centers(labels, k, center)
            empty = np.isnan(new[:, 0])
            if empty.any():
                new[empty] = self._worst_fits(lower, int(empty.sum()))
            drift = np.abs(np.log(new / centers)).max(axis=1)  # (k,) log size change
            centers = new
            lower *= np.exp(-IOU_DRIFT_POWER * drift)[labels]
            upper *= np.exp(IOU_DRIFT_POWER * drift.max())
            stale = np.flatnonzero(lower * (1 - BOUND_SLACK) <= upper)
            changed = 0.0
            if len(stale):
                fresh, best, second = self.assigner.top2(centers, stale)
                moved = fresh != labels[stale]
                changed = float(self.weights[stale[moved]].sum())
                labels[stale], lower[stale], upper[stale] = fresh, best, second
            if changed <= change_tol * self.total:
                converged = True
                break
        iou = self.assigner.assign(centers)[1]
        return centers, self._mean(iou), iteration, converged

    def refine_iou(self, centers: np.ndarray, sweeps: int) -> tuple[np.ndarray, float]:
        """Raise the mean IoU directly: per sweep, assign, then for each cluster move its
        width, then its height, to the value maximizing the summed IoU of its boxes.

        Each 1-D maximization is a golden-section search in log size within
        ``exp(+-GOLDEN_RADIUS)`` of the current value, run for all clusters at once; a
        move is kept only when it raises the cluster's summed IoU, and reassignment can
        only raise it further, so the mean IoU never decreases.

        Returns:
            ``(centers (k, 2) float64, mean IoU)``.
        """
        centers = np.asarray(centers, dtype=np.float64).copy()
        labels, iou = self.assigner.assign(centers)
        score = self._mean(iou)
        for _ in range(sweeps):
            for axis in (0, 1):
                centers = self._golden_axis(labels, centers, axis)
            labels, iou = self.assigner.assign(centers)
            new_score = self._mean(iou)
            if new_score - score <= REFINE_TOL:
                score = max(score, new_score)
                break
            score = new_score
        return centers, score

    def _golden_axis(self, labels: np.ndarray, centers: np.ndarray, axis: int) -> np.ndarray:
        """Golden-section search of every cluster's size along ``axis`` (see refine_iou).

        The boxes are grouped by cluster once, so that each trial broadcasts the trial
        sizes with ``np.repeat`` and sums clusters with ``np.add.reduceat``.
        """
        k = len(centers)
        order = np.argsort(labels.astype(np.int16), kind="stable")
        counts = np.bincount(labels, minlength=k)
        present = counts > 0
        starts = (np.cumsum(counts) - counts)[present]
        sides = np.take(self.assigner.sides, order, axis=1)   # (2, N) grouped by cluster
        moving = sides[axis]
        fixed_side = np.repeat(centers[:, 1 - axis].astype(np.float32), counts)
        fixed_min = np.minimum(sides[1 - axis], fixed_side)
        area = sides[0] * sides[1]
        weights = None if self.unit else self.weights[order]

        def score(log_size: np.ndarray) -> np.ndarray:
            # wh_iou of each box with its own cluster's trial size, the fixed side's
            # min and the areas computed once for all trials (the refinement's hot loop).
            side = np.repeat(np.exp(log_size).astype(np.float32), counts)
            inter = np.minimum(moving, side)
            inter *= fixed_min
            union = side * fixed_side
            union += area
            union -= inter
            inter /= union
            if weights is not None:
                inter = inter * weights
            sums = np.zeros(k)
            sums[present] = np.add.reduceat(inter.astype(np.float64), starts)
            return sums

        current = np.log(centers[:, axis])
        low, high = current - GOLDEN_RADIUS, current + GOLDEN_RADIUS
        x1, x2 = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
        f1, f2 = score(x1), score(x2)
        for _ in range(GOLDEN_STEPS):
            right = f2 > f1  # the maximum lies in [x1, high]: drop [low, x1]
            low, high = np.where(right, x1, low), np.where(right, high, x2)
            probe = np.where(right, low + GOLDEN * (high - low), high - GOLDEN * (high - low))
            value = score(probe)
            x1, f1, x2, f2 = (np.where(right, x2, probe), np.where(right, f2, value),
                              np.where(right, probe, x1), np.where(right, value, f1))
        candidate = np.where(f2 > f1, x2, x1)
        gain = np.maximum(f1, f2) > score(current)
        out = centers.copy()
        out[gain, axis] = np.exp(candidate[gain])
        return out

    def _worst_fits(self, iou: np.ndarray, count: int) -> np.ndarray:
        """Sizes of the ``count`` boxes with the lowest (bound on their) best IoU.

        Used to re-seed empty clusters.
        """
        worst = np.argsort(iou, kind="stable")[:count]
        return self.wh[worst].astype(np.float64)

    def _mean(self, iou: np.ndarray) -> float:
        return _weighted_sum(iou, self.weights) / self.total


def _weighted_sum(values: np.ndarray, weights: np.ndarray) -> float:
    """``sum(values * weights)`` in float64 by NumPy's pairwise sum, not ``np.dot``: BLAS
    starts threads for a long vector (milliseconds on a busy machine, per call) and its
    sum order may depend on the thread count."""
    return float(np.sum(np.multiply(values, weights, dtype=np.float64)))


def _draw(rng: np.random.Generator, scores: np.ndarray) -> int:
    """Index drawn with probability proportional to ``scores`` (non-negative)."""
    cumulative = np.cumsum(scores, dtype=np.float64)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, len(scores) - 1)


def _check_options(k: int, restarts: int, center: str, max_iter: int) -> None:
    if k < 1:
        raise UsageError(f"--k must be at least 1, got {k}")
    if restarts < 1:
        raise UsageError(f"--restarts must be at least 1, got {restarts}")
    if max_iter < 1:
        raise UsageError(f"max_iter must be at least 1, got {max_iter}")
    if center not in CENTERS:
        raise UsageError(f"--center must be one of {', '.join(CENTERS)}, got {center!r}")


def iou_kmeans(wh: np.ndarray, k: int, *, seed: int = 0, restarts: int = DEFAULT_RESTARTS,
               center: str = "median", max_iter: int = DEFAULT_MAX_ITER,
               refine: int = DEFAULT_REFINE, sample_size: int = SAMPLE_SIZE) -> KMeansResult:
    """Cluster box sizes into ``k`` anchors with the ``1 - IoU`` distance.

    Each restart seeds with k-means++ and runs Lloyd iterations on a seeded subsample of
    at most ``sample_size`` boxes; the restart with the highest mean IoU is then iterated
    on all boxes (at most :data:`POLISH_ITER` times, stopping early when (almost) no box
    changes cluster), and finally ``refine`` sweeps move each center to the size that
    maximizes its boxes' summed IoU (median and mean centers only approximate that
    optimum).

    Args:
        wh: ``(N, 2)`` positive box sizes in input pixels.
        k: number of anchors.
        seed: random seed; the same seed and data give the same anchors, bit for bit.
        restarts: independent seeded runs; the best mean IoU wins.
        center: ``"median"`` (keras-yolo3, robust) or ``"mean"`` cluster centers.
        max_iter: Lloyd iterations at most, per run and on all boxes.
        refine: IoU-maximizing sweeps at most (0: plain median or mean centers).
        sample_size: restarts use at most this many boxes (0: all boxes).

    Returns:
        a :class:`KMeansResult` with anchors sorted by area.

    Raises:
        DataError: no boxes, or sizes that are not positive.
        UsageError: bad option values, or ``k`` above the number of distinct sizes.
    """
    _check_options(k, restarts, center, max_iter)
    if refine < 0:
        raise UsageError(f"refine must be 0 or more sweeps, got {refine}")
    wh = check_sizes(wh)
    if not len(wh):
        raise DataError("no boxes to cluster")
    unique, counts = unique_sizes(wh)
    if len(unique) < k:
        raise UsageError(f"--k {k} is more anchors than the boxes have distinct sizes "
                         f"({len(unique)} among {len(wh)} boxes): lower --k")
    rng = np.random.default_rng(seed)
    full = _Clusterer(unique, counts)
    if sample_size and len(wh) > sample_size:
        sample = wh[np.sort(rng.choice(len(wh), sample_size, replace=False))]
        sample_unique, sample_counts = unique_sizes(sample)
        search = _Clusterer(sample_unique, sample_counts) if len(sample_unique) >= k else full
    else:
        search = full
    best = None
    for _ in range(restarts):
        start = search.seed_plus_plus(k, rng)
        tol = SEARCH_CHANGE_TOL if search is not full else CHANGE_TOL
        run = search.lloyd(start, center, max_iter, tol)
        if best is None or run[1] > best[1]:
            best = run
    centers, _, iterations, converged = best
    if search is not full:
        centers, _, more, _ = full.lloyd(centers, center, min(max_iter, POLISH_ITER))
        iterations += more
    if refine:
        centers, _ = full.refine_iou(centers, refine)
    anchors = sort_by_area(centers).astype(np.float64)
    # Sorting rounds to float32 like the files; measure the anchors returned.
    labels_iou = full.assigner.assign(anchors)[1]
    return KMeansResult(anchors=anchors, avg_iou=full._mean(labels_iou),
                        iterations=iterations, converged=converged, restarts=restarts)


# ----------------------------------------------------------------------------- evolution


def anchor_fitness(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = DEFAULT_ANCHOR_T,
                   weights: Optional[np.ndarray] = None) -> float:
    """YOLOv5's fitness: mean best ratio metric, boxes without a fitting anchor count 0."""
    return _RatioFitness(wh, weights, anchor_t)(anchors)


class _RatioFitness:
    """Fitness of anchors on fixed sizes, computed in log space without ``(N, k)`` arrays.

    ``min(w/a, a/w) = exp(-|log w - log a|)``, so the best ratio metric of a box is
    ``exp(-min_k max(|log w - log a_w|, |log h - log a_h|))``.
    """

    def __init__(self, wh: np.ndarray, weights: Optional[np.ndarray], anchor_t: float):
        if anchor_t <= 1:
            raise UsageError(f"--anchor-t must be greater than 1, got {anchor_t}")
        wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
        self.log_w, self.log_h = np.log(wh[:, 0]), np.log(wh[:, 1])
        self.weights = (np.ones(len(wh)) if weights is None
                        else np.asarray(weights, dtype=np.float64))
        self.total = float(self.weights.sum())
        self.max_log_ratio = np.log(anchor_t)
        self.gap = np.empty_like(self.log_w)
        self.other = np.empty_like(self.log_w)

    def __call__(self, anchors: np.ndarray) -> float:
        logs = np.log(np.asarray(anchors, dtype=np.float64).reshape(-1, 2))
        nearest = np.full_like(self.log_w, np.inf)
        gap, other = self.gap, self.other
        for log_aw, log_ah in logs:
            np.subtract(self.log_w, log_aw, out=gap)
            np.abs(gap, out=gap)
            np.subtract(self.log_h, log_ah, out=other)
            np.abs(other, out=other)
            np.maximum(gap, other, out=gap)
            np.minimum(nearest, gap, out=nearest)
        # best > 1 / anchor_t  <=>  nearest log ratio < log(anchor_t)
        best = np.where(nearest < self.max_log_ratio, np.exp(-nearest), 0.0)
        return _weighted_sum(best, self.weights) / self.total


def evolve_anchors(wh: np.ndarray, anchors: np.ndarray, generations: int, *, seed: int = 0,
                   anchor_t: float = DEFAULT_ANCHOR_T,
                   min_size: float = MIN_BOX_SIZE) -> EvolveResult:
    """Refine anchors by random multiplicative mutations kept only when fitness improves.

    Each generation multiplies a random subset (probability :data:`MUTATION_PROB`) of the
    ``2k`` sizes by ``1 + s * N(0, 1) * MUTATION_SIGMA`` (``s`` uniform per generation),
    clipped to :data:`MUTATION_RANGE`, with sizes kept at least ``min_size`` pixels.

    Args:
        wh: ``(N, 2)`` box sizes in input pixels.
        anchors: ``(k, 2)`` starting anchors (e.g. from :func:`iou_kmeans`).
        generations: mutations to try (0 returns the anchors unchanged).
        seed: random seed.
        anchor_t: side-ratio threshold of the fitness.
        min_size: smallest anchor side in pixels.
    """
    if generations < 0:
        raise UsageError(f"generations must be 0 or more, got {generations}")
    unique, counts = unique_sizes(check_sizes(wh))
    fitness_of = _RatioFitness(unique, counts, anchor_t)
    current = np.asarray(anchors, dtype=np.float64).reshape(-1, 2).copy()
    fitness = start = fitness_of(current)
    rng = np.random.default_rng(seed)
    accepted = 0
    for _ in range(generations):
        factors = np.ones_like(current)
        while np.all(factors == 1):  # draw again until something changes
            mutate = rng.random(current.shape) < MUTATION_PROB
            step = rng.random() * rng.standard_normal(current.shape) * MUTATION_SIGMA
            factors = np.clip(mutate * step + 1, *MUTATION_RANGE)
        candidate = np.maximum(current * factors, min_size)
        candidate_fitness = fitness_of(candidate)
        if candidate_fitness > fitness:
            current, fitness = candidate, candidate_fitness
            accepted += 1
    return EvolveResult(anchors=sort_by_area(current).astype(np.float64), fitness=fitness,
                        start_fitness=start, accepted=accepted, generations=generations)
