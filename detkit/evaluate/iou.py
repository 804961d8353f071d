"""Element-wise IoU of box pairs, with the exact arithmetic of the reference tools.

Both are distinct definitions from :func:`detkit.boxes.iou_matrix` (a crowd region's
union is the detection's area; VOC boxes are inclusive pixel ranges) and share its
intersection code (:func:`detkit.boxes.interval_overlap`).
"""

from __future__ import annotations

import numpy as np

from detkit.boxes import intersection_area, interval_overlap


def coco_pair_iou(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of ``dets[p]`` with ``gts[p]`` as pycocotools' ``bbIou`` computes it.

    The operations follow pycocotools' C code step by step in float64 (``x + w`` for the
    right edge, ``da + ga - i`` for the union), so results are bit-identical. For a crowd
    region the union is the detection's area (the region may contain many objects).

    Args:
        dets: ``(P, 4)`` float64 ``[x, y, w, h]``.
        gts: ``(P, 4)`` float64 ``[x, y, w, h]``.
        crowd: ``(P,)`` bool, whether ``gts[p]`` is a crowd region.

    Returns:
        ``(P,)`` float64 IoU (0 where the boxes do not overlap).
    """
    x, y, w, h = dets.T
    gx, gy, gw, gh = gts.T
    inter = interval_overlap(x, x + w, gx, gx + gw) * interval_overlap(y, y + h, gy, gy + gh)
    overlap = inter > 0
    det_area = w * h
    union = np.where(crowd, det_area, det_area + gw * gh - inter)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def voc_pair_iou(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of ``dets[p]`` with ``gts[p]`` with the VOC devkit's +1 pixel convention.

    Boxes are inclusive pixel ranges: a box ``[x1, x2]`` is ``x2 - x1 + 1`` pixels wide.

    Args:
        dets: ``(P, 4)`` float64 xyxy.
        gts: ``(P, 4)`` float64 xyxy.

    Returns:
        ``(P,)`` float64 IoU, ``-inf`` where the boxes do not overlap (the devkit skips
        such pairs; ``-inf`` never passes a threshold).
    """
    inter = intersection_area(dets, gts, pixel_offset=1)
    overlap = inter > 0
    union = ((dets[:, 2] - dets[:, 0] + 1) * (dets[:, 3] - dets[:, 1] + 1)
             + (gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1) - inter)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), -np.inf)
