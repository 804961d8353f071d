"""Label assignment: ground-truth boxes -> training targets, in NumPy.

Three encoders, each vectorized over the batch and the boxes (no Python loop over boxes):

* :func:`encode_yolov3` - multi-scale YOLOv3 targets in a compact layout: per scale a
  ``(B, S/stride, S/stride, 3, 6)`` float32 array whose last axis is ``(cx, cy, w, h,
  objectness, class)``, the box normalized to ``[0, 1]`` of the input, objectness 0/1 and
  the class index as a float (``-1`` where the slot is empty).
* :func:`encode_yolov2` - one grid, anchors in grid units: a detector mask and
  ``(x - j, y - i, log(w / a_w), log(h / a_h), class)`` targets.
* :func:`encode_anchor_targets` - IoU matching of boxes to fixed anchors
  (RetinaNet / RPN heads): positives, negatives, ignored anchors and box deltas.

Inputs are batches: ``boxes`` ``(B, M, 4)`` float xyxy in input pixels and ``classes``
``(B, M)`` int with ``-1`` marking padded rows. Boxes are clipped to the input; padded
rows, boxes of zero size (or non-finite) and, when ``num_classes`` is given, out-of-range
classes are skipped and counted in the returned stats. When two boxes compete for one
target slot the larger anchor IoU wins (ties: the lower box index) and the collision is
counted. The inverse transforms (in ``keras.ops``) live in :mod:`detkit.decode`.

The YOLOv3 cell is that of the exact (float64) box centre, so a centre on a cell border
lands in the cell it starts; the stored float32 normalized centre then gives a cell offset
``x * grid - col`` within ``[0, 1]`` up to float32 rounding (about ``1e-6``).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Iterator, Optional, Sequence

import numpy as np

from detkit.anchors import ANCHORS_PER_SCALE, anchor_masks, strides
from detkit.boxes import iou_matrix, wh_iou
from detkit.errors import UsageError

#: Number of values per slot of the compact YOLOv3 targets: cx, cy, w, h, obj, class.
YOLOV3_TARGET_SIZE = 6
#: Index of the objectness value in the compact YOLOv3 / YOLOv2 targets.
OBJECTNESS = 4
#: Index of the class value in the compact YOLOv3 targets.
CLASS = 5
#: Class value of an empty slot in the compact targets (and of a padded input row).
EMPTY_CLASS = -1
#: Values per slot of the YOLOv2 targets: x - j, y - i, log(w/a_w), log(h/a_h), class.
YOLOV2_TARGET_SIZE = 5
#: Output stride of the YOLOv2 grid (13 x 13 at 416).
YOLOV2_STRIDE = 32

#: Anchor-matching labels: an anchor that overlaps no box enough (a background sample).
NEGATIVE = -1
#: Anchor-matching labels: an anchor between the thresholds, left out of the loss.
IGNORED = -2


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class EncodeStats:
    """What happened to the boxes of one or more batches (add two with ``+``).

    Attributes:
        boxes: non-padding input rows seen.
        padding: padded rows (class ``-1``), skipped.
        degenerate: boxes of zero or negative size, or non-finite, dropped.
        clipped: boxes that reached outside the input and were clipped to it.
        bad_class: boxes whose class is outside ``[0, num_classes)``, dropped.
        assigned: boxes that received at least one target slot.
        lost: valid boxes that lost every slot they competed for (collisions).
        collisions: (box, slot) candidates that lost their slot to a larger IoU.
        assignments: target slots filled.
        per_anchor: ``(K,)`` int64, slots filled per anchor.
    """

    boxes: int = 0
    padding: int = 0
    degenerate: int = 0
    clipped: int = 0
    bad_class: int = 0
    assigned: int = 0
    lost: int = 0
    collisions: int = 0
    assignments: int = 0
    per_anchor: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(0, np.int64))

    def __add__(self, other: "EncodeStats") -> "EncodeStats":
        merged = {f.name: getattr(self, f.name) + getattr(other, f.name)
                  for f in dataclasses.fields(self) if f.name != "per_anchor"}
        a, b = self.per_anchor, other.per_anchor
        if len(a) < len(b):
            a, b = b, a
        per_anchor = a.astype(np.int64).copy()
        per_anchor[:len(b)] += b
        return EncodeStats(**merged, per_anchor=per_anchor)

    @property
    def dropped(self) -> dict[str, int]:
        """Boxes that got no target, by reason (only reasons with a count)."""
        reasons = {"degenerate (zero size or non-finite)": self.degenerate,
                   "class out of range": self.bad_class,
                   "lost every slot to a larger-IoU box": self.lost}
        return {reason: count for reason, count in reasons.items() if count}

    def per_scale(self, masks: Sequence[Sequence[int]]) -> list[int]:
        """Slots filled per output scale, in the order of ``masks``."""
        counts = np.zeros(max(max(m) for m in masks) + 1, np.int64)
        counts[:len(self.per_anchor)] = self.per_anchor
        return [int(counts[list(mask)].sum()) for mask in masks]

    def to_dict(self) -> dict:
        """JSON-friendly copy."""
        out = {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)
               if f.name != "per_anchor"}
        out["per_anchor"] = [int(c) for c in self.per_anchor]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "EncodeStats":
        """Inverse of :meth:`to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: int(v) for k, v in data.items() if k in fields and k != "per_anchor"}
        return cls(**values, per_anchor=np.asarray(data.get("per_anchor", []), np.int64))


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class _ValidBoxes:
    """The usable boxes of a batch, flattened: ``N`` rows."""

    image: np.ndarray   # (N,) int64 batch index
    index: np.ndarray   # (N,) int64 row index within the image
    xyxy: np.ndarray    # (N, 4) float64 input pixels, clipped
    classes: np.ndarray  # (N,) int64
    batch_size: int
    stats: EncodeStats


def _check_batch(boxes: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes)
    classes = np.asarray(classes)
    if boxes.ndim == 2 and classes.ndim == 1:  # one image
        boxes, classes = boxes[None], classes[None]
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, M, 4), got shape {boxes.shape}")
    if classes.shape != boxes.shape[:2]:
        raise ValueError(f"classes must be (B, M) = {boxes.shape[:2]}, "
                         f"got shape {classes.shape}")
    return boxes.astype(np.float64), classes.astype(np.int64)


def _valid_boxes(boxes: np.ndarray, classes: np.ndarray,
                 size: Optional[tuple[float, float]],
                 num_classes: Optional[int]) -> _ValidBoxes:
    """Clip to ``size = (width, height)`` (None: no clipping) and keep the usable rows,
    counting the rest."""
    boxes, classes = _check_batch(boxes, classes)
    real = classes >= 0
    finite = np.isfinite(boxes).all(axis=-1)
    width, height = size if size is not None else (np.inf, np.inf)
    limits = np.array([width, height, width, height], np.float64)
    clipped = np.clip(np.where(finite[..., None], boxes, 0.0), 0.0, limits)
    was_clipped = real & finite & np.any(clipped != boxes, axis=-1)
    positive = finite & (clipped[..., 2] > clipped[..., 0]) & (clipped[..., 3] > clipped[..., 1])
    good_class = classes < num_classes if num_classes is not None else np.ones_like(real)
    keep = real & positive & good_class
    image, index = np.nonzero(keep)
    stats = EncodeStats(
        boxes=int(real.sum()), padding=int((~real).sum()),
        degenerate=int((real & ~positive).sum()), clipped=int((was_clipped & positive).sum()),
        bad_class=int((real & positive & ~good_class).sum()))
    return _ValidBoxes(image, index, clipped[image, index], classes[image, index],
                       len(classes), stats)


def _first_per_slot(keys: np.ndarray, iou: np.ndarray,
                    box_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Resolve competition for slots: the larger IoU wins, ties go to the lower box id.

    Args:
        keys: ``(C,)`` int64 flat slot index of each candidate.
        iou: ``(C,)`` the candidate's anchor IoU.
        box_ids: ``(C,)`` int64 flat box id of each candidate.

    Returns:
        ``(winners, collisions)``: indices into the candidates, sorted by slot, one per
        distinct slot; and the number of candidates that lost.
    """
    order = np.lexsort((box_ids, -iou, keys))
    sorted_keys = keys[order]
    first = np.ones(len(order), bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    winners = order[first]
    return winners, len(order) - len(winners)


def _input_side(input_size: int, multiple: int) -> int:
    side = int(input_size)
    if side != input_size or side <= 0 or side % multiple:
        raise UsageError(f"input size must be a positive multiple of {multiple}, "
                         f"got {input_size}")
    return side


def _anchor_array(anchors: np.ndarray) -> np.ndarray:
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(anchors)) or np.any(anchors <= 0):
        raise UsageError(f"anchor sizes must be positive and finite, got {anchors.tolist()}")
    return anchors


# --------------------------------------------------------------------------------------
# YOLOv3
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Yolov3Assignment:
    """Sparse YOLOv3 targets: one row per filled slot, sorted by (scale, image, row, col).

    Attributes:
        image: ``(R,)`` int32 batch index.
        box: ``(R,)`` int32 index of the box within its image's rows.
        scale: ``(R,)`` int32 output scale (0 = coarsest stride).
        row, col: ``(R,)`` int32 grid cell.
        anchor: ``(R,)`` int32 global anchor index (``0..K-1``).
        slot: ``(R,)`` int32 anchor position within its scale (``0..2``).
        xywh: ``(R, 4)`` float32 box center and size normalized to the input.
        cls: ``(R,)`` int32 class index.
        iou: ``(R,)`` float32 centered IoU of the box with its anchor.
        batch_size: ``B``.
        grid_sizes: grid side per scale, coarsest first.
        stats: counts of boxes assigned, dropped and colliding.
    """

    image: np.ndarray
    box: np.ndarray
    scale: np.ndarray
    row: np.ndarray
    col: np.ndarray
    anchor: np.ndarray
    slot: np.ndarray
    xywh: np.ndarray
    cls: np.ndarray
    iou: np.ndarray
    batch_size: int
    grid_sizes: list[int]
    stats: EncodeStats

    def dense(self) -> list[np.ndarray]:
        """The compact dense targets: per scale ``(B, g, g, 3, 6)`` float32."""
        return densify_yolov3(self.image, self.scale, self.row, self.col, self.slot,
                              self.xywh, self.cls, self.batch_size, self.grid_sizes)


def densify_yolov3(image: np.ndarray, scale: np.ndarray, row: np.ndarray, col: np.ndarray,
                   slot: np.ndarray, xywh: np.ndarray, cls: np.ndarray, batch_size: int,
                   grid_sizes: Sequence[int]) -> list[np.ndarray]:
    """Scatter sparse rows into the compact dense YOLOv3 targets.

    Args:
        image, scale, row, col, slot: ``(R,)`` int indices of each filled slot.
        xywh: ``(R, 4)`` normalized box center and size.
        cls: ``(R,)`` class index.
        batch_size: ``B``; grid_sizes: grid side per scale, coarsest first.

    Returns:
        Per scale a ``(B, g, g, 3, 6)`` float32 array: ``(cx, cy, w, h, obj, class)``,
        zeros and class ``-1`` where empty.
    """
    values = np.empty((len(image), YOLOV3_TARGET_SIZE), np.float32)
    values[:, 0:4] = xywh
    values[:, OBJECTNESS] = 1.0
    values[:, CLASS] = cls
    outputs = []
    for level, grid in enumerate(grid_sizes):
        dense = np.zeros((batch_size, grid, grid, ANCHORS_PER_SCALE, YOLOV3_TARGET_SIZE),
                         np.float32)
        dense[..., CLASS] = EMPTY_CLASS  # (a strided fill is ~10x faster than a broadcast)
        here = scale == level
        dense[image[here], row[here], col[here], slot[here]] = values[here]
        outputs.append(dense)
    return outputs


def assign_yolov3(boxes: np.ndarray, classes: np.ndarray, anchors: np.ndarray,
                  input_size: int, multi_anchor_iou: Optional[float] = None,
                  num_classes: Optional[int] = None) -> Yolov3Assignment:
    """Assign boxes to YOLOv3 scales, cells and anchors (sparse result).

    Each box goes to its best anchor by centered ``(w, h)`` IoU; the anchor decides the
    scale (``detkit.anchors.anchor_masks``) and the slot. With ``multi_anchor_iou`` every
    other anchor whose IoU exceeds it is assigned too. The cell is
    ``floor(center / input_size * grid)`` of the exact center, kept inside the grid so a
    box on the right or bottom edge lands in the last cell.

    Args:
        boxes: ``(B, M, 4)`` xyxy in input pixels.
        classes: ``(B, M)`` int class ids, ``-1`` for padding.
        anchors: ``(K, 2)`` anchor sizes in input pixels, K a multiple of 3, sorted by area.
        input_size: input side in pixels, a multiple of 32.
        multi_anchor_iou: optional IoU above which extra anchors are assigned.
        num_classes: if given, boxes with a class ``>= num_classes`` are dropped.

    Returns:
        A :class:`Yolov3Assignment`.
    """
    anchors = _anchor_array(anchors)
    masks = anchor_masks(len(anchors))
    side = _input_side(input_size, max(strides(len(anchors))))
    grids = np.array([side // s for s in strides(len(anchors))], np.int64)
    anchor_scale = np.empty(len(anchors), np.int64)
    anchor_slot = np.empty(len(anchors), np.int64)
    for level, mask in enumerate(masks):
        anchor_scale[mask] = level
        anchor_slot[mask] = np.arange(len(mask))
    valid = _valid_boxes(boxes, classes, (side, side), num_classes)
    batch_size = valid.batch_size
    xyxy = valid.xyxy
    wh = xyxy[:, 2:] - xyxy[:, :2]
    center = (xyxy[:, :2] + xyxy[:, 2:]) / 2                          # (N, 2) float64 px
    xywh = (np.concatenate([center, wh], axis=1) / side).astype(np.float32)

    iou = wh_iou(wh, anchors)                                       # (N, K)
    n = len(iou)
    candidate = np.zeros(iou.shape, bool)
    if n:
        candidate[np.arange(n), iou.argmax(axis=1)] = True
    if multi_anchor_iou is not None:
        candidate |= iou > multi_anchor_iou
    box_i, anchor = np.nonzero(candidate)                            # (C,)
    level = anchor_scale[anchor]
    grid = grids[level]
    # The cell of the exact center: center * grid / side is one correctly rounded division
    # of exact products, so a center on a cell border lands in the cell it starts (a
    # float32 normalized value could fall a hair short of it). Kept inside the grid.
    cell = np.floor(center[box_i] * grid[:, None] / side)
    col = np.clip(cell[:, 0], 0, grid - 1).astype(np.int64)
    row = np.clip(cell[:, 1], 0, grid - 1).astype(np.int64)
    slot = anchor_slot[anchor]
    cells = grids ** 2 * batch_size * ANCHORS_PER_SCALE
    level_offset = np.concatenate([[0], np.cumsum(cells)[:-1]])
    image = valid.image[box_i]
    keys = (level_offset[level] +
            ((image * grid + row) * grid + col) * ANCHORS_PER_SCALE + slot)
    cand_iou = iou[box_i, anchor]
    winners, collisions = _first_per_slot(keys, cand_iou, box_i)

    won = box_i[winners]
    assigned = np.zeros(n, bool)
    assigned[won] = True
    stats = valid.stats
    stats.assigned = int(assigned.sum())
    stats.lost = int(n - assigned.sum())
    stats.collisions = int(collisions)
    stats.assignments = len(winners)
    stats.per_anchor = np.bincount(anchor[winners], minlength=len(anchors)).astype(np.int64)
    i32 = np.int32
    return Yolov3Assignment(
        image=image[winners].astype(i32), box=valid.index[won].astype(i32),
        scale=level[winners].astype(i32), row=row[winners].astype(i32),
        col=col[winners].astype(i32), anchor=anchor[winners].astype(i32),
        slot=slot[winners].astype(i32), xywh=xywh[won], cls=valid.classes[won].astype(i32),
        iou=cand_iou[winners].astype(np.float32), batch_size=int(batch_size),
        grid_sizes=[int(g) for g in grids], stats=stats)


@dataclasses.dataclass
class Yolov3Targets:
    """Dense compact YOLOv3 targets; iterates and indexes like the list of outputs.

    Attributes:
        outputs: per scale ``(B, g, g, 3, 6)`` float32, coarsest stride first.
        stats: what happened to the boxes.
        assignment: the sparse rows the outputs were built from.
    """

    outputs: list[np.ndarray]
    stats: EncodeStats
    assignment: Yolov3Assignment

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.outputs[index]


def encode_yolov3(boxes: np.ndarray, classes: np.ndarray, anchors: np.ndarray,
                  input_size: int, multi_anchor_iou: Optional[float] = None,
                  num_classes: Optional[int] = None) -> Yolov3Targets:
    """Compact dense YOLOv3 targets for a batch (see :func:`assign_yolov3`).

    Args:
        boxes: ``(B, M, 4)`` float xyxy in input pixels.
        classes: ``(B, M)`` int class ids, ``-1`` for padding.
        anchors: ``(K, 2)`` anchors in input pixels (9 for yolov3, 6 for yolov3-tiny).
        input_size: input side in pixels, a multiple of 32.
        multi_anchor_iou: optional IoU above which extra anchors are assigned.
        num_classes: if given, out-of-range classes are dropped and counted.

    Returns:
        :class:`Yolov3Targets` whose outputs are per scale ``(B, S/stride, S/stride, 3, 6)``
        float32: ``(cx, cy, w, h)`` normalized to the input, objectness 0/1, class index
        (``-1`` where empty).
    """
    assignment = assign_yolov3(boxes, classes, anchors, input_size, multi_anchor_iou,
                               num_classes)
    return Yolov3Targets(assignment.dense(), assignment.stats, assignment)


class Yolov3Encoder:
    """The YOLOv3 encoder as a callable for ``DetectionBatches(encoder=...)``.

    ``encoder(boxes (B, M, 4), classes (B, M))`` returns the tuple of per-scale targets;
    the counts of every call are added to :attr:`stats` (thread-safe).
    """

    def __init__(self, anchors: np.ndarray, input_size: int,
                 multi_anchor_iou: Optional[float] = None,
                 num_classes: Optional[int] = None):
        self.anchors = _anchor_array(anchors).astype(np.float32)
        self.input_size = _input_side(input_size, max(strides(len(self.anchors))))
        self.multi_anchor_iou = multi_anchor_iou
        self.num_classes = num_classes
        self.stats = EncodeStats(per_anchor=np.zeros(len(self.anchors), np.int64))
        self._lock = threading.Lock()

    def __call__(self, boxes: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, ...]:
        targets = encode_yolov3(boxes, classes, self.anchors, self.input_size,
                                self.multi_anchor_iou, self.num_classes)
        with self._lock:
            self.stats = self.stats + targets.stats
        return tuple(targets.outputs)


# --------------------------------------------------------------------------------------
# YOLOv2
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Yolov2Targets:
    """YOLOv2 targets of a batch.

    Attributes:
        mask: ``(B, G, G, K, 1)`` float32 detector mask, 1 where a box is assigned.
        targets: ``(B, G, G, K, 5)`` float32 ``(x - j, y - i, log(w / a_w), log(h / a_h),
            class)`` with x, y, w, h in grid units (zeros where the mask is 0).
        stats: what happened to the boxes.
    """

    mask: np.ndarray
    targets: np.ndarray
    stats: EncodeStats


def encode_yolov2(boxes: np.ndarray, classes: np.ndarray, anchors: np.ndarray,
                  input_size: int, stride: int = YOLOV2_STRIDE,
                  num_classes: Optional[int] = None) -> Yolov2Targets:
    """YOLOv2 (YAD2K-style) targets on one grid of side ``input_size / stride``.

    Each box goes to the cell ``(i, j) = (floor(y), floor(x))`` of its exact center in grid
    units (kept inside the grid) and to its best anchor by centered IoU. The log-size
    targets are negative for boxes smaller than their anchor; that is normal.

    Args:
        boxes: ``(B, M, 4)`` xyxy in input pixels.
        classes: ``(B, M)`` int class ids, ``-1`` for padding.
        anchors: ``(K, 2)`` anchor sizes in grid units (cells).
        input_size: input side in pixels, a multiple of ``stride``.
        stride: pixels per grid cell.
        num_classes: if given, out-of-range classes are dropped and counted.

    Returns:
        :class:`Yolov2Targets`.
    """
    anchors = _anchor_array(anchors)
    side = _input_side(input_size, stride)
    grid = side // stride
    valid = _valid_boxes(boxes, classes, (side, side), num_classes)
    batch_size = valid.batch_size
    box = valid.xyxy / stride                                      # grid units
    center = (box[:, :2] + box[:, 2:]) / 2
    wh = box[:, 2:] - box[:, :2]
    iou = wh_iou(wh, anchors)
    n = len(iou)
    best = iou.argmax(axis=1) if n else np.zeros(0, np.int64)
    best_iou = iou[np.arange(n), best]
    col = np.clip(np.floor(center[:, 0]), 0, grid - 1).astype(np.int64)
    row = np.clip(np.floor(center[:, 1]), 0, grid - 1).astype(np.int64)
    keys = ((valid.image * grid + row) * grid + col) * len(anchors) + best
    winners, collisions = _first_per_slot(keys, best_iou, np.arange(n))

    k = len(anchors)
    mask = np.zeros((batch_size, grid, grid, k, 1), np.float32)
    targets = np.zeros((batch_size, grid, grid, k, YOLOV2_TARGET_SIZE), np.float32)
    w = winners
    where = (valid.image[w], row[w], col[w], best[w])
    mask[where] = 1.0
    targets[where] = np.stack([
        center[w, 0] - col[w], center[w, 1] - row[w],
        np.log(wh[w, 0] / anchors[best[w], 0]), np.log(wh[w, 1] / anchors[best[w], 1]),
        valid.classes[w]], axis=1)
    stats = valid.stats
    stats.assigned = stats.assignments = len(w)
    stats.lost = n - len(w)
    stats.collisions = int(collisions)
    stats.per_anchor = np.bincount(best[w], minlength=k).astype(np.int64)
    return Yolov2Targets(mask, targets, stats)


# --------------------------------------------------------------------------------------
# Anchor matching (RetinaNet / RPN)
# --------------------------------------------------------------------------------------

#: Default IoU at or above which an anchor is a positive (RetinaNet).
DEFAULT_POS_IOU = 0.5
#: Default IoU below which an anchor is a negative (RetinaNet).
DEFAULT_NEG_IOU = 0.4
#: Default number of anchors the RPN balanced sampler keeps per image.
DEFAULT_NUM_SAMPLES = 256
#: Default fraction of the sampled anchors that may be positive.
DEFAULT_POSITIVE_FRACTION = 0.5


@dataclasses.dataclass
class MatchStats:
    """Counts of an anchor-matching run (add two with ``+``)."""

    boxes: int = 0
    padding: int = 0
    degenerate: int = 0
    clipped: int = 0
    bad_class: int = 0
    positives: int = 0
    negatives: int = 0
    ignored: int = 0
    forced: int = 0
    unmatched: int = 0

    def __add__(self, other: "MatchStats") -> "MatchStats":
        return MatchStats(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                             for f in dataclasses.fields(self)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class AnchorTargets:
    """Anchor-matching targets of a batch.

    Attributes:
        matches: ``(B, A)`` int32 index of the matched box row, or ``NEGATIVE`` /
            ``IGNORED``.
        labels: ``(B, A)`` int32 class of the matched box, or ``NEGATIVE`` / ``IGNORED``.
        deltas: ``(B, A, 4)`` float32 ``(ty, tx, th, tw)`` of positives (zeros elsewhere).
        max_iou: ``(B, A)`` float32 best IoU of each anchor with any box.
        stats: counts.
    """

    matches: np.ndarray
    labels: np.ndarray
    deltas: np.ndarray
    max_iou: np.ndarray
    stats: MatchStats


def encode_box_deltas(boxes: np.ndarray, anchors: np.ndarray,
                      scale_factors: Optional[Sequence[float]] = None) -> np.ndarray:
    """Box deltas of ``boxes`` relative to ``anchors`` (both ``(..., 4)`` xyxy).

    ``ty = s_y (cy - cy_a) / h_a``, ``tx = s_x (cx - cx_a) / w_a``,
    ``th = s_h log(h / h_a)``, ``tw = s_w log(w / w_a)``.

    Args:
        scale_factors: ``(s_y, s_x, s_h, s_w)``, e.g. ``(10, 10, 5, 5)``; None: all 1.

    Returns:
        ``(..., 4)`` float32 ``(ty, tx, th, tw)``.
    """
    boxes = np.asarray(boxes, np.float64)
    anchors = np.asarray(anchors, np.float64)
    h = boxes[..., 3] - boxes[..., 1]
    w = boxes[..., 2] - boxes[..., 0]
    ha = anchors[..., 3] - anchors[..., 1]
    wa = anchors[..., 2] - anchors[..., 0]
    cy = boxes[..., 1] + h / 2
    cx = boxes[..., 0] + w / 2
    cya = anchors[..., 1] + ha / 2
    cxa = anchors[..., 0] + wa / 2
    deltas = np.stack([(cy - cya) / ha, (cx - cxa) / wa, np.log(h / ha), np.log(w / wa)], -1)
    if scale_factors is not None:
        deltas = deltas * np.asarray(scale_factors, np.float64)
    return deltas.astype(np.float32)


def _rank_within(keys: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of each member of a row by ``keys``; non-members rank last."""
    order = np.argsort(np.where(member, keys, np.inf), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(order.shape[1]), order.shape),
                      axis=1)
    return ranks


def sample_balanced(labels: np.ndarray, num_samples: int = DEFAULT_NUM_SAMPLES,
                    positive_fraction: float = DEFAULT_POSITIVE_FRACTION,
                    rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """RPN sampler: keep at most ``num_samples`` anchors per image, at most a
    ``positive_fraction`` of them positive, the rest negative, chosen at random.

    Args:
        labels: ``(B, A)`` int labels (``>= 0`` positive, ``NEGATIVE``, ``IGNORED``).

    Returns:
        ``(B, A)`` labels with the anchors not sampled set to ``IGNORED``.
    """
    labels = np.asarray(labels)
    if num_samples <= 0 or not 0.0 <= positive_fraction <= 1.0:
        raise UsageError(f"need num_samples > 0 and 0 <= positive_fraction <= 1, got "
                         f"{num_samples} and {positive_fraction}")
    rng = rng if rng is not None else np.random.default_rng()
    positive = labels >= 0
    negative = labels == NEGATIVE
    num_pos = np.minimum(positive.sum(axis=1), int(num_samples * positive_fraction))
    num_neg = np.minimum(negative.sum(axis=1), num_samples - num_pos)
    keys = rng.random(labels.shape)
    keep = ((positive & (_rank_within(keys, positive) < num_pos[:, None])) |
            (negative & (_rank_within(keys, negative) < num_neg[:, None])))
    return np.where((positive | negative) & ~keep, IGNORED, labels).astype(labels.dtype)


def encode_anchor_targets(anchors: np.ndarray, boxes: np.ndarray, classes: np.ndarray, *,
                          pos_iou: float = DEFAULT_POS_IOU, neg_iou: float = DEFAULT_NEG_IOU,
                          force_match: bool = True,
                          scale_factors: Optional[Sequence[float]] = None,
                          image_size: Optional[tuple[float, float]] = None,
                          num_classes: Optional[int] = None,
                          num_samples: Optional[int] = None,
                          positive_fraction: float = DEFAULT_POSITIVE_FRACTION,
                          rng: Optional[np.random.Generator] = None) -> AnchorTargets:
    """Match boxes to fixed anchors by IoU (RetinaNet / RPN) and encode box deltas.

    An anchor is positive for its highest-IoU box when that IoU is ``>= pos_iou``,
    negative when its best IoU is ``< neg_iou``, ignored in between. With
    ``force_match``, each box's best anchor becomes positive too (for that anchor's own
    highest-IoU box, so the larger IoU wins a shared anchor), which gives small or
    oddly shaped boxes at least one anchor.

    Args:
        anchors: ``(A, 4)`` xyxy anchors in input pixels.
        boxes: ``(B, M, 4)`` xyxy in input pixels.
        classes: ``(B, M)`` int class ids, ``-1`` for padding.
        pos_iou, neg_iou: thresholds, ``neg_iou <= pos_iou``.
        scale_factors: delta scale factors ``(s_y, s_x, s_h, s_w)``, e.g. ``(10, 10, 5, 5)``.
        image_size: ``(width, height)`` to clip boxes to (None: boxes are not clipped).
        num_classes: if given, out-of-range classes are dropped and counted.
        num_samples: if given, the balanced RPN sampler keeps this many anchors per image.
        positive_fraction: the sampler's share of positives.
        rng: random generator of the sampler.

    Returns:
        :class:`AnchorTargets`.
    """
    if not 0.0 <= neg_iou <= pos_iou:
        raise UsageError(f"need 0 <= neg_iou <= pos_iou, got neg_iou={neg_iou}, "
                         f"pos_iou={pos_iou}")
    anchors = np.asarray(anchors, np.float64).reshape(-1, 4)
    boxes, classes = _check_batch(boxes, classes)
    batch_size, num_rows = classes.shape
    valid = _valid_boxes(boxes, classes, image_size, num_classes)
    # Dense clipped boxes with invalid rows marked so that they never match.
    usable = np.zeros((batch_size, num_rows), bool)
    usable[valid.image, valid.index] = True
    dense_boxes = np.zeros((batch_size, num_rows, 4), np.float64)
    dense_boxes[valid.image, valid.index] = valid.xyxy
    iou = iou_matrix(anchors, dense_boxes)                             # (B, A, M)
    iou = np.where(usable[:, None, :], iou, -1.0)

    num_anchors = len(anchors)
    if num_rows:
        best_box = iou.argmax(axis=2)                                  # (B, A)
        max_iou = np.take_along_axis(iou, best_box[..., None], axis=2)[..., 0]
    else:
        best_box = np.zeros((batch_size, num_anchors), np.int64)
        max_iou = np.full((batch_size, num_anchors), -1.0)
    matches = np.where(max_iou >= pos_iou, best_box, NEGATIVE)
    matches = np.where((max_iou >= neg_iou) & (max_iou < pos_iou), IGNORED, matches)
    forced = 0
    if force_match and num_anchors and len(valid.image):
        # Each valid box's best anchor; it gets that anchor's own best box, so where two
        # boxes share a best anchor the larger IoU wins (torchvision's low-quality matches).
        box_best_anchor = iou[valid.image, :, valid.index].argmax(axis=1)   # (N,)
        box_best_iou = iou[valid.image, box_best_anchor, valid.index]
        ok = box_best_iou > 0
        img, anc = valid.image[ok], box_best_anchor[ok]
        forced = int(np.sum(matches[img, anc] < 0))
        matches[img, anc] = best_box[img, anc]
    max_iou = np.maximum(max_iou, 0.0)

    positive = matches >= 0
    safe = np.where(positive, matches, 0)
    if not num_rows:  # nothing to gather from: one padding row keeps the gathers valid
        dense_boxes = np.zeros((batch_size, 1, 4), np.float64)
        classes = np.full((batch_size, 1), -1, classes.dtype)
    matched_boxes = np.take_along_axis(dense_boxes, safe[..., None], axis=1)   # (B, A, 4)
    matched_classes = np.take_along_axis(classes, safe, axis=1)
    labels = np.where(positive, matched_classes, matches).astype(np.int32)
    if num_samples is not None:
        labels = sample_balanced(labels, num_samples, positive_fraction, rng)
        matches = np.where(labels == IGNORED, IGNORED, matches)
        positive = matches >= 0
    deltas = np.zeros((batch_size, num_anchors, 4), np.float32)
    b_pos, a_pos = np.nonzero(positive)
    deltas[b_pos, a_pos] = encode_box_deltas(matched_boxes[b_pos, a_pos], anchors[a_pos],
                                             scale_factors)
    matched_any = np.zeros((batch_size, num_rows), bool)
    matched_any[b_pos, matches[b_pos, a_pos]] = True
    stats = MatchStats(
        boxes=valid.stats.boxes, padding=valid.stats.padding,
        degenerate=valid.stats.degenerate, clipped=valid.stats.clipped,
        bad_class=valid.stats.bad_class, positives=int(positive.sum()),
        negatives=int((labels == NEGATIVE).sum()), ignored=int((labels == IGNORED).sum()),
        forced=forced, unmatched=int((usable & ~matched_any).sum()))
    return AnchorTargets(matches.astype(np.int32), labels, deltas, max_iou.astype(np.float32),
                         stats)


def grid_anchors(input_size: int, stride: int, sizes: Sequence[float],
                 ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> np.ndarray:
    """Anchors centered on every cell of a ``input_size / stride`` grid.

    Args:
        input_size: input side in pixels; stride: pixels per cell.
        sizes: anchor sides (square-root of the area) in pixels.
        ratios: height / width ratios.

    Returns:
        ``(G * G * len(sizes) * len(ratios), 4)`` float32 xyxy, cell-major order.
    """
    grid = int(np.ceil(input_size / stride))
    sizes = np.asarray(sizes, np.float64)
    ratios = np.asarray(ratios, np.float64)
    h = (sizes[:, None] * np.sqrt(ratios)[None, :]).ravel()
    w = (sizes[:, None] / np.sqrt(ratios)[None, :]).ravel()
    centers = (np.arange(grid) + 0.5) * stride
    cy, cx = np.meshgrid(centers, centers, indexing="ij")
    cx = cx.reshape(-1, 1)
    cy = cy.reshape(-1, 1)
    anchors = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    return anchors.reshape(-1, 4).astype(np.float32)
