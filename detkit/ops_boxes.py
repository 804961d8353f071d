"""Box geometry in ``keras.ops``: the one backend-neutral IoU of detkit.

Used by the losses (ignore mask, CIoU) and by NMS; the NumPy twin is
:mod:`detkit.boxes`. Boxes are xyxy ``(..., 4)`` in any unit.
"""

from __future__ import annotations

from keras import ops

#: Guards the IoU division; unions of real boxes are far larger.
UNION_EPSILON = 1e-12


def center_size_to_xyxy(center, size):
    """Centers ``(..., 2)`` and sizes ``(..., 2)`` -> corners ``(..., 4)`` xyxy."""
    half = size / 2
    return ops.concatenate([center - half, center + half], axis=-1)


def interval_overlap(lo_a, hi_a, lo_b, hi_b):
    """Length shared by ``[lo_a, hi_a]`` and ``[lo_b, hi_b]`` (broadcast), clipped at 0.

    Works per coordinate on any shape, e.g. corners ``(..., 2)`` give the ``(w, h)`` of
    the intersection.
    """
    return ops.maximum(ops.minimum(hi_a, hi_b) - ops.maximum(lo_a, lo_b), 0.0)


def pairwise_iou(boxes_a, boxes_b):
    """IoU of every box of ``boxes_a`` ``(B, N, 4)`` with every box of ``boxes_b``
    ``(B, M, 4)`` (xyxy): ``(B, N, M)``; 0 for empty unions (never NaN)."""
    ax1, ay1, ax2, ay2 = (boxes_a[:, :, i, None] for i in range(4))  # (B, N, 1) each
    bx1, by1, bx2, by2 = (boxes_b[:, None, :, i] for i in range(4))  # (B, 1, M) each
    inter = interval_overlap(ax1, ax2, bx1, bx2) * interval_overlap(ay1, ay2, by1, by2)
    area_a = ops.maximum(ax2 - ax1, 0.0) * ops.maximum(ay2 - ay1, 0.0)
    area_b = ops.maximum(bx2 - bx1, 0.0) * ops.maximum(by2 - by1, 0.0)
    union = area_a + area_b - inter
    return inter / ops.maximum(union, UNION_EPSILON) * ops.cast(union > 0, inter.dtype)
