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


def match_strides(teacher_anchors: np.ndarray,
                  student_anchors: np.ndarray) -> tuple[list[StridePair], list[str]]:
    """Pair the output scales of teacher and student that have the same anchors.

    Outputs are ordered coarsest stride first (:func:`detkit.anchors.strides`); scale
    ``i`` uses the anchors ``anchor_masks(K)[i]``.

    Args:
        teacher_anchors: ``(K_t, 2)`` the teacher's anchors, input pixels.
        student_anchors: ``(K_s, 2)`` the student's anchors, input pixels.

    Returns:
        ``(pairs, skipped)``: the shared scales in the student's output order, and one
        line per stride that is skipped, saying why.
    """
    teacher_anchors = np.asarray(teacher_anchors, np.float32).reshape(-1, 2)
    student_anchors = np.asarray(student_anchors, np.float32).reshape(-1, 2)
    teacher_scales = dict(zip(strides(len(teacher_anchors)),
                              enumerate(anchor_masks(len(teacher_anchors)))))
    student_strides = strides(len(student_anchors))
    pairs, skipped = [], []
    for student_index, (stride, mask) in enumerate(zip(student_strides,
                                                       anchor_masks(len(student_anchors)))):
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
            "is nothing to distill:\n" + "\n".join(f"  {line}" for line in skipped) +
            "\ngive teacher and student the same anchors")
