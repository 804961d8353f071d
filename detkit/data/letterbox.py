"""Letterbox geometry: fit an image into a square input keeping its aspect ratio.

The image is scaled by ``scale = min(size / width, size / height)`` to
``(round-down) new_w x new_h`` and pasted at offset ``(dx, dy) = ((size - new_w) // 2,
(size - new_h) // 2)`` on a gray (128) canvas. Boxes follow ``x' = x * new_w / width + dx``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

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
