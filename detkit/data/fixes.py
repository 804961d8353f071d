"""Box repairs made while reading annotations, counted once and reported once.

Readers never warn per box. They pass every image's boxes through :func:`fix_boxes`,
which clips boxes to the image and drops boxes with no area, and counts both in a
:class:`FixReport`; the CLI prints :meth:`FixReport.summary` once as a warning.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: How many example locations (``file:line``) a report keeps for its summary.
MAX_EXAMPLES = 3
#: Pixels a box may reach past the image edge and be clipped without counting as a repair:
#: the rounding of normalized labels written to 6 decimals (5e-7 of a side).
CLIP_TOLERANCE = 0.01


@dataclasses.dataclass
class FixReport:
    """Counts of boxes repaired while reading a dataset.

    Attributes:
        dropped_degenerate: boxes dropped because their annotated area was zero or
            negative (``x2 <= x1`` or ``y2 <= y1``).
        dropped_outside: boxes dropped because nothing of them was inside the image.
        clipped: boxes that reached outside the image (by more than
            :data:`CLIP_TOLERANCE` pixels) and were clipped to it (kept).
        examples: up to :data:`MAX_EXAMPLES` locations of repaired boxes.
    """

    dropped_degenerate: int = 0
    dropped_outside: int = 0
    clipped: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    @property
    def dropped(self) -> int:
        """All dropped boxes."""
        return self.dropped_degenerate + self.dropped_outside

    @property
    def total(self) -> int:
        """All repaired boxes (dropped or clipped)."""
        return self.dropped + self.clipped

    def note(self, where: str | None) -> None:
        """Remember ``where`` (e.g. ``"train.txt:12"``) as an example location."""
        if where and len(self.examples) < MAX_EXAMPLES and where not in self.examples:
            self.examples.append(where)

    def summary(self) -> str | None:
        """One line saying what was fixed, or ``None`` when nothing was."""
        if not self.total:
            return None
        parts = []
        if self.dropped_degenerate:
            parts.append(f"dropped {self.dropped_degenerate} with zero or negative area")
        if self.dropped_outside:
            parts.append(f"dropped {self.dropped_outside} entirely outside the image")
        if self.clipped:
            parts.append(f"clipped {self.clipped} to the image")
        noun = "box" if self.total == 1 else "boxes"
        text = f"fixed {self.total} {noun}: " + ", ".join(parts)
        if self.examples:
            text += f" (e.g. {', '.join(self.examples)})"
        return text


def fix_boxes(boxes: np.ndarray, width: float, height: float, report: FixReport,
              where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image and find the ones to keep, counting every repair.

    A box whose annotated area is zero or negative is dropped (``dropped_degenerate``);
    a box that clips to zero area lay entirely outside the image and is dropped
    (``dropped_outside``); any other box that moved by more than :data:`CLIP_TOLERANCE`
    when clipped counts as ``clipped`` (a rounding overshoot is clipped silently).

    Args:
        boxes: ``(N, 4)`` xyxy in pixels (finite).
        width, height: the image size in pixels.
        report: the counts to update.
        where: the location to cite as an example when something is repaired.

    Returns:
        ``(clipped_boxes (N, 4) float32, keep (N,) bool)``: filter every per-box array
        of the image with ``keep``.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, height)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    outside = empty & ~degenerate
    changed = moved(clipped, boxes) & ~empty
    n_degenerate, n_outside, n_changed = int(degenerate.sum()), int(outside.sum()), \
        int(changed.sum())
    if n_degenerate or n_outside or n_changed:
        report.dropped_degenerate += n_degenerate
        report.dropped_outside += n_outside
        report.clipped += n_changed
        report.note(where)
    return clipped, ~empty


def moved(clipped: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: boxes that clipping moved by more than :data:`CLIP_TOLERANCE`."""
    return np.any(np.abs(clipped - boxes) > CLIP_TOLERANCE, axis=1)
