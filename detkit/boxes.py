"""Box geometry in NumPy: conversions, intersections, IoU matrices, clipping.

The one NumPy IoU of detkit (:func:`iou_matrix`, and :func:`wh_iou` for boxes sharing a
center); the ``keras.ops`` twin is :mod:`detkit.ops_boxes`.

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


def interval_overlap(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray,
                     hi_b: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """Length shared by the intervals ``[lo_a, hi_a]`` and ``[lo_b, hi_b]`` (broadcast).

    Args:
        pixel_offset: added before clipping at 0: 1 where coordinates are inclusive
            pixel indices (the VOC devkit), else 0.

    Returns:
        ``min(hi_a, hi_b) - max(lo_a, lo_b) + pixel_offset``, clipped at 0.
    """
    side = np.asarray(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b))
    if pixel_offset:
        side += pixel_offset
    return np.maximum(side, 0, out=side)


def intersection_area(a: np.ndarray, b: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """Area shared by xyxy boxes ``a`` and ``b`` ``(..., 4)``, broadcast: ``(...)``.

    ``pixel_offset``: see :func:`interval_overlap`. 0 where the boxes do not overlap.
    """
    return (interval_overlap(a[..., 0], a[..., 2], b[..., 0], b[..., 2], pixel_offset) *
            interval_overlap(a[..., 1], a[..., 3], b[..., 1], b[..., 3], pixel_offset))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(..., N, 4)`` with every box of ``b`` ``(..., M, 4)``.

    Both xyxy, any unit; leading dimensions broadcast (e.g. anchors ``(A, 4)`` against
    the boxes of a batch ``(B, M, 4)`` give ``(B, A, M)``). Computed in float64.

    Returns:
        ``(..., N, M)`` float64; boxes of zero area have IoU 0 with everything (never NaN).
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))[..., :, None, :]
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))[..., None, :, :]
    inter = intersection_area(a, b)
    union = box_area(a) + box_area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def wh_iou(wh_a: np.ndarray, wh_b: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """IoU of centered boxes given by sizes: ``(N, 2)`` x ``(M, 2)`` -> ``(N, M)``.

    This is the anchor-matching IoU of YOLO and the k-means distance: both boxes share a
    center, so the intersection is ``min(w) * min(h)``. Written in place, as k-means
    calls it in its inner loop (``N`` anchors, ``M`` boxes; a column-major ``wh_b`` of
    type ``dtype`` is read without a copy).

    Args:
        wh_a, wh_b: sizes ``>= 0`` (any unit).
        dtype: float type of the computation and the result.

    Returns:
        ``(N, M)`` ``dtype`` IoU; 0 where both boxes are empty (never NaN).
    """
    wh_a = np.asarray(wh_a, dtype=dtype).reshape(-1, 2)
    wh_b = np.asarray(wh_b, dtype=dtype).reshape(-1, 2)
    w_a, h_a = wh_a[:, 0:1], wh_a[:, 1:2]                                    # (N, 1)
    w_b, h_b = wh_b[:, 0], wh_b[:, 1]                                        # (M,)
    iou = np.minimum(w_a, w_b)
    union = np.minimum(h_a, h_b)
    np.multiply(iou, union, out=iou)                                         # intersection
    # The floor keeps an empty union positive (0 / tiny = 0); it is below one ulp of any
    # real area, so it changes no other value.
    area_a = np.maximum(w_a * h_a, np.finfo(dtype).tiny)
    np.add(area_a, w_b * h_b, out=union)
    np.subtract(union, iou, out=union)
    return np.divide(iou, union, out=iou)


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip ``(N, 4)`` xyxy boxes to the image ``[0, width] x [0, height]``."""
    boxes = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes
