"""From raw YOLO outputs to detections: decode, score, per-class NMS (``keras.ops`` only).

``score = sigmoid(objectness) * sigmoid(class logit)`` for every (box, class) pair; pairs
scoring at least ``conf`` go through a per-class greedy NMS (a box suppresses a
lower-scoring box of the same class when their IoU exceeds ``iou``); the best
``max_det`` survivors per image are returned, padded to a fixed size.

Keras 3 has no NMS op, so :func:`nms_keep` is a vectorized greedy NMS: with candidates
sorted by score and ``S[j, i]`` = "j outranks i, same class, IoU > threshold", the greedy
result is the unique fixed point of ``keep[i] = valid[i] and not any_j(keep[j] and
S[j, i])``; iterating that map from ``keep = valid`` fixes at least one more leading
entry per step, and in practice converges in a few steps, each one batched matmul.

Mapping boxes back to the original image (:func:`to_image_coords`) is NumPy, via
:class:`detkit.data.letterbox.Letterbox`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from keras import ops

from detkit.anchors import anchor_masks
from detkit.data.letterbox import Letterbox
from detkit.decode import decode_yolov3_outputs
from detkit.ops_boxes import center_size_to_xyxy, pairwise_iou

#: Default thresholds: a low ``conf`` for mAP evaluation, the usual NMS IoU.
DEFAULT_CONF = 0.001
DEFAULT_IOU = 0.45
DEFAULT_MAX_DET = 100
#: (box, class) pairs kept, by score, before NMS (bounds the ``K x K`` IoU matrix).
DEFAULT_MAX_CANDIDATES = 1000
#: Class id of padding rows.
PAD_CLASS = -1


class Detections(NamedTuple):
    """Fixed-size detections of a batch (backend tensors).

    Attributes:
        boxes: ``(B, max_det, 4)`` float32 xyxy input pixels (zeros past ``valid``).
        scores: ``(B, max_det)`` float32, descending (zeros past ``valid``).
        classes: ``(B, max_det)`` int32 class indices (``-1`` past ``valid``).
        valid: ``(B,)`` int32 number of real detections per image.
    """

    boxes: object
    scores: object
    classes: object
    valid: object


def decode_outputs(outputs: Sequence, anchors: np.ndarray, input_size: int):
    """Decode every scale into boxes and per-class scores.

    Args:
        outputs: raw model outputs, coarsest stride first, each ``(B, H, W, 3, 5 + C)``.
        anchors: ``(K, 2)`` anchors in input pixels (``K = 3 * len(outputs)``), sorted
            by area; scale ``i`` uses ``anchor_masks(K)[i]``.
        input_size: network input side ``S`` in pixels.

    Returns:
        ``boxes (B, N, 4)`` float32 xyxy input pixels and ``scores (B, N, C)`` float32
        (objectness times class probability), ``N`` = all anchors of all cells, scales
        in ``outputs`` order, then rows, columns, anchors. Sizes are capped by
        :func:`detkit.decode.decode_yolov3_outputs` (at most a few input sides).

    Raises:
        ValueError: the number of anchors does not match the number of outputs.
    """
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
    masks = anchor_masks(len(anchors))
    if len(masks) != len(outputs):
        raise ValueError(f"{len(anchors)} anchors make {len(masks)} scales, but the model "
                         f"has {len(outputs)} outputs")
    all_boxes, all_scores = [], []
    for raw, mask in zip(outputs, masks):
        xy, wh, obj_logit, cls_logits = decode_yolov3_outputs(
            ops.cast(raw, "float32"), anchors[mask], input_size)
        boxes = center_size_to_xyxy(xy, wh) * float(input_size)
        scores = ops.sigmoid(obj_logit) * ops.sigmoid(cls_logits)
        batch = ops.shape(boxes)[0]
        all_boxes.append(ops.reshape(boxes, (batch, -1, 4)))
        all_scores.append(ops.reshape(scores, (batch, -1, ops.shape(scores)[-1])))
    return ops.concatenate(all_boxes, axis=1), ops.concatenate(all_scores, axis=1)


def nms_keep(boxes, classes, valid, iou_threshold: float):
    """Greedy NMS of score-sorted candidates, per class, batched.

    Args:
        boxes: ``(B, K, 4)`` xyxy, sorted by descending score along ``K``.
        classes: ``(B, K)`` int class ids (pass zeros for class-agnostic NMS).
        valid: ``(B, K)`` bool, candidates taking part (others neither kept nor
            suppressing).
        iou_threshold: a candidate is suppressed by a kept, higher-ranked candidate of
            its class whose IoU with it is greater than this.

    Returns:
        ``(B, K)`` bool: the candidates greedy NMS keeps.
    """
    k = ops.shape(boxes)[1]
    ranks = ops.arange(k)
    outranks = ranks[:, None] < ranks[None, :]  # (j, i): j comes before i
    same_class = ops.equal(classes[:, :, None], classes[:, None, :])
    overlaps = pairwise_iou(boxes, boxes) > iou_threshold
    suppresses = ops.cast(ops.logical_and(ops.logical_and(overlaps, same_class),
                                          outranks[None]), "float32")
    valid = ops.cast(valid, "bool")

    def step(keep):
        hits = ops.squeeze(ops.matmul(ops.cast(keep, "float32")[:, None, :], suppresses),
                           axis=1)
        return ops.logical_and(valid, hits < 0.5)

    def cond(keep, previous, iteration):
        return ops.logical_and(ops.any(ops.not_equal(keep, previous)), iteration < k + 1)

    def body(keep, previous, iteration):
        return step(keep), keep, iteration + 1

    first = step(valid)
    keep, _, _ = ops.while_loop(cond, body, (first, valid, ops.convert_to_tensor(1)))
    return keep


def select_detections(boxes, scores, *, conf: float = DEFAULT_CONF,
                      iou: float = DEFAULT_IOU, max_det: int = DEFAULT_MAX_DET,
                      max_candidates: int = DEFAULT_MAX_CANDIDATES,
                      agnostic: bool = False) -> Detections:
    """Threshold, per-class NMS and top ``max_det`` of decoded boxes.

    Args:
        boxes: ``(B, N, 4)`` xyxy (any unit).
        scores: ``(B, N, C)`` per-class scores; ``N * C`` must be known statically.
        conf: pairs scoring below this are dropped.
        iou: NMS IoU threshold.
        max_det: detections kept per image.
        max_candidates: the highest-scoring (box, class) pairs that enter NMS (ties
            broken by the lower index ``box * C + class``).
        agnostic: one NMS over all classes instead of one per class.

    Returns:
        :class:`Detections` padded to ``max_det``.
    """
    if max_det < 1 or max_candidates < 1:
        raise ValueError(f"max_det and max_candidates must be positive, got {max_det}, "
                         f"{max_candidates}")
    boxes = ops.cast(boxes, "float32")
    scores = ops.cast(scores, "float32")
    batch = ops.shape(scores)[0]
    num_boxes, num_classes = scores.shape[1], scores.shape[2]
    if num_boxes is None or num_classes is None:
        raise ValueError("select_detections needs a static number of boxes and classes")
    k = min(int(max_candidates), num_boxes * num_classes)
    top_scores, top_index = ops.top_k(ops.reshape(scores, (batch, -1)), k, sorted=True)
    box_index = top_index // num_classes
    top_classes = ops.cast(top_index % num_classes, "int32")
    top_boxes = ops.take_along_axis(boxes, box_index[..., None], axis=1)
    valid = top_scores >= conf
    keep = nms_keep(top_boxes, ops.zeros_like(top_classes) if agnostic else top_classes,
                    valid, iou)

    # The first max_det kept candidates, in rank (= score) order.
    n_out = min(int(max_det), k)
    rank_key = ops.where(keep, ops.cast(k - ops.arange(k), "float32")[None, :], 0.0)
    _, order = ops.top_k(rank_key, n_out, sorted=True)
    count = ops.minimum(ops.sum(ops.cast(keep, "int32"), axis=1), n_out)
    real = ops.arange(n_out)[None, :] < count[:, None]
    out_boxes = ops.where(real[..., None],
                          ops.take_along_axis(top_boxes, order[..., None], axis=1), 0.0)
    out_scores = ops.where(real, ops.take_along_axis(top_scores, order, axis=1), 0.0)
    out_classes = ops.where(real, ops.take_along_axis(top_classes, order, axis=1), PAD_CLASS)
    if n_out < max_det:
        pad = int(max_det) - n_out
        out_boxes = ops.pad(out_boxes, ((0, 0), (0, pad), (0, 0)))
        out_scores = ops.pad(out_scores, ((0, 0), (0, pad)))
        out_classes = ops.pad(out_classes, ((0, 0), (0, pad)), constant_values=PAD_CLASS)
    return Detections(out_boxes, out_scores, ops.cast(out_classes, "int32"),
                      ops.cast(count, "int32"))


def detect(outputs: Sequence, anchors: np.ndarray, input_size: int, *,
           conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
           max_det: int = DEFAULT_MAX_DET, max_candidates: int = DEFAULT_MAX_CANDIDATES,
           agnostic: bool = False) -> Detections:
    """Raw outputs -> per-class-NMS detections in input pixels.

    See :func:`decode_outputs` for ``outputs``/``anchors`` and :func:`select_detections`
    for the rest.
    """
    boxes, scores = decode_outputs(outputs, anchors, input_size)
    return select_detections(boxes, scores, conf=conf, iou=iou, max_det=max_det,
                             max_candidates=max_candidates, agnostic=agnostic)


def to_image_coords(boxes: np.ndarray, width: int, height: int,
                    input_size: int) -> np.ndarray:
    """``(N, 4)`` xyxy input pixels -> ``(N, 4)`` float32 xyxy pixels of the original
    ``width x height`` image (letterbox undone, clipped to the image)."""
    return Letterbox(int(width), int(height), int(input_size)).to_image(boxes)
