"""Decoders in ``keras.ops``: the inverses of :mod:`detkit.encode` and raw-output decoding.

Used by the losses and by postprocessing, so everything here runs on any Keras backend
(no ``tf.*``). Anchors and sizes are NumPy/Python values fixed when the graph is built;
the tensors are the batch.

* :func:`decode_yolov3_outputs` - raw head logits ``(B, H, W, 3, 5 + C)`` -> normalized
  box centers and sizes plus objectness and class logits.
* :func:`yolov3_target_logits` - compact targets -> the raw ``t_xy`` (cell offset) and
  ``t_wh`` (log size ratio) the head should produce; the inverse of the above.
* :func:`decode_yolov3_targets`, :func:`decode_yolov2_targets` - targets -> boxes.
* :func:`decode_box_deltas` - anchor-matching deltas -> boxes, with an ``exp`` clamp.
* :func:`decode_yolov2`, :func:`decode_anchor_outputs` - the registry decoders of the
  YOLOv2 and anchor-head (RetinaNet, RPN) families: raw outputs -> ``boxes (B, N, 4)``
  in input pixels and ``scores (B, N, C)``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from keras import ops

from detkit.assign.layout import anchor_boxes
from detkit.encode import CLASS, OBJECTNESS, YOLOV2_STRIDE
from detkit.ops_boxes import center_size_to_xyxy

#: Largest box the YOLOv3 size decoder can return, as a multiple of the input side. The
#: size logit is clamped to ``log(MAX_BOX_TO_INPUT * input_size / anchor)`` so that
#: ``exp`` cannot overflow (float16 included); real boxes are never that large.
MAX_BOX_TO_INPUT = 4.0
#: Clamp of the log-size deltas before ``exp`` in :func:`decode_box_deltas`: a box at
#: most 1000/16 times its anchor (the torchvision ``BoxCoder`` bound), so that ``exp``
#: cannot overflow on wild early-training predictions.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)

def _grid(height, width, dtype):
    """``(H, W, 1, 2)`` cell indices ``(col, row)``, i.e. x first."""
    cols = ops.cast(ops.arange(width), dtype)
    rows = ops.cast(ops.arange(height), dtype)
    col_grid, row_grid = ops.meshgrid(cols, rows, indexing="xy")     # (H, W) each
    return ops.expand_dims(ops.stack([col_grid, row_grid], axis=-1), axis=2)

def _grid_size(tensor, dtype):
    shape = ops.shape(tensor)
    height, width = shape[1], shape[2]
    size = ops.cast(ops.stack([width, height]), dtype)                # (2,) x first
    return height, width, size

def decode_yolov3_outputs(raw, anchors: np.ndarray, input_size: int):
    """Decode raw YOLOv3 head logits of one scale.

    ``xy = (sigmoid(t_xy) + cell) / grid``, ``wh = exp(min(t_wh, clamp)) * anchor /
    input_size``, both normalized to ``[0, 1]`` of the input (keras-yolo3 ``yolo_head``).

    Args:
        raw: ``(B, H, W, 3, 5 + C)`` raw outputs ``(t_x, t_y, t_w, t_h, t_obj, t_cls...)``.
        anchors: ``(3, 2)`` the scale's anchors in input pixels.
        input_size: input side in pixels: an int, or a scalar tensor (a multi-scale
            batch whose side is not known when traced).

    Returns:
        ``(xy, wh, obj_logit, cls_logits)``: ``(B, H, W, 3, 2)`` box centers,
        ``(B, H, W, 3, 2)`` box sizes, ``(B, H, W, 3, 1)`` objectness logits and
        ``(B, H, W, 3, C)`` class logits.
    """
    raw = ops.convert_to_tensor(raw)
    dtype = raw.dtype
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    height, width, size = _grid_size(raw, dtype)
    grid = _grid(height, width, dtype)
    xy = (ops.sigmoid(raw[..., 0:2]) + grid) / size
    # Clamp protects exp from overflow on wild logits; see MAX_BOX_TO_INPUT.
    if _is_static(input_size):
        max_logit = ops.cast(np.log(MAX_BOX_TO_INPUT * input_size / anchors), dtype)
        anchor_to_input = ops.cast(anchors / input_size, dtype)
    else:
        size, scale = ops.cast(input_size, dtype), ops.cast(anchors, dtype)
        max_logit = ops.log(MAX_BOX_TO_INPUT * size / scale)
        anchor_to_input = scale / size
    t_wh = ops.minimum(raw[..., 2:4], max_logit)
    return xy, ops.exp(t_wh) * anchor_to_input, raw[..., 4:5], raw[..., 5:]


def _is_static(input_size) -> bool:
    """Whether ``input_size`` is a Python or NumPy int (not a tensor)."""
    return isinstance(input_size, (int, np.integer))


def yolov3_target_logits(targets, anchors: np.ndarray, input_size: int):
    """The raw ``t_xy`` and ``t_wh`` that decode to the compact targets' boxes.

    ``t_xy = xy * grid - cell`` is the target of ``sigmoid(raw_xy)`` (in ``[0, 1]``);
    ``t_wh = log(wh * input_size / anchor)`` the target of ``raw_wh``. Empty slots give 0.

    Args:
        targets: ``(B, H, W, 3, 6)`` compact targets of one scale.
        anchors: ``(3, 2)`` the scale's anchors in input pixels.
        input_size: input side in pixels (an int or a scalar tensor).

    Returns:
        ``(t_xy, t_wh)``, each ``(B, H, W, 3, 2)``.
    """
    targets = ops.convert_to_tensor(targets)
    dtype = targets.dtype
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    height, width, size = _grid_size(targets, dtype)
    present = targets[..., OBJECTNESS:OBJECTNESS + 1] > 0.5
    t_xy = targets[..., 0:2] * size - _grid(height, width, dtype)
    input_to_anchor = (ops.cast(input_size / anchors, dtype) if _is_static(input_size)
                       else ops.cast(input_size, dtype) / ops.cast(anchors, dtype))
    ratio = targets[..., 2:4] * input_to_anchor
    t_wh = ops.log(ops.where(present, ratio, ops.ones_like(ratio)))
    return ops.where(present, t_xy, ops.zeros_like(t_xy)), t_wh


def decode_yolov3_targets(targets, input_size: Optional[int] = None):
    """Boxes of compact YOLOv3 targets of one scale.

    Args:
        targets: ``(B, H, W, 3, 6)`` ``(cx, cy, w, h, obj, class)``, normalized.
        input_size: if given, boxes are returned in input pixels, else normalized.

    Returns:
        ``(boxes, present, classes)``: ``(B, H, W, 3, 4)`` xyxy, ``(B, H, W, 3)`` bool,
        ``(B, H, W, 3)`` int32 (``-1`` where empty).
    """
    targets = ops.convert_to_tensor(targets)
    boxes = center_size_to_xyxy(targets[..., 0:2], targets[..., 2:4])
    if input_size is not None:
        boxes = boxes * ops.cast(input_size, boxes.dtype)
    present = targets[..., OBJECTNESS] > 0.5
    classes = ops.cast(ops.round(targets[..., CLASS]), "int32")
    return boxes, present, ops.where(present, classes, -ops.ones_like(classes))


def decode_yolov2_targets(mask, targets, anchors: np.ndarray, stride: int = YOLOV2_STRIDE):
    """Boxes of YOLOv2 targets (the inverse of :func:`detkit.encode.encode_yolov2`).

    ``cx = (j + t_x) * stride``, ``w = a_w * exp(t_w) * stride`` (same for y, h).

    Args:
        mask: ``(B, G, G, K, 1)`` detector mask.
        targets: ``(B, G, G, K, 5)`` ``(x - j, y - i, log(w / a_w), log(h / a_h), class)``.
        anchors: ``(K, 2)`` anchors in grid units.
        stride: pixels per grid cell.

    Returns:
        ``(boxes, present, classes)``: ``(B, G, G, K, 4)`` xyxy input pixels,
        ``(B, G, G, K)`` bool, ``(B, G, G, K)`` int32 (``-1`` where empty).
    """
    targets = ops.convert_to_tensor(targets)
    dtype = targets.dtype
    height, width, _ = _grid_size(targets, dtype)
    present = ops.convert_to_tensor(mask)[..., 0] > 0.5
    center = (targets[..., 0:2] + _grid(height, width, dtype)) * stride
    # Targets of empty slots are 0, so exp stays finite; clamp anyway for foreign input.
    t_wh = ops.minimum(targets[..., 2:4], BBOX_XFORM_CLIP)
    size = ops.exp(t_wh) * ops.cast(np.asarray(anchors, np.float64).reshape(-1, 2) * stride,
                                    dtype)
    boxes = center_size_to_xyxy(center, size)
    classes = ops.cast(ops.round(targets[..., 4]), "int32")
    return boxes, present, ops.where(present, classes, -ops.ones_like(classes))

def decode_box_deltas(deltas, anchors, scale_factors: Optional[Sequence[float]] = None):
    """Boxes from ``(ty, tx, th, tw)`` deltas (inverse of ``encode_box_deltas``).

    ``cy = ty / s_y * h_a + cy_a``, ``h = exp(min(th / s_h, clip)) * h_a`` (same for x, w).

    Args:
        deltas: ``(..., A, 4)`` ``(ty, tx, th, tw)``.
        anchors: ``(A, 4)`` xyxy anchors (array or tensor).
        scale_factors: ``(s_y, s_x, s_h, s_w)`` used at encoding; None: all 1.

    Returns:
        ``(..., A, 4)`` xyxy boxes.
    """
    deltas = ops.convert_to_tensor(deltas)
    dtype = deltas.dtype
    anchors = ops.cast(ops.convert_to_tensor(anchors), dtype)
    if scale_factors is not None:
        deltas = deltas / ops.cast(np.asarray(scale_factors, np.float64), dtype)
    ha = anchors[..., 3] - anchors[..., 1]
    wa = anchors[..., 2] - anchors[..., 0]
    cya = anchors[..., 1] + ha / 2
    cxa = anchors[..., 0] + wa / 2
    cy = deltas[..., 0] * ha + cya
    cx = deltas[..., 1] * wa + cxa
    # Clamp before exp so a wild prediction cannot overflow to inf (see BBOX_XFORM_CLIP).
    h = ops.exp(ops.minimum(deltas[..., 2], BBOX_XFORM_CLIP)) * ha
    w = ops.exp(ops.minimum(deltas[..., 3], BBOX_XFORM_CLIP)) * wa
    return ops.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def decode_yolov2(outputs, anchors: np.ndarray, input_size: int):
    """YOLOv2 raw outputs -> boxes and per-class scores (the family's decoder).

    ``xy = (sigmoid(t_xy) + cell) * stride``, ``wh = exp(min(t_wh, clamp)) * anchor``
    (:func:`decode_yolov3_outputs`), ``score = sigmoid(t_o) * softmax(t_c)``.

    Args:
        outputs: ``[(B, G, G, K, 5 + C)]`` (or the tensor).
        anchors: ``(K, 2)`` anchors in input pixels.
        input_size: input side ``S`` in pixels.

    Returns:
        ``boxes (B, G*G*K, 4)`` float32 xyxy input pixels and ``scores (B, G*G*K, C)``,
        ordered rows, columns, anchors.
    """
    (raw,) = _as_list(outputs)
    raw = ops.cast(ops.convert_to_tensor(raw), "float32")
    xy, wh, obj_logit, cls_logits = decode_yolov3_outputs(raw, anchors, input_size)
    boxes = center_size_to_xyxy(xy, wh) * float(input_size)
    # One class: its softmax is 1 (Keras warns about a softmax over a size-1 axis).
    probs = (ops.softmax(cls_logits, axis=-1) if cls_logits.shape[-1] != 1
             else ops.ones_like(cls_logits))
    scores = ops.sigmoid(obj_logit) * probs
    batch = ops.shape(raw)[0]
    return (ops.reshape(boxes, (batch, -1, 4)),
            ops.reshape(scores, (batch, -1, scores.shape[-1])))


def decode_anchor_outputs(outputs, anchors: np.ndarray, input_size: int):
    """Anchor-head raw outputs (RetinaNet, RPN) -> boxes and per-class scores.

    Each level's output ``(B, H, W, A, 4 + C)`` holds the box deltas ``(ty, tx, th, tw)``
    of each anchor and ``C`` logits (classes, or one objectness); the anchors are those
    of :func:`detkit.assign.layout.anchor_boxes` for the outputs' grids (the assigner's
    anchors). Boxes come from :func:`decode_box_deltas` (``exp`` clamped), scores are
    ``sigmoid`` of the logits.

    Args:
        outputs: the raw outputs, coarsest level first, with static grid sizes.
        anchors: ``(K, 2)`` anchor sizes in input pixels, sorted by area (``K / L`` per
            level).
        input_size: input side ``S`` in pixels.

    Returns:
        ``boxes (B, N, 4)`` float32 xyxy input pixels and ``scores (B, N, C)``, ``N`` the
        anchors of every level (level, row, column, anchor order).
    """
    outputs = [ops.cast(ops.convert_to_tensor(out), "float32") for out in _as_list(outputs)]
    grids = [(int(out.shape[1]), int(out.shape[2])) for out in outputs]
    boxes = anchor_boxes(anchors, grids, input_size)                  # (N, 4) NumPy
    batch = ops.shape(outputs[0])[0]
    flat = ops.concatenate([ops.reshape(out, (batch, -1, out.shape[-1])) for out in outputs],
                           axis=1)
    return decode_box_deltas(flat[..., :4], boxes), ops.sigmoid(flat[..., 4:])
