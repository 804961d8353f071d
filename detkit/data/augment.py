"""Training augmentation and the deterministic letterbox path, boxes transformed alike.

Random training samples follow keras-yolo3's ``get_random_data``: the image is resized
to a random scale and jittered aspect ratio, placed at a random position on a gray
``size x size`` canvas, flipped left-right with some probability, and jittered in hue,
saturation and value. Here the geometry is one OpenCV resize and a copy of the visible
window, and the colour jitter is OpenCV HSV plus lookup tables, so a sample costs a
couple of milliseconds.

The deterministic path (:func:`prepare_sample`) is the plain letterbox of
:class:`detkit.data.letterbox.Letterbox`, for validation, caching and prediction.

Both paths clip the boxes to the visible image and drop boxes that become smaller than
``min_size`` pixels or keep less than ``min_visible`` of their area; :class:`Sample`
carries the indices of the kept boxes so other per-box arrays can follow.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from detkit.boxes import box_area
from detkit.data.augment_config import (MIN_BOX_SIZE, MIN_VISIBLE_FRACTION,  # noqa: F401
                                        AugmentConfig)
from detkit.data.letterbox import PAD_VALUE, Letterbox

#: OpenCV stores 8-bit hue as degrees / 2, so a full turn is 180.
HUE_TURN = 180
#: Shrinking below this factor first halves the image by area averaging.
STRONG_SHRINK = 0.5
#: Entries of an 8-bit lookup table.
LUT_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a resized image lands on the ``size x size`` canvas.

    The image is resized to ``new_width x new_height``, its top-left corner put at
    ``(dx, dy)`` (may be negative: the image is then cropped), then the whole canvas is
    mirrored left-right if ``flip``.
    """

    new_width: int
    new_height: int
    dx: int
    dy: int
    flip: bool
    size: int

    @property
    def left(self) -> int:
        """x of the placed image's left edge on the canvas, after the flip."""
        return self.size - self.dx - self.new_width if self.flip else self.dx

    @property
    def window(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the visible part of the image on the canvas."""
        x0, y0 = max(self.left, 0), max(self.dy, 0)
        x1 = min(self.left + self.new_width, self.size)
        y1 = min(self.dy + self.new_height, self.size)
        return x0, y0, x1, y1

    def to_input(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """``(N, 4)`` xyxy pixels of a ``width x height`` image -> canvas pixels (unclipped)."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        sx, sy = self.new_width / width, self.new_height / height
        out = boxes * np.float32([sx, sy, sx, sy]) + np.float32([self.dx, self.dy] * 2)
        if self.flip:
            out[:, [0, 2]] = self.size - out[:, [2, 0]]
        return out


@dataclasses.dataclass(frozen=True)
class ColorJitter:
    """An HSV change: hue shift in turns, saturation and value multipliers."""

    hue: float = 0.0
    saturation: float = 1.0
    value: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self.hue == 0 and self.saturation == 1 and self.value == 1


@dataclasses.dataclass
class Sample:
    """One network-input sample.

    Attributes:
        image: ``(size, size, 3)`` uint8 RGB.
        boxes: ``(N, 4)`` float32 xyxy input pixels, clipped to the visible image.
        classes: ``(N,)`` int32.
        keep: ``(N,)`` int64 indices of the kept boxes in the boxes given.
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    keep: np.ndarray


def _source_size(image: np.ndarray, source_size: tuple[int, int] | None) -> tuple[int, int]:
    if source_size is None:
        return image.shape[1], image.shape[0]
    return int(source_size[0]), int(source_size[1])


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to ``width x height`` (the whole image, so the mapping stays exact).

    Bilinear sampling aliases little down to half size. To shrink further, the image
    is first halved by area averaging (OpenCV's fast 2x path) until a factor of at
    most two is left; general area averaging would be several times slower.
    """
    while (width < image.shape[1] * STRONG_SHRINK and
           height < image.shape[0] * STRONG_SHRINK):
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2),
                           interpolation=cv2.INTER_AREA)
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def letterbox_image(image: np.ndarray, size: int,
                    source_size: tuple[int, int] | None = None) -> np.ndarray:
    """Letterbox an image into a gray ``size x size`` canvas.

    Args:
        image: ``(h, w, 3)`` uint8.
        size: canvas side in pixels.
        source_size: ``(width, height)`` of the full image when ``image`` was decoded
            at reduced size; the geometry follows ``Letterbox(width, height, size)``.

    Returns:
        ``(size, size, 3)`` uint8: the image resized to ``Letterbox.new_size`` at
        ``Letterbox.offset``, the rest ``PAD_VALUE``.
    """
    width, height = _source_size(image, source_size)
    box = Letterbox(width, height, size)
    (new_w, new_h), (dx, dy) = box.new_size, box.offset
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[dy:dy + new_h, dx:dx + new_w] = _resize(image, new_w, new_h)
    return canvas


