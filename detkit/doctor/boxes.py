"""A dataset's boxes as flat columns, letterboxed as training sees them, and their statistics.

Everything after :func:`box_table` (one pass over the records to concatenate their arrays)
is NumPy on whole columns: no loop runs per box. Letterboxing uses
:class:`detkit.data.letterbox.Letterbox` once per distinct image size and broadcasts its
scale and offset, so the input-pixel boxes, the clipped and the dropped boxes are exactly
those of :func:`detkit.data.letterbox.letterbox_records` (which encode-labels and training
use).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from detkit.data.letterbox import MIN_BOX_PIXELS, Letterbox
from detkit.data.records import ImageRecord

#: Percentiles reported for a distribution, by name.
PERCENTILES = {"min": 0, "p5": 5, "p25": 25, "median": 50, "p75": 75, "p95": 95, "max": 100}
#: COCO's size classes, applied to the box area at the input size (pixels squared).
SMALL_AREA, LARGE_AREA = 32 ** 2, 96 ** 2
#: Boundaries of the aspect histogram as log2(w / h); the outer edges are +-log2(input
#: size), the most extreme aspect a box of at least one pixel can have in the input.
ASPECT_EDGES_LOG2 = (-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0)
#: Decimals of the figures written to the report.
DECIMALS = 4


def rounded(value: float) -> float | None:
    """``value`` rounded for the report (``None`` for NaN)."""
    value = float(value)
    return None if math.isnan(value) else round(value, DECIMALS)


@dataclasses.dataclass
class BoxTable:
    """All boxes of a dataset, flat, with the images they belong to.

    Attributes:
        widths, heights: ``(M,)`` int64 image sizes in pixels (as the reader has them).
        counts: ``(M,)`` int64 boxes of each image.
        owner: ``(N,)`` int64 image index of each box.
        boxes: ``(N, 4)`` float32 xyxy image pixels (after the reader's repairs).
        classes: ``(N,)`` int64 class ids.
        crowd, difficult: ``(N,)`` bool flags (COCO ``iscrowd``, VOC ``difficult``).
    """

    widths: np.ndarray
    heights: np.ndarray
    counts: np.ndarray
    owner: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    crowd: np.ndarray
    difficult: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.counts)

    @property
    def num_boxes(self) -> int:
        return len(self.owner)


def box_table(records: Sequence[ImageRecord]) -> BoxTable:
    """Concatenate the records' boxes, classes and flags into one :class:`BoxTable`.

    Records hold ``(N, 4)`` float32 boxes and ``(N,)`` classes, difficult and crowd
    arrays (:class:`ImageRecord` makes them so), concatenated as they are.
    """
    m = len(records)
    counts = np.fromiter((len(r.boxes) for r in records), np.int64, m)
    widths = np.fromiter((r.width or 0 for r in records), np.int64, m)
    heights = np.fromiter((r.height or 0 for r in records), np.int64, m)
    n = int(counts.sum())

    def column(name: str, dtype, shape: tuple[int, ...]) -> np.ndarray:
        if not n:
            return np.zeros(shape, dtype)
        return np.concatenate([getattr(r, name) for r in records]).astype(dtype, copy=False)

    return BoxTable(
        widths=widths, heights=heights, counts=counts,
        owner=np.repeat(np.arange(m, dtype=np.int64), counts),
        boxes=column("boxes", np.float32, (0, 4)).reshape(-1, 4),
        classes=column("classes", np.int64, (0,)), crowd=column("iscrowd", bool, (0,)),
        difficult=column("difficult", bool, (0,)))


@dataclasses.dataclass
class Letterboxed:
    """The boxes of a :class:`BoxTable` in a ``size x size`` letterboxed input.

    Attributes:
        boxes: ``(N, 4)`` float32 xyxy input pixels, clipped to ``[0, size]``.
        kept: ``(N,)`` bool, both sides at least :data:`MIN_BOX_PIXELS` (training keeps
            them; the others are dropped by :func:`~detkit.data.letterbox.letterbox_records`).
        clipped: ``(N,)`` bool, kept boxes that the clip to the input changed.
        size: the input side.
    """

    boxes: np.ndarray
    kept: np.ndarray
    clipped: np.ndarray
    size: int

    @property
    def wh(self) -> np.ndarray:
        """``(N, 2)`` float32 widths and heights of all boxes (input pixels)."""
        return self.boxes[:, 2:] - self.boxes[:, :2]


def letterbox_table(table: BoxTable, size: int) -> Letterboxed:
    """Map every box into the letterboxed input, as :func:`letterbox_records` does.

    Images without a positive size have no boxes (the readers drop boxes outside the
    image), so they need no mapping.
    """
    valid = (table.widths > 0) & (table.heights > 0)
    keys = table.widths * (1 << 32) + table.heights
    distinct, inverse = np.unique(np.where(valid, keys, -1), return_inverse=True)
    scale = np.zeros((len(distinct), 4), np.float32)
    offset = np.zeros((len(distinct), 4), np.float32)
    for row, key in enumerate(distinct.tolist()):
        if key < 0:
            continue
        box = Letterbox(key >> 32, key & 0xFFFFFFFF, size)
        (sx, sy), (dx, dy) = box.scale_xy, box.offset
        scale[row] = np.float32([sx, sy, sx, sy])
        offset[row] = np.float32([dx, dy, dx, dy])
    per_box = inverse.reshape(-1)[table.owner]
    mapped = table.boxes * scale[per_box] + offset[per_box]
    clipped = np.clip(mapped, 0, size)
    kept = np.all(clipped[:, 2:] - clipped[:, :2] >= MIN_BOX_PIXELS, axis=1)
    changed = np.any(clipped != mapped, axis=1)
    return Letterboxed(boxes=clipped, kept=kept, clipped=changed & kept, size=size)


def distribution(values: np.ndarray) -> dict[str, float | None]:
    """Percentiles (:data:`PERCENTILES`) and mean of ``values`` (all ``None`` if empty)."""
    values = np.asarray(values, np.float64).reshape(-1)
    if not len(values):
        return {**{name: None for name in PERCENTILES}, "mean": None}
    points = np.percentile(values, list(PERCENTILES.values()))
    return {**{name: rounded(p) for name, p in zip(PERCENTILES, points)},
            "mean": rounded(values.mean())}


def side_edges(size: int) -> np.ndarray:
    """Edges of the box-side histogram: 0, 2, 4, 8, ... up to the first power of two
    at or above ``size`` (a side never exceeds the input side)."""
    top = max(1, math.ceil(math.log2(size)))
    return np.array([0.0] + [2.0 ** k for k in range(1, top + 1)])


def aspect_edges(size: int) -> np.ndarray:
    """Edges of the aspect histogram in log2(w / h) (see :data:`ASPECT_EDGES_LOG2`)."""
    outer = max(math.log2(size), ASPECT_EDGES_LOG2[-1] + 1.0)
    return np.array([-outer, *ASPECT_EDGES_LOG2, outer])


def histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts of ``values`` in the bins of ``edges`` (the last bin closed)."""
    counts, _ = np.histogram(np.asarray(values, np.float64), bins=edges)
    return counts.astype(int).tolist()


def group_medians(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups,)`` float64 median of ``values`` within each group id (NaN if empty)."""
    values = np.asarray(values, np.float64)
    counts = np.bincount(groups, minlength=n_groups)
    order = np.lexsort((values, groups))
    ordered = values[order]
    starts = np.cumsum(counts) - counts
    low = starts + np.maximum(counts - 1, 0) // 2
    high = starts + counts // 2
    medians = np.full(n_groups, np.nan)
    has = counts > 0
    medians[has] = (ordered[low[has]] + ordered[high[has]]) / 2
    return medians


def size_statistics(wh: np.ndarray, size: int) -> dict[str, Any]:
    """Distributions and histograms of ``(N, 2)`` input-pixel box sizes."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    area = wh[:, 0] * wh[:, 1]
    side = np.sqrt(area)
    log_aspect = np.log2(wh[:, 0] / wh[:, 1]) if len(wh) else np.zeros(0)
    s_edges, a_edges = side_edges(size), aspect_edges(size)
    return {
        "width": distribution(wh[:, 0]),
        "height": distribution(wh[:, 1]),
        "side": distribution(side),
        "aspect": distribution(2.0 ** log_aspect),
        "area_classes": {"small": int((area < SMALL_AREA).sum()),
                         "medium": int(((area >= SMALL_AREA) & (area < LARGE_AREA)).sum()),
                         "large": int((area >= LARGE_AREA).sum())},
        "side_histogram": {"edges": s_edges.tolist(), "counts": histogram(side, s_edges)},
        "aspect_histogram": {"edges": [rounded(2.0 ** e) for e in a_edges],
                             "counts": histogram(log_aspect, a_edges)},
    }


def class_statistics(table: BoxTable, boxed: Letterboxed, kept: np.ndarray,
                     class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class: boxes, share, images, median input size of the ``kept`` boxes
    (``(N,)`` bool: those training keeps), boxes the letterbox drops."""
    n_classes = len(class_names)
    classes = table.classes
    counts = np.bincount(classes, minlength=n_classes)
    pairs = np.sort(table.owner * max(n_classes, 1) + classes)   # (image, class) pairs
    first = np.diff(pairs, prepend=-1) != 0
    images = np.bincount(pairs[first] % max(n_classes, 1), minlength=n_classes)
    wh = boxed.wh[kept]
    med_w = group_medians(wh[:, 0], classes[kept], n_classes)
    med_h = group_medians(wh[:, 1], classes[kept], n_classes)
    dropped = np.bincount(classes[~boxed.kept], minlength=n_classes)
    total = max(int(counts.sum()), 1)
    return [{"id": c, "name": str(class_names[c]), "boxes": int(counts[c]),
             "share": rounded(counts[c] / total), "images": int(images[c]),
             "median_w": rounded(med_w[c]), "median_h": rounded(med_h[c]),
             "dropped": int(dropped[c])} for c in range(n_classes)]


def image_size_statistics(table: BoxTable, top: int = 5) -> dict[str, Any]:
    """Distinct image sizes, their range and the most common ones."""
    valid = (table.widths > 0) & (table.heights > 0)
    keys = table.widths[valid] * (1 << 32) + table.heights[valid]
    distinct, counts = np.unique(keys, return_counts=True)
    order = np.lexsort((distinct, -counts))[:top]
    return {
        "distinct": int(len(distinct)),
        "invalid": int((~valid).sum()),
        "width": distribution(table.widths[valid]),
        "height": distribution(table.heights[valid]),
        "most_common": [[int(distinct[i] >> 32), int(distinct[i] & 0xFFFFFFFF),
                         int(counts[i])] for i in order.tolist()],
    }


def unit_range_boxes(table: BoxTable) -> int:
    """Boxes whose coordinates all lie in ``[0, 1]`` inside images larger than
    :data:`UNIT_IMAGE_MIN` pixels: normalized coordinates given where pixels belong."""
    boxes = table.boxes
    big = ((table.widths > UNIT_IMAGE_MIN) & (table.heights > UNIT_IMAGE_MIN))[table.owner]
    inside = (boxes.min(axis=1, initial=np.inf) >= 0) & (boxes.max(axis=1, initial=-np.inf)
                                                         <= 1.0)
    return int((inside & big).sum())


#: :func:`unit_range_boxes` looks at images with both sides above this (pixels).
UNIT_IMAGE_MIN = 4
