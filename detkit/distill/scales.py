"""The output scales a teacher and a student share: :func:`match_strides`."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from detkit.anchors import anchor_masks, strides
from detkit.artifacts import settings_agree
from detkit.errors import ArtifactMismatchError


@dataclasses.dataclass(frozen=True)
class StridePair:
    """An output scale teacher and student share: its stride and each one's output index."""

    stride: int
    teacher_index: int
    student_index: int


def _scales(anchors: np.ndarray, strides_: Sequence[int] | None) -> list[tuple[int, list]]:
    """``(stride, anchor rows)`` per output, coarsest first: YOLOv3's layout when
    ``strides_`` is ``None``, else ``K / L`` rows per level, the largest to the coarsest
    (:func:`detkit.assign.layout.level_anchors`)."""
    if strides_ is None:
        return list(zip(strides(len(anchors)), anchor_masks(len(anchors))))
    levels = len(strides_)
    per_level = len(anchors) // levels
    return [(int(stride), list(range((levels - 1 - i) * per_level, (levels - i) * per_level)))
            for i, stride in enumerate(strides_)]


def match_strides(teacher_anchors: np.ndarray, student_anchors: np.ndarray,
                  teacher_strides: Sequence[int] | None = None,
                  student_strides: Sequence[int] | None = None
                  ) -> tuple[list[StridePair], list[str]]:
    """Pair the output scales of teacher and student that have the same anchors.

    Outputs are ordered coarsest stride first (:func:`detkit.anchors.strides`); scale
    ``i`` uses the anchors ``anchor_masks(K)[i]``, or with the families' strides given,
    the ``K / L`` anchors of its level (any family's layout).

    Args:
        teacher_anchors: ``(K_t, 2)`` the teacher's anchors, input pixels.
        student_anchors: ``(K_s, 2)`` the student's anchors, input pixels.

    Returns:
        ``(pairs, skipped)``: the shared scales in the student's output order, and one
        line per stride that is skipped, saying why.
    """
    teacher_anchors = np.asarray(teacher_anchors, np.float32).reshape(-1, 2)
    student_anchors = np.asarray(student_anchors, np.float32).reshape(-1, 2)
    teacher_scales = {stride: (index, mask) for index, (stride, mask)
                      in enumerate(_scales(teacher_anchors, teacher_strides))}
    student_scales = _scales(student_anchors, student_strides)
    student_strides = [stride for stride, _ in student_scales]
    pairs, skipped = [], []
    for student_index, (stride, mask) in enumerate(student_scales):
        if stride not in teacher_scales:
            skipped.append(f"stride {stride}: the teacher has no output at this stride")
            continue
        teacher_index, teacher_mask = teacher_scales[stride]
        mine, theirs = student_anchors[mask], teacher_anchors[teacher_mask]
        if not settings_agree(mine, theirs):
            skipped.append(f"stride {stride}: other anchors (teacher {_pairs(theirs)}, "
                           f"student {_pairs(mine)})")
            continue
        pairs.append(StridePair(stride, teacher_index, student_index))
    for stride in teacher_scales:
        if stride not in student_strides:
            skipped.append(f"stride {stride}: the student has no output at this stride")
    return pairs, skipped


def _pairs(anchors: np.ndarray) -> str:
    return " ".join(f"{w:g},{h:g}" for w, h in np.asarray(anchors).reshape(-1, 2))


def require_pairs(pairs: Sequence[StridePair], skipped: Sequence[str]) -> None:
    """Raise :class:`ArtifactMismatchError` when teacher and student share no scale."""
    if not pairs:
        raise ArtifactMismatchError(
            "teacher and student share no output stride with the same anchors, so there "
            f"is nothing to distill ({'; '.join(skipped)}): give the student --anchors "
            "holding the teacher's anchors at the strides both have (a yolov3 student of a "
            "yolov3-tiny teacher: 9 anchors whose 6 largest are the teacher's)")
