"""Letterbox geometry: fit an image into a square input keeping its aspect ratio.

The image is scaled by ``scale = min(size / width, size / height)`` to
``(round-down) new_w x new_h`` and pasted at offset ``(dx, dy) = ((size - new_w) // 2,
(size - new_h) // 2)`` on a gray (128) canvas. Boxes follow ``x' = x * new_w / width + dx``.
:func:`letterbox_records` maps a dataset's boxes this way (no image decoding), padded per
image, for label encoding.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from detkit.data.readers.common import check_class_id
from detkit.data.records import ImageRecord
from detkit.errors import DataError

#: Canvas fill value of the letterbox border (uint8).
PAD_VALUE = 128


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """How one ``width x height`` image maps into a ``size x size`` input."""

    width: int
    height: int
    size: int

    @property
    def new_size(self) -> tuple[int, int]:
        """``(new_w, new_h)`` of the resized image inside the canvas."""
        scale = min(self.size / self.width, self.size / self.height)
        return (max(1, min(self.size, int(self.width * scale))),
                max(1, min(self.size, int(self.height * scale))))

    @property
    def offset(self) -> tuple[int, int]:
        """``(dx, dy)``: top-left corner of the resized image in the canvas."""
        new_w, new_h = self.new_size
        return (self.size - new_w) // 2, (self.size - new_h) // 2

    @property
    def scale_xy(self) -> tuple[float, float]:
        """``(sx, sy)``: input pixels per image pixel along x and y."""
        new_w, new_h = self.new_size
        return new_w / self.width, new_h / self.height

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` xyxy image pixels -> ``(N, 4)`` float32 xyxy input pixels."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        (sx, sy), (dx, dy) = self.scale_xy, self.offset
        return boxes * np.float32([sx, sy, sx, sy]) + np.float32([dx, dy, dx, dy])

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` xyxy input pixels -> ``(N, 4)`` float32 xyxy image pixels, clipped."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        (sx, sy), (dx, dy) = self.scale_xy, self.offset
        out = (boxes - np.float32([dx, dy, dx, dy])) / np.float32([sx, sy, sx, sy])
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.height)
        return out


#: Letterboxed boxes narrower or shorter than this (input pixels) are dropped.
MIN_BOX_PIXELS = 1.0


@dataclasses.dataclass
class LetterboxCounts:
    """Boxes changed by letterboxing records (see :func:`letterbox_records`)."""

    clipped: int = 0
    too_small: int = 0

    def __add__(self, other: "LetterboxCounts") -> "LetterboxCounts":
        return LetterboxCounts(self.clipped + other.clipped,
                               self.too_small + other.too_small)


def letterbox_records(records: Sequence[ImageRecord], size: int, num_classes: int, *,
                      source: str | os.PathLike | None = None
                      ) -> tuple[np.ndarray, np.ndarray, LetterboxCounts]:
    """The records' boxes in a ``size x size`` letterboxed input, padded per image.

    Boxes are mapped with :meth:`Letterbox.to_input`, clipped to ``[0, size]`` and dropped
    when a side is under :data:`MIN_BOX_PIXELS` (no augmentation, no image decoding).

    Args:
        records: the images, with their sizes known.
        size: input side in pixels.
        num_classes: class ids must be in ``0..num_classes - 1``.
        source: the dataset file, named in errors.

    Returns:
        ``(boxes (B, M, 4) float32 xyxy input pixels (zero rows pad), classes (B, M) int32
        (-1 pads), counts)`` with ``M`` the most boxes kept in one image.

    Raises:
        DataError: an image of unknown size, or a class id out of range.
    """
    counts = LetterboxCounts()
    per_image = []
    for record in records:
        if record.width is None or record.height is None:
            raise DataError(f"image size unknown for {record.image_path}",
                            path=source, line=record.source_line)
        bad = (record.classes < 0) | (record.classes >= num_classes)
        if bad.any():
            check_class_id(int(record.classes[bad][0]), num_classes,
                           path=source if source is not None else record.image_path,
                           line=record.source_line)
        boxes = Letterbox(record.width, record.height, size).to_input(record.boxes)
        clipped = np.clip(boxes, 0, size)
        changed = np.any(clipped != boxes, axis=1)
        big = np.all(clipped[:, 2:] - clipped[:, :2] >= MIN_BOX_PIXELS, axis=1)
        counts.clipped += int((changed & big).sum())
        counts.too_small += int((~big).sum())
        per_image.append((clipped[big], record.classes[big]))
    rows = max([len(c) for _, c in per_image], default=0)
    boxes = np.zeros((len(records), rows, 4), np.float32)
    classes = np.full((len(records), rows), -1, np.int32)
    for i, (b, c) in enumerate(per_image):
        boxes[i, :len(c)] = b
        classes[i, :len(c)] = c
    return boxes, classes, counts
