"""Box geometry in NumPy: conversions, IoU matrices, clipping.

Boxes are ``xyxy`` float arrays ``(..., 4)`` in pixels unless a name says otherwise;
``wh`` arrays are ``(..., 2)`` widths and heights.
"""

from __future__ import annotations

import numpy as np


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` corners -> ``(..., 4)`` center x, center y, width, height."""
    boxes = np.asarray(boxes, dtype=np.float32)
    wh = boxes[..., 2:4] - boxes[..., 0:2]
    return np.concatenate([boxes[..., 0:2] + wh / 2, wh], axis=-1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` center x, center y, width, height -> ``(..., 4)`` corners."""
    boxes = np.asarray(boxes, dtype=np.float32)
    half = boxes[..., 2:4] / 2
    return np.concatenate([boxes[..., 0:2] - half, boxes[..., 0:2] + half], axis=-1)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` xyxy -> ``(...)`` areas (0 for inverted boxes)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return (np.clip(boxes[..., 2] - boxes[..., 0], 0, None) *
            np.clip(boxes[..., 3] - boxes[..., 1], 0, None))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(N, 4)`` with every box of ``b`` ``(M, 4)``: ``(N, M)``.

    Boxes of zero area have IoU 0 with everything (never NaN).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def wh_iou(wh_a: np.ndarray, wh_b: np.ndarray) -> np.ndarray:
    """IoU of centered boxes given by sizes: ``(N, 2)`` x ``(M, 2)`` -> ``(N, M)``.

    This is the anchor-matching IoU of YOLO: both boxes share a center, so the
    intersection is ``min(w) * min(h)``.
    """
    wh_a = np.asarray(wh_a, dtype=np.float64).reshape(-1, 2)
    wh_b = np.asarray(wh_b, dtype=np.float64).reshape(-1, 2)
    inter = (np.minimum(wh_a[:, None, 0], wh_b[None, :, 0]) *
             np.minimum(wh_a[:, None, 1], wh_b[None, :, 1]))
    union = (wh_a[:, 0] * wh_a[:, 1])[:, None] + (wh_b[:, 0] * wh_b[:, 1])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip ``(N, 4)`` xyxy boxes to the image ``[0, width] x [0, height]``."""
    boxes = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes
