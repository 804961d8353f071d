"""Mosaic and mixup: training samples composed of several images.

* :func:`mosaic`: four images, each resized and placed in one quadrant around a random
  centre of the ``size x size`` canvas (ultralytics' ``load_mosaic`` at the network input
  size: its 2x canvas followed by the 0.5x crop is a canvas of one input side with every
  image at about half the side). Each image's boxes are clipped to the part of its
  quadrant it covers and filtered by :func:`detkit.data.augment.filter_boxes` (the same
  ``min_size`` and ``min_visible`` rules as single-image samples).
* :func:`mixup`: two samples blended ``r a + (1 - r) b`` with ``r ~ Beta(32, 32)``
  (ultralytics), the boxes of both kept.
* :class:`MixedBatches`: :class:`detkit.data.loader.DetectionBatches` whose augmented
  samples are mosaics with probability ``AugmentConfig.mosaic`` and mixed with another
  sample with probability ``AugmentConfig.mixup``.

Determinism: every draw of a composed sample (whether to mix, the other images, their
placements, the mixing ratio) comes from one generator seeded by ``(seed, epoch,
MIX_STREAM, image index)``, a stream of its own, so the same seed gives the same
batches, and with ``mosaic = mixup = 0`` the samples are exactly the loader's.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import cv2
import numpy as np

from detkit.data.augment import (MIN_BOX_SIZE, MIN_VISIBLE_FRACTION, AugmentConfig,
                                 Placement, Sample, _resize, apply_color, filter_boxes,
                                 random_sample, sample_color, sample_placement)
from detkit.data.images import check_size, read_image, reduce_factor
from detkit.data.letterbox import PAD_VALUE
from detkit.data.loader import DetectionBatches
from detkit.data.records import ImageRecord

#: Seed-sequence stream of the composed samples' draws (the loader uses 0 for the
#: epoch order and 1 for single samples).
MIX_STREAM = 2
#: Images in a mosaic (2 x 2).
MOSAIC_TILES = 4
#: The mosaic centre is drawn from ``U(low, high) * size`` on each axis.
MOSAIC_CENTRE = (0.25, 0.75)
#: Each mosaic image's longer side is ``U(scale) * size * MOSAIC_SIDE`` (half the side).
MOSAIC_SIDE = 0.5
#: Parameters of the Beta distribution of the mixup ratio (ultralytics: 32, 32).
MIXUP_BETA = (32.0, 32.0)

Box = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class Tile:
    """Where one image of a mosaic lands.

    The (optionally mirrored) image is resized to ``new_width x new_height`` with its
    top-left corner at ``(dx, dy)`` on the canvas; only its part inside ``region`` (its
    quadrant, ``(x0, y0, x1, y1)``) is kept.
    """

    new_width: int
    new_height: int
    dx: int
    dy: int
    flip: bool
    region: Box

    @property
    def window(self) -> Box:
        """``(x0, y0, x1, y1)``: the visible part of the image on the canvas (may be
        empty: ``x1 <= x0`` or ``y1 <= y0``)."""
        x0, y0, x1, y1 = self.region
        return (max(x0, self.dx), max(y0, self.dy),
                min(x1, self.dx + self.new_width), min(y1, self.dy + self.new_height))

    def to_canvas(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """``(N, 4)`` xyxy pixels of a ``width x height`` image -> canvas pixels (unclipped)."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
        if self.flip:
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        placement = Placement(self.new_width, self.new_height, self.dx, self.dy, False, 0)
        return placement.to_input(boxes, width, height)


def mosaic_centre(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """The mosaic centre ``(cx, cy)``: each coordinate ``U(0.25, 0.75) * size``."""
    low, high = MOSAIC_CENTRE
    return (int(size * (low + (high - low) * rng.random())),
            int(size * (low + (high - low) * rng.random())))


def quadrant(index: int, centre: tuple[int, int], size: int) -> Box:
    """Region of tile ``index`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    cx, cy = centre
    x0, x1 = (0, cx) if index % 2 == 0 else (cx, size)
    y0, y1 = (0, cy) if index < 2 else (cy, size)
    return x0, y0, x1, y1


def sample_tile(rng: np.random.Generator, width: int, height: int, size: int, index: int,
                centre: tuple[int, int], config: AugmentConfig) -> Tile:
    """Draw tile ``index`` of a mosaic for a ``width x height`` image.

    Scale, aspect jitter and flip are drawn as for a single sample
    (:func:`detkit.data.augment.sample_placement`) on a canvas of half the side; the
    image then touches the centre with its inner corner.
    """
    half = max(int(round(size * MOSAIC_SIDE)), 1)
    drawn = sample_placement(rng, width, height, half, config)
    new_w, new_h = drawn.new_width, drawn.new_height
    cx, cy = centre
    dx = cx - new_w if index % 2 == 0 else cx
    dy = cy - new_h if index < 2 else cy
    return Tile(new_w, new_h, dx, dy, drawn.flip, quadrant(index, centre, size))


def mosaic(images: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
           classes: Sequence[np.ndarray], tiles: Sequence[Tile], size: int, *,
           source_sizes: Optional[Sequence[Optional[tuple[int, int]]]] = None,
           min_size: float = MIN_BOX_SIZE,
           min_visible: float = MIN_VISIBLE_FRACTION) -> Sample:
    """Compose images into one ``size x size`` sample, each at its tile.

    Args:
        images: ``(h, w, 3)`` uint8 RGB images (possibly decoded at reduced size).
        boxes: per image ``(N_i, 4)`` xyxy pixels of the full image.
        classes: per image ``(N_i,)`` class ids.
        tiles: per image its :class:`Tile` (see :func:`sample_tile`).
        size: canvas side in pixels.
        source_sizes: per image ``(width, height)`` the boxes refer to (default, or
            ``None`` for one image: the image's own size).
        min_size, min_visible: box filtering, see :func:`filter_boxes`; boxes are clipped
            to the visible part of their tile.

    Returns:
        A :class:`Sample` (no colour jitter); ``keep`` indexes the concatenation of the
        images' boxes in order.
    """
    if not len(images) == len(boxes) == len(classes) == len(tiles):
        raise ValueError(f"images, boxes, classes and tiles must have one entry per "
                         f"image; received {len(images)}, {len(boxes)}, {len(classes)}, "
                         f"{len(tiles)}")
    source_sizes = source_sizes or [None] * len(images)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    kept_boxes, kept_classes, kept_index = [], [], []
    offset = 0
    for image, image_boxes, image_classes, tile, source in zip(images, boxes, classes,
                                                             tiles, source_sizes):
        width, height = source or (image.shape[1], image.shape[0])
        x0, y0, x1, y1 = window = tile.window
        image_boxes = np.asarray(image_boxes, dtype=np.float32).reshape(-1, 4)
        image_classes = np.asarray(image_classes, dtype=np.int32).reshape(-1)
        if x1 > x0 and y1 > y0:
            resized = _resize(image, tile.new_width, tile.new_height)
            if tile.flip:
                resized = cv2.flip(resized, 1)
            canvas[y0:y1, x0:x1] = resized[y0 - tile.dy:y1 - tile.dy,
                                           x0 - tile.dx:x1 - tile.dx]
            kept, keep = filter_boxes(tile.to_canvas(image_boxes, width, height), window,
                                      min_size=min_size, min_visible=min_visible)
            kept_boxes.append(kept)
            kept_classes.append(image_classes[keep])
            kept_index.append(keep + offset)
        offset += len(image_boxes)
    return Sample(canvas, _concat(kept_boxes, (0, 4), np.float32),
                  _concat(kept_classes, (0,), np.int32), _concat(kept_index, (0,), np.int64))


def mixup(first: Sample, second: Sample, ratio: float, *, offset: int = 0) -> Sample:
    """Blend two samples: ``ratio * first + (1 - ratio) * second``, boxes of both.

    Args:
        first, second: samples of one size.
        ratio: weight of ``first`` in ``[0, 1]`` (ultralytics draws ``Beta(32, 32)``).
        offset: added to ``second.keep`` (the number of source boxes of ``first``), so
            that ``keep`` indexes the concatenation of both samples' source boxes.

    Returns:
        A :class:`Sample` whose image is the rounded blend and whose boxes are
        ``first``'s then ``second``'s.
    """
    if first.image.shape != second.image.shape:
        raise ValueError(f"mixup needs samples of one size; received "
                         f"{first.image.shape} and {second.image.shape}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1]; received {ratio}")
    blend = (first.image.astype(np.float32) * np.float32(ratio)
             + second.image.astype(np.float32) * np.float32(1.0 - ratio))
    image = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return Sample(image, np.concatenate([first.boxes, second.boxes]).astype(np.float32),
                  np.concatenate([first.classes, second.classes]).astype(np.int32),
                  np.concatenate([first.keep, second.keep + int(offset)]).astype(np.int64))


def _concat(parts: list, empty_shape: tuple, dtype) -> np.ndarray:
    return (np.concatenate(parts).astype(dtype) if parts
            else np.zeros(empty_shape, dtype=dtype))


def read_record(record: ImageRecord, resize_to=None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a record's image, at reduced size when it will be shrunk 2x or more.

    Args:
        record: the image (``width``/``height`` known or ``None``).
        resize_to: ``(width, height) -> (new_width, new_height)``, the size the whole
            image will be resized to (only called when the record's size is known).

    Returns:
        ``(image, (width, height))``: the decoded RGB image and the full size its
        boxes refer to.

    Raises:
        DataError: unreadable image, or a decoded size that disagrees with the record.
    """
    known = bool(record.width) and bool(record.height)
    reduce = 1
    if known:
        width, height = int(record.width), int(record.height)
        if resize_to is not None:
            reduce = reduce_factor(width, height, *resize_to(width, height))
    image = read_image(record.image_path, reduce=reduce)
    if known:
        check_size(image, width, height, reduce, record.image_path)
    else:
        height, width = image.shape[:2]
    return image, (width, height)


class MixedBatches(DetectionBatches):
    """:class:`DetectionBatches` with mosaic and mixup samples.

    With ``augment``, a sample is a :func:`mosaic` of the record and three records
    drawn uniformly from the dataset with probability ``augment_config.mosaic``; then,
    with probability ``augment_config.mixup``, it is blended (:func:`mixup`) with a
    second sample of a uniformly drawn record (itself a mosaic with the mosaic
    probability). A mosaic gets one colour jitter over the whole canvas. Without
    ``augment`` (validation) nothing is mixed. Arguments as :class:`DetectionBatches`,
    and ``mosaic_until``: the first epoch (0-based) with no mosaics, so that the last
    epochs train on whole images (ultralytics' ``close_mosaic``); ``None``: to the end.
    """

    def __init__(self, *args, mosaic_until: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mosaic_until = mosaic_until

    def mosaic_probability(self) -> float:
        """The current epoch's mosaic probability: ``augment_config.mosaic``, 0 from
        epoch ``mosaic_until`` on."""
        closed = self.mosaic_until is not None and self.epoch >= self.mosaic_until
        return 0.0 if closed else self.augment_config.mosaic

    def mix_rng(self, index: int) -> np.random.Generator:
        """The generator of record ``index``'s composition in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, MIX_STREAM, int(index)])

    @property
    def mixing(self) -> bool:
        """Whether any sample may be composed (``augment`` and a probability above 0)."""
        config = self.augment_config
        return self.augment and (config.mosaic > 0 or config.mixup > 0)

    def load_sample(self, index: int, size: int | None = None) -> Sample:
        """Record ``index`` prepared as the loader does, composed as drawn, at side
        ``size`` (default ``input_size``)."""
        if not self.mixing:
            return super().load_sample(index, size)
        config, mosaic = self.augment_config, self.mosaic_probability()
        rng = self.mix_rng(index)
        use_mosaic = bool(rng.random() < mosaic)
        use_mixup = bool(rng.random() < config.mixup)
        if use_mosaic:
            sample, count = self.load_mosaic(index, rng, size)
        else:
            sample = super().load_sample(index, size)
            count = len(self.records[index].boxes)
        if not use_mixup:
            return sample
        other = int(rng.integers(len(self.records)))
        if rng.random() < mosaic:
            second, _ = self.load_mosaic(other, rng, size)
        else:
            second = self.load_single(other, rng, size)
        ratio = float(rng.beta(*MIXUP_BETA))
        return mixup(sample, second, ratio, offset=count)

    def load_single(self, index: int, rng: np.random.Generator,
                    size: int | None = None) -> Sample:
        """Record ``index`` augmented as a single image with draws from ``rng``, at side
        ``size`` (default ``input_size``)."""
        record, config = self.records[index], self.augment_config
        size = int(size or self.input_size)
        placement = None
        if record.width and record.height:
            placement = sample_placement(rng, int(record.width), int(record.height), size,
                                         config)
        image, source = read_record(record, None if placement is None else
                                    lambda w, h: (placement.new_width,
                                                  placement.new_height))
        return random_sample(image, record.boxes, record.classes, size, rng, config,
                             source_size=source, placement=placement)

    def load_mosaic(self, index: int, rng: np.random.Generator,
                    size: int | None = None) -> tuple[Sample, int]:
        """A mosaic of record ``index`` (first tile) and three drawn records, on a canvas
        of side ``size`` (default ``input_size``).

        Returns:
            ``(sample, source boxes)``: the sample and the number of boxes of its four
            records (``keep`` indexes their concatenation).
        """
        config, size = self.augment_config, int(size or self.input_size)
        chosen = [int(index), *(int(i) for i in rng.integers(len(self.records),
                                                              size=MOSAIC_TILES - 1))]
        centre = mosaic_centre(rng, size)
        images, boxes, classes, tiles, sources = [], [], [], [], []
        for slot, record_index in enumerate(chosen):
            record = self.records[record_index]
            tile = None
            if record.width and record.height:
                tile = sample_tile(rng, int(record.width), int(record.height), size, slot,
                                   centre, config)
            image, source = read_record(record, None if tile is None else
                                        lambda w, h, t=tile: (t.new_width, t.new_height))
            if tile is None:
                tile = sample_tile(rng, *source, size, slot, centre, config)
            images.append(image)
            boxes.append(record.boxes)
            classes.append(record.classes)
            tiles.append(tile)
            sources.append(source)
        sample = mosaic(images, boxes, classes, tiles, size, source_sizes=sources,
                        min_size=config.min_size, min_visible=config.min_visible)
        sample.image = apply_color(sample.image, sample_color(rng, config))
        return sample, sum(len(b) for b in boxes)
