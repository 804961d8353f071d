"""The ranges of the random training augmentation (:class:`AugmentConfig`).

Kept apart from :mod:`detkit.data.augment` (OpenCV) so that the command line can show
the defaults without importing OpenCV.
"""

from __future__ import annotations

import dataclasses

from detkit.errors import UsageError

#: Boxes narrower or lower than this (input pixels, after clipping) are dropped.
MIN_BOX_SIZE = 1.0
#: Boxes keeping less than this fraction of their area after clipping are dropped.
MIN_VISIBLE_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random training augmentation.

    The geometric defaults are milder than keras-yolo3's (scale ``(0.25, 2.0)``, jitter
    0.3), like ultralytics' ``scale=0.5``: on small datasets they learn faster and end
    higher (measured in BENCHMARKS.md); the color ranges are keras-yolo3's.

    Attributes:
        jitter: aspect-ratio jitter; the new aspect is the image's times
            ``U(1-jitter, 1+jitter) / U(1-jitter, 1+jitter)``.
        scale: ``(low, high)``: the longer resized side is ``U(low, high) * size``.
        flip: probability of a left-right flip.
        hue: hue shift drawn from ``U(-hue, hue)``, in turns (1.0 = 360 degrees).
        saturation, value: multipliers drawn from ``U(1, s)`` or its inverse, each with
            probability 1/2.
        min_size: boxes narrower or lower than this many input pixels are dropped.
        min_visible: boxes keeping less than this fraction of their area are dropped.
        mosaic: probability that a training sample is a 2x2 mosaic of four images
            (:mod:`detkit.data.mix`; 0: never).
        mixup: probability that a training sample is blended with another one, boxes
            of both kept (:mod:`detkit.data.mix`; 0: never).
    """

    jitter: float = 0.2
    scale: tuple[float, float] = (0.5, 1.5)
    flip: float = 0.5
    hue: float = 0.1
    saturation: float = 1.5
    value: float = 1.5
    min_size: float = MIN_BOX_SIZE
    min_visible: float = MIN_VISIBLE_FRACTION
    mosaic: float = 0.0
    mixup: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.scale
        checks = [
            (0 <= self.jitter < 1, "jitter must be in [0, 1)", self.jitter),
            (0 < low <= high, "scale must be (low, high) with 0 < low <= high", self.scale),
            (0 <= self.flip <= 1, "flip must be a probability in [0, 1]", self.flip),
            (0 <= self.hue <= 0.5, "hue must be in [0, 0.5] turns", self.hue),
            (self.saturation >= 1, "saturation must be >= 1", self.saturation),
            (self.value >= 1, "value must be >= 1", self.value),
            (self.min_size >= 0, "min_size must be >= 0", self.min_size),
            (0 <= self.min_visible <= 1, "min_visible must be in [0, 1]", self.min_visible),
            (0 <= self.mosaic <= 1, "mosaic must be a probability in [0, 1]", self.mosaic),
            (0 <= self.mixup <= 1, "mixup must be a probability in [0, 1]", self.mixup),
        ]
        for ok, message, value in checks:
            if not ok:
                raise UsageError(f"augmentation: {message}, got {value!r}")


#: The input sides of multi-scale training are multiples of this (the coarsest stride).
SIDE_MULTIPLE = 32


def multi_scale_sides(input_size: int, fraction: float,
                      multiple: int = SIDE_MULTIPLE) -> tuple[int, ...]:
    """The input sides of ``--multi-scale fraction`` at ``--input-size input_size``.

    Every multiple of ``multiple`` in ``[S (1 - fraction), S (1 + fraction)]`` (at least
    ``multiple``), ascending; ``fraction`` 0.5 at ``S = 256`` gives 128, 160, ..., 384
    (ultralytics' ``multi_scale`` range, ``0.5 S`` to ``1.5 S``).

    Raises:
        UsageError: ``fraction`` outside ``(0, 1]``, or a range holding fewer than two
            sides (naming ``--multi-scale``).
    """
    size, fraction = int(input_size), float(fraction)
    if not 0 < fraction <= 1:
        raise UsageError(f"--multi-scale must be in (0, 1], got {fraction!r}")
    # The 1e-9 keeps a bound that lands on a multiple (256 * 1.5 = 384) in the range.
    low = max(multiple, multiple * -(-(size * (1 - fraction) - 1e-9) // multiple))
    high = multiple * int((size * (1 + fraction) + 1e-9) // multiple)
    sides = tuple(range(int(low), high + 1, multiple))
    if len(sides) < 2:
        raise UsageError(f"--multi-scale {fraction:g} at --input-size {size} allows only "
                         f"the side{'s' if len(sides) != 1 else ''} "
                         f"{', '.join(map(str, sides)) or 'none'} (multiples of "
                         f"{multiple} in [{size * (1 - fraction):g}, "
                         f"{size * (1 + fraction):g}]); use at least "
                         f"{multiple / size:.3g}")
    return sides