def filter_boxes(boxes: np.ndarray, window: tuple[float, float, float, float], *,
                 min_size: float = MIN_BOX_SIZE,
                 min_visible: float = MIN_VISIBLE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to a window and drop the ones too small or mostly outside.

    Args:
        boxes: ``(N, 4)`` xyxy pixels, unclipped.
        window: ``(x0, y0, x1, y1)`` region the boxes are clipped to.
        min_size: drop boxes whose clipped width or height is below this (pixels).
        min_visible: drop boxes whose clipped area is below this fraction of their
            unclipped area.

    Returns:
        ``(kept, keep)``: ``(K, 4)`` float32 clipped boxes and ``(K,)`` int64 indices.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x0, y0, x1, y1 = window
    clipped = np.empty_like(boxes)
    clipped[:, [0, 2]] = np.clip(boxes[:, [0, 2]], x0, x1)
    clipped[:, [1, 3]] = np.clip(boxes[:, [1, 3]], y0, y1)
    wh = clipped[:, 2:] - clipped[:, :2]
    ok = np.all(wh >= min_size, axis=1) & np.all(wh > 0, axis=1)
    if min_visible > 0:
        ok &= box_area(clipped) >= min_visible * box_area(boxes)
    keep = np.flatnonzero(ok)
    return clipped[keep], keep


def prepare_sample(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, size: int, *,
                   source_size: tuple[int, int] | None = None,
                   min_size: float = MIN_BOX_SIZE,
                   min_visible: float = MIN_VISIBLE_FRACTION) -> Sample:
    """The deterministic path: letterbox the image, map, clip and filter the boxes.

    Args:
        image: ``(h, w, 3)`` uint8 RGB.
        boxes: ``(N, 4)`` xyxy pixels of the full image.
        classes: ``(N,)`` class ids.
        size: canvas side in pixels.
        source_size: ``(width, height)`` the boxes refer to, when ``image`` was decoded
            at reduced size (default: the image's own size).
        min_size, min_visible: box filtering, see :func:`filter_boxes`.

    Returns:
        A :class:`Sample` whose image equals :func:`letterbox_image` and whose boxes are
        ``Letterbox.to_input(boxes)`` clipped to the image area.
    """
    width, height = _source_size(image, source_size)
    box = Letterbox(width, height, size)
    (new_w, new_h), (dx, dy) = box.new_size, box.offset
    kept, keep = filter_boxes(box.to_input(boxes), (dx, dy, dx + new_w, dy + new_h),
                              min_size=min_size, min_visible=min_visible)
    classes = np.asarray(classes, dtype=np.int32).reshape(-1)
    return Sample(letterbox_image(image, size, (width, height)), kept, classes[keep], keep)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """One draw from ``U(low, high)``; ``high < low`` is allowed (as in keras-yolo3)."""
    return low + (high - low) * rng.random()


def sample_placement(rng: np.random.Generator, width: int, height: int, size: int,
                     config: AugmentConfig) -> Placement:
    """Draw a random scale, aspect jitter, position and flip for a ``width x height`` image."""
    jitter, (low, high) = config.jitter, config.scale
    stretch = _uniform(rng, 1 - jitter, 1 + jitter) / _uniform(rng, 1 - jitter, 1 + jitter)
    aspect = width / height * stretch
    scale = _uniform(rng, low, high)
    if aspect < 1:
        new_h = int(scale * size)
        new_w = int(new_h * aspect)
    else:
        new_w = int(scale * size)
        new_h = int(new_w / aspect)
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    dx = int(_uniform(rng, 0, size - new_w))
    dy = int(_uniform(rng, 0, size - new_h))
    flip = bool(rng.random() < config.flip)
    return Placement(new_w, new_h, dx, dy, flip, size)


def sample_color(rng: np.random.Generator, config: AugmentConfig) -> ColorJitter:
    """Draw a hue shift and saturation/value multipliers (keras-yolo3's distribution)."""
    hue = _uniform(rng, -config.hue, config.hue)
    sat = _uniform(rng, 1, config.saturation)
    sat = sat if rng.random() < 0.5 else 1 / sat
    val = _uniform(rng, 1, config.value)
    val = val if rng.random() < 0.5 else 1 / val
    return ColorJitter(float(hue), float(sat), float(val))


def place_image(image: np.ndarray, placement: Placement) -> np.ndarray:
    """Resize, place and flip an image onto a gray canvas.

    A resize of the whole image to ``new_width x new_height`` (see :func:`_resize`),
    a mirror if ``flip``, and a copy of its visible window; pixel centres follow the
    continuous mapping of :meth:`Placement.to_input`.

    Args:
        image: ``(h, w, 3)`` uint8, the full image (possibly decoded at reduced size).
        placement: where it goes.

    Returns:
        ``(size, size, 3)`` uint8 canvas.
    """
    size = placement.size
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    x0, y0, x1, y1 = placement.window
    if x1 <= x0 or y1 <= y0:
        return canvas
    left, top = placement.left, placement.dy
    resized = _resize(image, placement.new_width, placement.new_height)
    if placement.flip:
        resized = cv2.flip(resized, 1)
    canvas[y0:y1, x0:x1] = resized[y0 - top:y1 - top, x0 - left:x1 - left]
    return canvas


def color_lut(color: ColorJitter) -> np.ndarray:
    """The ``(1, 256, 3)`` uint8 lookup table applying ``color`` to OpenCV 8-bit HSV."""
    levels = np.arange(LUT_SIZE, dtype=np.float32)
    lut = np.empty((1, LUT_SIZE, 3), dtype=np.uint8)
    lut[0, :, 0] = np.mod(np.rint(levels + color.hue * HUE_TURN), HUE_TURN)
    lut[0, :, 1] = np.clip(np.rint(levels * color.saturation), 0, LUT_SIZE - 1)
    lut[0, :, 2] = np.clip(np.rint(levels * color.value), 0, LUT_SIZE - 1)
    return lut


def apply_color(image: np.ndarray, color: ColorJitter) -> np.ndarray:
    """Apply an HSV jitter to ``(h, w, 3)`` uint8 RGB; returns a new array."""
    if color.is_identity:
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    return cv2.cvtColor(cv2.LUT(hsv, color_lut(color)), cv2.COLOR_HSV2RGB)


def random_sample(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, size: int,
                  rng: np.random.Generator, config: AugmentConfig | None = None, *,
                  source_size: tuple[int, int] | None = None,
                  placement: Placement | None = None) -> Sample:
    """A random training sample: scale/aspect jitter, placement, flip, HSV jitter.

    Random draws come from ``rng`` in a fixed order (placement, then colour), so the
    same generator state gives the same sample.

    Args:
        image: ``(h, w, 3)`` uint8 RGB.
        boxes: ``(N, 4)`` xyxy pixels of the full image.
        classes: ``(N,)`` class ids.
        size: canvas side in pixels.
        rng: the random generator.
        config: augmentation ranges (default :class:`AugmentConfig()`).
        source_size: ``(width, height)`` the boxes refer to, when ``image`` was decoded
            at reduced size (default: the image's own size).
        placement: an already drawn placement (see :func:`sample_placement`); only the
            colour is drawn then.

    Returns:
        A :class:`Sample`; boxes clipped to the visible image, small or mostly hidden
        boxes dropped.
    """
    config = config or AugmentConfig()
    width, height = _source_size(image, source_size)
    if placement is None:
        placement = sample_placement(rng, width, height, size, config)
    elif placement.size != size:
        raise ValueError(f"placement is for a {placement.size}-pixel canvas, not {size}")
    color = sample_color(rng, config)
    canvas = apply_color(place_image(image, placement), color)
    kept, keep = filter_boxes(placement.to_input(boxes, width, height), placement.window,
                              min_size=config.min_size, min_visible=config.min_visible)
    classes = np.asarray(classes, dtype=np.int32).reshape(-1)
    return Sample(canvas, kept, classes[keep], keep)
