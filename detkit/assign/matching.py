"""Anchor-matching assigners (RetinaNet, RPN): IoU labels of fixed anchors and box deltas.

The anchors are the boxes of :func:`detkit.assign.layout.anchor_boxes` for the family's
strides at the run's input size (levels coarsest first, then rows, columns, anchors: the
order in which the heads' outputs are flattened). Matching, force-matching, the balanced
sampler and the box coder are :func:`detkit.encode.encode_anchor_targets`.
"""

from __future__ import annotations

import threading
from typing import Optional, Sequence

import numpy as np

from detkit.assign.layout import anchor_boxes, grid_sizes
from detkit.encode import (DEFAULT_NEG_IOU, DEFAULT_NUM_SAMPLES, DEFAULT_POS_IOU,
                           DEFAULT_POSITIVE_FRACTION, IGNORED, NEGATIVE, MatchStats,
                           encode_anchor_targets)

#: RPN thresholds (Faster R-CNN): positive at IoU >= 0.7, negative below 0.3.
RPN_POS_IOU = 0.7
RPN_NEG_IOU = 0.3
#: Objectness target of an anchor left out of the RPN loss and accuracy (neutral or not
#: sampled); the masked loss and metric skip exactly this value.
NEUTRAL = -1.0


def compact_rows(boxes: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real rows (class ``>= 0``) first in each image, padding cut to the longest image.

    Matching compares every anchor with every row, so dropping the padding of a
    ``max_boxes``-row batch (most rows) makes it many times cheaper. At least one row
    is kept so that shapes stay non-empty.
    """
    boxes = np.asarray(boxes, np.float32)
    classes = np.asarray(classes)
    real = classes >= 0
    order = np.argsort(~real, axis=1, kind="stable")
    rows = max(1, int(real.sum(axis=1).max(initial=0)))
    order = order[:, :rows]
    return (np.take_along_axis(boxes, order[..., None], axis=1),
            np.take_along_axis(classes, order, axis=1))


class AnchorMatchingAssigner:
    """``(boxes, classes) -> y_true`` of :class:`detkit.losses.RetinaNetLoss`.

    An anchor is positive for its highest-IoU box when that IoU is ``>= pos_iou``,
    negative below ``neg_iou``, ignored in between; each box's best anchor is
    force-matched. Returns a dict:

    * ``"labels"``: ``(B, N)`` int32, the class of a positive anchor's box, ``NEGATIVE``
      (-1) or ``IGNORED`` (-2);
    * ``"deltas"``: ``(B, N, 4)`` float32 ``(ty, tx, th, tw)`` of positives (zeros
      elsewhere), see :func:`detkit.encode.encode_box_deltas`.

    Args:
        anchors: ``(K, 2)`` anchor sizes in input pixels, sorted by area, ``K / L`` per
            output level.
        input_size: input side ``S`` in pixels.
        num_classes: classes ``C``; other class ids are dropped and counted.
        strides: the family's output strides, coarsest first.
        pos_iou, neg_iou: matching thresholds (``None``: 0.5 and 0.4).
    """

    #: Training options this assigner reads.
    OPTIONS: tuple[str, ...] = ("pos_iou", "neg_iou")
    DEFAULT_POS_IOU = DEFAULT_POS_IOU
    DEFAULT_NEG_IOU = DEFAULT_NEG_IOU

    def __init__(self, anchors: np.ndarray, input_size: int, num_classes: int, *,
                 strides: Sequence[int], pos_iou: Optional[float] = None,
                 neg_iou: Optional[float] = None):
        self.anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
        self.input_size = int(input_size)
        self.num_classes = int(num_classes)
        self.strides = tuple(int(s) for s in strides)
        self.pos_iou = float(self.DEFAULT_POS_IOU if pos_iou is None else pos_iou)
        self.neg_iou = float(self.DEFAULT_NEG_IOU if neg_iou is None else neg_iou)
        if not 0.0 <= self.neg_iou <= self.pos_iou <= 1.0:
            raise ValueError(f"need 0 <= neg_iou <= pos_iou <= 1, got neg_iou="
                             f"{self.neg_iou:g}, pos_iou={self.pos_iou:g}")
        self.anchor_boxes = anchor_boxes(self.anchors, grid_sizes(self.strides,
                                                                  self.input_size),
                                         self.input_size)
        self.stats = MatchStats()
        self._lock = threading.Lock()

    def match(self, boxes: np.ndarray, classes: np.ndarray, **sampling):
        """:class:`detkit.encode.AnchorTargets` of a batch (stats accumulated)."""
        boxes, classes = compact_rows(boxes, classes)
        targets = encode_anchor_targets(
            self.anchor_boxes, boxes, classes, pos_iou=self.pos_iou, neg_iou=self.neg_iou,
            force_match=True, image_size=(self.input_size, self.input_size),
            num_classes=self.num_classes, **sampling)
        with self._lock:
            self.stats = self.stats + targets.stats
        return targets

    def __call__(self, boxes: np.ndarray, classes: np.ndarray) -> dict:
        targets = self.match(boxes, classes)
        return {"labels": targets.labels.astype(np.int32), "deltas": targets.deltas}


class RpnAssigner(AnchorMatchingAssigner):
    """``(boxes, classes) -> y_true`` of :class:`detkit.losses.RpnLoss` (class-agnostic).

    Matching as :class:`AnchorMatchingAssigner` (Faster R-CNN thresholds 0.7 / 0.3 by
    default), then the balanced sampler keeps ``sample_anchors`` anchors per image, at
    most ``positive_fraction`` of them positive (:func:`detkit.encode.sample_balanced`).
    Returns a dict:

    * ``"objectness"``: ``(B, N)`` float32, 1 for a sampled positive, 0 for a sampled
      negative, ``NEUTRAL`` (-1) for every other anchor (between the thresholds, or not
      sampled): those take no part in the loss nor in the accuracy;
    * ``"deltas"``: ``(B, N, 4)`` float32 deltas of the sampled positives.

    Args:
        sample_anchors: anchors sampled per image (``None``: 256).
        positive_fraction: the sample's largest share of positives (``None``: 0.5).
        seed: seed of the sampler's generator.
        (the rest as :class:`AnchorMatchingAssigner`)
    """

    OPTIONS: tuple[str, ...] = ("pos_iou", "neg_iou", "sample_anchors", "positive_fraction",
                                "seed")
    DEFAULT_POS_IOU = RPN_POS_IOU
    DEFAULT_NEG_IOU = RPN_NEG_IOU

    def __init__(self, anchors: np.ndarray, input_size: int, num_classes: int, *,
                 strides: Sequence[int], pos_iou: Optional[float] = None,
                 neg_iou: Optional[float] = None, sample_anchors: Optional[int] = None,
                 positive_fraction: Optional[float] = None, seed: int = 0):
        super().__init__(anchors, input_size, num_classes, strides=strides,
                         pos_iou=pos_iou, neg_iou=neg_iou)
        self.sample_anchors = int(DEFAULT_NUM_SAMPLES if sample_anchors is None
                                  else sample_anchors)
        self.positive_fraction = float(DEFAULT_POSITIVE_FRACTION if positive_fraction is None
                                       else positive_fraction)
        self._rng = np.random.default_rng(seed)

    def __call__(self, boxes: np.ndarray, classes: np.ndarray) -> dict:
        with self._lock:
            rng = np.random.default_rng(self._rng.integers(2 ** 63))
        targets = self.match(boxes, classes, num_samples=self.sample_anchors,
                             positive_fraction=self.positive_fraction, rng=rng)
        labels = targets.labels
        objectness = np.where(labels >= 0, 1.0, np.where(labels == NEGATIVE, 0.0, NEUTRAL))
        return {"objectness": objectness.astype(np.float32), "deltas": targets.deltas}


__all__ = ["AnchorMatchingAssigner", "RpnAssigner", "compact_rows", "IGNORED", "NEGATIVE",
           "NEUTRAL"]
