"""Batches of network inputs and padded boxes for Keras ``fit``: :class:`DetectionBatches`."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import keras
import numpy as np

from detkit.boxes import box_area
from detkit.data.augment import (AugmentConfig, Sample, prepare_sample, random_sample,
                                 sample_placement)
from detkit.data.images import check_size, read_image, reduce_factor
from detkit.data.letterbox import Letterbox
from detkit.data.records import DEFAULT_MAX_BOXES, ImageRecord
from detkit.errors import UsageError

#: Class id of padding rows in ``classes``.
PAD_CLASS = -1
#: Streams of the seed sequence: one for the epoch's order, one per sample
#: (:mod:`detkit.data.mix` uses 2), one for the input sides of multi-scale batches.
_ORDER_STREAM, _SAMPLE_STREAM, SIDE_STREAM = 0, 1, 3

Encoder = Callable[[np.ndarray, np.ndarray], Any]


class DetectionBatches(keras.utils.PyDataset):
    """Batches of letterboxed or augmented images with their boxes, padded.

    Each batch is ``(images, targets)``: ``images`` ``(B, S, S, 3)`` float32 RGB in
    ``[0, 1]``; without an encoder ``targets`` is ``{"boxes": (B, M, 4) float32 xyxy input
    pixels (zero rows pad), "classes": (B, M) int32 (-1 pads)}`` with ``M = max_boxes``;
    with ``encoder``, ``targets = encoder(boxes, classes)`` of those two arrays. The last
    batch may be smaller than ``batch_size``.

    An image with more than ``max_boxes`` boxes (after augmentation) keeps the
    ``max_boxes`` largest by area, in their original order.

    Randomness is seeded per ``(seed, epoch, image index)``, so a sample does not depend
    on the order or the thread in which batches are made, and the shuffled order of
    an epoch depends only on ``(seed, epoch)``.

    Multi-scale batches (``sides``): each batch has its own input side ``S`` from
    ``sides`` (:meth:`batch_side`): the epoch's batches take the sides in cycles, each
    cycle a fresh random order of all of them (seeded by ``(seed, epoch, cycle)``), so
    every side is used about equally often and two neighbours in a cycle differ. Keras's
    TensorFlow adapter infers the batch shape from the first two batches; as they have
    different sides, it leaves the side free. The boxes are in that batch's input pixels
    and ``encoder`` is a mapping ``side -> encoder`` (the targets' grids follow the side). Under ``fit``, epoch ``e`` of the fit uses
    this dataset's epoch ``epoch + e`` (see :meth:`on_epoch_begin`); used by hand,
    :meth:`on_epoch_end` moves to the next epoch and :meth:`set_epoch` jumps to one.

    Images whose record gives ``width`` and ``height`` are decoded at a reduced size
    when the resize would shrink them by 2x or more (JPEG DCT scaling: faster, and
    anti-aliased); the decoded size is checked against the record.

    Args:
        records: the images and their boxes (image paths already resolved).
        input_size: network input side ``S`` in pixels.
        batch_size: images per batch.
        augment: random training augmentation (else the deterministic letterbox).
        shuffle: a new order every epoch (else the records' order).
        seed: non-negative random seed.
        max_boxes: rows of the padded box arrays.
        encoder: optional callable ``(boxes (B, M, 4), classes (B, M)) -> targets``; with
            ``sides``, a mapping from each side to its callable.
        augment_config: augmentation ranges and box filtering (default
            :class:`AugmentConfig()`; its ``min_size``/``min_visible`` also apply
            without augmentation).
        sides: input sides of multi-scale batches (at least two; ``input_size`` is then
            only the validation side); ``None``: every batch at ``input_size``.
        workers, use_multiprocessing, max_queue_size: Keras ``PyDataset`` parallelism
            (threads by default; ``workers > 1`` makes ``fit`` prefetch in parallel).
        epoch: the epoch to start at (``fit``'s ``initial_epoch`` when resuming).
    """

    def __init__(self, records: Sequence[ImageRecord], input_size: int, batch_size: int, *,
                 augment: bool = False, shuffle: bool = False, seed: int = 0,
                 max_boxes: int = DEFAULT_MAX_BOXES,
                 encoder: Union[Encoder, Mapping[int, Encoder], None] = None,
                 augment_config: AugmentConfig | None = None,
                 sides: Optional[Sequence[int]] = None, workers: int = 1,
                 use_multiprocessing: bool = False, max_queue_size: int = 10,
                 epoch: int = 0):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        for name, value in (("input_size", input_size), ("batch_size", batch_size),
                            ("max_boxes", max_boxes)):
            if int(value) != value or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if int(seed) != seed or seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
        self.records = list(records)
        self.input_size = int(input_size)
        self.sides = None if sides is None else tuple(int(side) for side in sides)
        if self.sides is not None:
            if len(set(self.sides)) < 2 or min(self.sides) < 1:
                raise UsageError(f"sides must hold at least two distinct positive sides, "
                                 f"got {sides!r}")
            missing = [side for side in self.sides
                       if not isinstance(encoder, Mapping) or side not in encoder]
            if encoder is not None and missing:
                raise UsageError(f"with sides, encoder must map every side to its encoder; "
                                 f"missing {missing}")
        self.batch_size = int(batch_size)
        self.augment = bool(augment)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.max_boxes = int(max_boxes)
        self.encoder = encoder
        self.augment_config = augment_config or AugmentConfig()
        self._order = np.arange(len(self.records))
        self._start_epoch, self._begun = int(epoch), 0
        self.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        """The current epoch (0-based)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``: its shuffled order and its augmentation draws."""
        self._epoch = int(epoch)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self._epoch, _ORDER_STREAM])
            self._order = rng.permutation(len(self.records))

    def on_epoch_begin(self) -> None:
        """Called by ``fit`` before each epoch: the n-th call selects epoch ``start + n``.

        Counting the beginnings (not the ends) keeps ``fit``'s epoch ``e`` on this
        dataset's epoch ``start + e``: Keras also calls :meth:`on_epoch_end` once before
        training starts. So resuming with ``epoch=initial_epoch`` and
        ``fit(initial_epoch=...)`` replays the same draws.
        """
        self.set_epoch(self._start_epoch + self._begun)
        self._begun += 1

    def on_epoch_end(self) -> None:
        """Move to the next epoch, unless ``fit`` drives epochs via :meth:`on_epoch_begin`."""
        if not self._begun:
            self.set_epoch(self._epoch + 1)

    @property
    def order(self) -> np.ndarray:
        """``(N,)`` record indices in this epoch's order."""
        return self._order.copy()

    def __len__(self) -> int:
        return math.ceil(len(self.records) / self.batch_size)

    def sample_rng(self, index: int) -> np.random.Generator:
        """The generator of record ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self._epoch, _SAMPLE_STREAM, int(index)])

    def batch_side(self, batch: int) -> int:
        """The input side of batch ``batch`` in the current epoch (``input_size`` without
        ``sides``)."""
        if self.sides is None:
            return self.input_size
        cycle, slot = divmod(int(batch), len(self.sides))
        rng = np.random.default_rng([self.seed, self._epoch, SIDE_STREAM, cycle])
        return self.sides[int(rng.permutation(len(self.sides))[slot])]

    def load_sample(self, index: int, size: int | None = None) -> Sample:
        """Decode and prepare record ``index`` (augmented if ``augment``), as uint8, at
        side ``size`` (default ``input_size``)."""
        record = self.records[index]
        config, size = self.augment_config, int(size or self.input_size)
        known = bool(record.width) and bool(record.height)
        rng = self.sample_rng(index) if self.augment else None
        placement = None
        reduce = 1
        if known:
            width, height = int(record.width), int(record.height)
            if self.augment:
                placement = sample_placement(rng, width, height, size, config)
                reduce = reduce_factor(width, height, placement.new_width,
                                       placement.new_height)
            else:
                reduce = reduce_factor(width, height, *Letterbox(width, height, size).new_size)
        image = read_image(record.image_path, reduce=reduce)
        if known:
            check_size(image, width, height, reduce, record.image_path)
        else:
            height, width = image.shape[:2]
        if self.augment:
            return random_sample(image, record.boxes, record.classes, size, rng, config,
                                 source_size=(width, height), placement=placement)
        return prepare_sample(image, record.boxes, record.classes, size,
                              source_size=(width, height), min_size=config.min_size,
                              min_visible=config.min_visible)

    def __getitem__(self, batch: int):
        """Batch number ``batch``: ``(images, targets)`` (see the class docstring)."""
        return self.rows(batch, 0, self.batch_size)

    def rows(self, batch: int, start: int, stop: int):
        """Rows ``[start, stop)`` of batch ``batch`` only (a replica's share of a global
        batch in distributed training): ``(images, targets)`` as :meth:`__getitem__`."""
        if not 0 <= batch < len(self):
            raise IndexError(f"batch {batch} out of range [0, {len(self)})")
        first = batch * self.batch_size
        end = min(first + self.batch_size, first + int(stop))
        indices = self._order[first + int(start):end]
        count, size, rows = len(indices), self.batch_side(batch), self.max_boxes
        images = np.empty((count, size, size, 3), dtype=np.float32)
        boxes = np.zeros((count, rows, 4), dtype=np.float32)
        classes = np.full((count, rows), PAD_CLASS, dtype=np.int32)
        for slot, index in enumerate(indices):
            sample = self.load_sample(int(index), size)
            np.multiply(sample.image, np.float32(1 / 255), out=images[slot])
            chosen = _largest(sample.boxes, rows)
            boxes[slot, :len(chosen)] = sample.boxes[chosen]
            classes[slot, :len(chosen)] = sample.classes[chosen]
        if self.encoder is not None:
            encoder = self.encoder[size] if self.sides is not None else self.encoder
            return images, encoder(boxes, classes)
        return images, {"boxes": boxes, "classes": classes}


def _largest(boxes: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the ``limit`` largest of ``(N, 4)`` boxes, in their original order."""
    if len(boxes) <= limit:
        return np.arange(len(boxes))
    return np.sort(np.argsort(-box_area(boxes), kind="stable")[:limit])
