"""Detection losses as :class:`keras.losses.Loss` subclasses (``keras.ops`` only).

* :class:`YoloV3Loss`: the YOLOv3 loss over all output scales, with an ignore mask from
  the IoU of decoded predictions with the image's ground-truth boxes.
* :class:`FocalLoss`, :class:`HuberLoss`: classification and box-regression losses of
  anchor-matching heads (RetinaNet / RPN), normalized by the number of positive anchors.
* :class:`MaskedBinaryCrossentropy` and the metric :class:`MaskedBinaryAccuracy`:
  binary objectness with an ignore label (RPN).
* The losses of the other families, over their raw outputs and their assigners'
  ``y_true`` (:mod:`detkit.assign`): :class:`YoloV2Loss` (YAD2K), :class:`RetinaNetLoss`
  (focal + Huber over matched anchors), :class:`RpnLoss` (masked BCE + Huber over the
  balanced sample, with the masked accuracy as a metric).

Family losses share one constructor form, ``Loss(anchors, num_classes, input_size,
**options)``, where ``options`` are the training options named in the class's
``OPTIONS``; :meth:`terms` returns per-sample ``(B,)`` terms named by ``term_names``.

Every loss casts its inputs to float32 (the loss dtype), so it is safe under mixed
precision. Normalized losses return per-sample values scaled so that Keras' default
``sum_over_batch_size`` reduction yields ``sum / normalizer`` (and stays correct when
``tf.distribute`` divides by the number of replicas).
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from detkit.decode import decode_yolov3_outputs, yolov3_target_logits
# Anchor-matching labels of detkit.encode: a class id >= 0 marks a positive anchor,
# NEGATIVE a background one, IGNORED an anchor left out of the loss.
from detkit.encode import CLASS, IGNORED, NEGATIVE, OBJECTNESS
from detkit.ops_boxes import center_size_to_xyxy, interval_overlap, pairwise_iou
from detkit.choices import BOX_LOSSES, OBJ_LOSSES  # noqa: F401 (re-exported)

#: Small constant that keeps divisions and logs finite.
EPSILON = 1e-7
#: Floor of the log-space size target ``log(w S / a)``: a zero-size box (which the
#: encoder normally drops) gives a large but finite error instead of ``inf``.
MIN_LOG_WH_TARGET = math.log(EPSILON)


# ---------------------------------------------------------------------------------------
# Elementwise pieces
# ---------------------------------------------------------------------------------------

def bce_with_logits(labels, logits):
    """Binary cross-entropy on logits, stable for any ``logits`` (elementwise).

    ``max(x, 0) - x * z + log(1 + exp(-|x|))``.
    """
    return (ops.maximum(logits, 0.0) - logits * labels +
            ops.log1p(ops.exp(-ops.abs(logits))))


def focal_with_logits(labels, logits, alpha: float = 0.25, gamma: float = 2.0):
    """Sigmoid focal loss on logits (elementwise).

    ``FL = alpha_t * (1 - p_t) ** gamma * BCE(z, x)`` with ``p = sigmoid(x)``,
    ``p_t = z p + (1 - z)(1 - p)``, ``alpha_t = z alpha + (1 - z)(1 - alpha)``.
    ``alpha < 0`` disables the alpha weighting.
    """
    prob = ops.sigmoid(logits)
    p_t = labels * prob + (1.0 - labels) * (1.0 - prob)
    loss = ops.power(1.0 - p_t, gamma) * bce_with_logits(labels, logits)
    if alpha >= 0:
        loss = (labels * alpha + (1.0 - labels) * (1.0 - alpha)) * loss
    return loss


def huber(error, delta: float = 1.0):
    """Huber loss of an error (elementwise): ``0.5 e^2`` if ``|e| <= delta`` else
    ``delta (|e| - delta / 2)``."""
    abs_error = ops.abs(error)
    quadratic = ops.minimum(abs_error, delta)
    return 0.5 * ops.square(quadratic) + delta * (abs_error - quadratic)


def ciou(xy_a, wh_a, xy_b, wh_b):
    """Complete IoU of paired boxes given as centers and sizes ``(..., 2)``: ``(...)``.

    ``CIoU = IoU - rho^2 / c^2 - alpha v`` with ``rho`` the center distance, ``c`` the
    diagonal of the enclosing box, ``v = 4 / pi^2 (atan(w_b/h_b) - atan(w_a/h_a))^2`` and
    ``alpha = v / (1 - IoU + v)`` (held constant in the gradient).
    """
    half_a, half_b = wh_a / 2.0, wh_b / 2.0
    min_a, max_a = xy_a - half_a, xy_a + half_a
    min_b, max_b = xy_b - half_b, xy_b + half_b
    inter_wh = interval_overlap(min_a, max_a, min_b, max_b)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = wh_a[..., 0] * wh_a[..., 1] + wh_b[..., 0] * wh_b[..., 1] - inter
    iou = inter / ops.maximum(union, EPSILON)
    enclose_wh = ops.maximum(max_a, max_b) - ops.minimum(min_a, min_b)
    diagonal2 = ops.sum(ops.square(enclose_wh), axis=-1)
    rho2 = ops.sum(ops.square(xy_a - xy_b), axis=-1)
    angle_a = ops.arctan(wh_a[..., 0] / ops.maximum(wh_a[..., 1], EPSILON))
    angle_b = ops.arctan(wh_b[..., 0] / ops.maximum(wh_b[..., 1], EPSILON))
    v = (4.0 / math.pi ** 2) * ops.square(angle_b - angle_a)
    alpha = ops.stop_gradient(v / ops.maximum(1.0 - iou + v, EPSILON))
    return iou - rho2 / ops.maximum(diagonal2, EPSILON) - alpha * v


def _per_sample_sum(values):
    """``(B, ...)`` -> ``(B,)`` sums over every axis but the first."""
    return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)


def _normalized(per_sample, normalizer):
    """Scale ``(B,)`` sums so that their batch mean is ``sum(per_sample) / normalizer``."""
    batch = ops.cast(ops.shape(per_sample)[0], per_sample.dtype)
    return per_sample * batch / ops.maximum(normalizer, 1.0)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; received {value!r}")
    return value


# ---------------------------------------------------------------------------------------
# YOLOv3
# ---------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="detkit")
class YoloV3Loss(keras.losses.Loss):
    """The YOLOv3 loss over all output scales, averaged over the batch.

    For scale ``l`` (grid ``G``, its three anchors ``a`` in input pixels, input side
    ``S``) with raw prediction ``t = (t_x, t_y, t_w, t_h, t_o, t_c)`` and target
    ``(x, y, w, h, o, c)`` (normalized center and size, objectness, class), each cell and
    anchor contributes, with box weight ``s = 2 - w h`` and cell offset ``g``:

    * ``xy  = o s BCE(x G - g_x, t_x) + o s BCE(y G - g_y, t_y)``
    * ``wh  = o s 0.5 |t_wh - log(wh S / a)|^2`` (``box_loss="mse"``; ``"huber"`` uses the
      Huber loss of the same log-space error; ``"ciou"`` replaces xy and wh by a single
      ``box = o s (1 - CIoU(decoded, target))``)
    * ``obj = o BCE(1, t_o) + (1 - o) [max_j IoU(decoded, g_j) < ignore_thresh] BCE(0, t_o)``
      (``obj_loss="focal"``: the sigmoid focal loss instead of BCE), where ``g_j`` are
      all the image's ground-truth boxes (padding rows have zero area and never count)
    * ``cls = o sum_k BCE(z_k, t_c_k)`` with ``z = onehot(c) (1 - s) + s / 2``
      (``label_smoothing`` ``s``; 0 keeps the one-hot targets)

    and ``loss = sum over cells, anchors and scales / B``. The ignore mask is computed
    for all cells and padded boxes at once (no per-image loop) and carries no gradient.

    ``y_true`` is a dict: ``"targets"``, one ``(B, G, G, 3, 6)`` float32 array per scale
    (coarsest first, see :func:`detkit.encode.encode_yolov3`), and ``"boxes"``,
    ``(B, M, 4)`` normalized xyxy ground-truth boxes, zero rows as padding.
    ``y_pred`` is the list of raw outputs ``(B, G, G, 3, 5 + C)``, coarsest first.

    With ``multi_scale`` above 0 (``detkit train --multi-scale``) every batch may have
    its own input side: ``S`` is then the batch's, ``G_0 * COARSEST_STRIDE`` from the
    coarsest output grid ``G_0`` (a tensor when the traced grid is not static), and
    ``input_size`` only its default; the loss of a batch at side ``s`` equals that of
    the loss built with ``input_size = s``.

    Args:
        anchors: ``(K, 2)`` anchors in input pixels, sorted by area (``K = 3 * scales``).
        num_classes: number of classes ``C``.
        input_size: network input side ``S`` in pixels.
        ignore_thresh: IoU above which a negative cell's objectness is not penalized.
        box_loss: ``"mse"``, ``"huber"`` or ``"ciou"``.
        obj_loss: ``"bce"`` or ``"focal"``.
        huber_delta: ``delta`` of the Huber box loss.
        focal_alpha, focal_gamma: focal objectness parameters.
        label_smoothing: ``s`` in ``[0, 1)`` of the class targets.
        multi_scale: the run's ``--multi-scale`` fraction; above 0 the input side is
            read from each batch's output grid (see above).
    """

    #: Training options (``detkit train`` fields) this loss reads as keyword arguments.
    OPTIONS: tuple[str, ...] = ("ignore_thresh", "box_loss", "obj_loss", "huber_delta",
                                "focal_alpha", "focal_gamma", "label_smoothing",
                                "multi_scale")
    #: Options of :data:`OPTIONS` read only with another option's value: the Huber delta
    #: with the Huber box loss, the focal parameters with the focal objectness.
    READ_WHEN: dict[str, tuple[str, str]] = {"huber_delta": ("box_loss", "huber"),
                                             "focal_alpha": ("obj_loss", "focal"),
                                             "focal_gamma": ("obj_loss", "focal")}
    #: Stride of the coarsest output (``y_pred[0]``) of the YOLOv3 families.
    COARSEST_STRIDE = 32

    def __init__(self, anchors, num_classes: int, input_size: int,
                 ignore_thresh: float = 0.5, box_loss: str = "mse", obj_loss: str = "bce",
                 huber_delta: float = 1.0, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, label_smoothing: float = 0.0,
                 multi_scale: float = 0.0, name: str = "yolov3_loss",
                 reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
        if len(anchors) < 3 or len(anchors) % 3:
            raise ValueError(f"anchors must be (3 * scales, 2); received shape "
                             f"{anchors.shape}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; received {num_classes}")
        self.anchors = anchors
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.ignore_thresh = float(ignore_thresh)
        self.box_loss = _check_choice("box_loss", box_loss, BOX_LOSSES)
        self.obj_loss = _check_choice("obj_loss", obj_loss, OBJ_LOSSES)
        self.huber_delta = float(huber_delta)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); received {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        if multi_scale < 0:
            raise ValueError(f"multi_scale must be >= 0; received {multi_scale}")
        self.multi_scale = float(multi_scale)
        scales = len(anchors) // 3
        # Anchor indices per scale, coarsest first (the anchor_masks order).
        self.masks = [[3 * s + i for i in range(3)] for s in reversed(range(scales))]

    @property
    def term_names(self) -> tuple[str, ...]:
        """Names of the per-term losses :meth:`terms` returns (their sum is the loss)."""
        if self.box_loss == "ciou":
            return ("box", "obj", "cls")
        return ("xy", "wh", "obj", "cls")

    def call(self, y_true, y_pred):
        """Per-sample loss ``(B,)``: the sum of :meth:`terms`."""
        return sum(self.terms(y_true, y_pred).values())

    def terms(self, y_true, y_pred) -> dict:
        """Per-sample loss terms, a dict of ``(B,)`` tensors named by :attr:`term_names`."""
        targets, gt_boxes = y_true["targets"], y_true["boxes"]
        outputs = list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]
        targets = list(targets) if isinstance(targets, (list, tuple)) else [targets]
        if len(outputs) != len(self.masks) or len(targets) != len(self.masks):
            raise ValueError(f"expected {len(self.masks)} output scales and targets; "
                             f"received {len(outputs)} outputs, {len(targets)} targets")
        gt_boxes = ops.cast(gt_boxes, "float32")
        size = self.batch_input_size(outputs[0])
        totals = {name: 0.0 for name in self.term_names}
        for raw, target, mask in zip(outputs, targets, self.masks):
            scale_terms = self._scale_terms(ops.cast(raw, "float32"),
                                            ops.cast(target, "float32"),
                                            gt_boxes, self.anchors[mask], size)
            for name, value in scale_terms.items():
                totals[name] = totals[name] + value
        return totals

    def batch_input_size(self, coarsest):
        """The input side of a batch whose coarsest raw output is ``coarsest``:
        ``input_size``, or with ``multi_scale`` ``G_0 * COARSEST_STRIDE`` (an int for a
        static grid, else a float32 scalar tensor)."""
        if not self.multi_scale:
            return self.input_size
        grid = ops.shape(coarsest)[1]
        if isinstance(grid, (int, np.integer)):
            return int(grid) * self.COARSEST_STRIDE
        return ops.cast(grid, "float32") * float(self.COARSEST_STRIDE)

    def _scale_terms(self, raw, target, gt_boxes, anchors, input_size):
        """Per-sample terms of one scale: raw ``(B, G, G, 3, 5 + C)``, target
        ``(B, G, G, 3, 6)``, gt_boxes ``(B, M, 4)``, anchors ``(3, 2)`` input pixels,
        ``input_size`` the batch's side (an int, or a scalar tensor)."""
        # Decoded predictions, normalized to the input (exp clamped inside the decoder).
        pred_xy, pred_wh, obj_logit, cls_logits = decode_yolov3_outputs(raw, anchors, input_size)
        obj_logit = obj_logit[..., 0]
        raw_xy, raw_wh = raw[..., 0:2], raw[..., 2:4]
        true_xy, true_wh = target[..., 0:2], target[..., 2:4]
        obj = target[..., OBJECTNESS]
        cls = target[..., CLASS]

        box_scale = 2.0 - true_wh[..., 0] * true_wh[..., 1]
        weight = obj * box_scale
        terms = {}
        if self.box_loss == "ciou":
            box = weight * (1.0 - ciou(pred_xy, pred_wh, true_xy, true_wh))
            terms["box"] = _per_sample_sum(box)
        else:
            # Log-space targets; the floor keeps a degenerate (zero-size) box finite.
            target_xy, target_wh = yolov3_target_logits(target, anchors, input_size)
            target_wh = ops.maximum(target_wh, MIN_LOG_WH_TARGET)
            xy = weight[..., None] * bce_with_logits(target_xy, raw_xy)
            error = raw_wh - target_wh
            wh_elem = (0.5 * ops.square(error) if self.box_loss == "mse"
                       else huber(error, self.huber_delta))
            terms["xy"] = _per_sample_sum(xy)
            terms["wh"] = _per_sample_sum(weight[..., None] * wh_elem)

        # Ignore mask: negatives whose decoded box overlaps any ground truth enough.
        batch = ops.shape(raw)[0]
        pred_xyxy = center_size_to_xyxy(pred_xy, pred_wh)
        best_iou = ops.max(pairwise_iou(ops.reshape(pred_xyxy, (batch, -1, 4)), gt_boxes),
                           axis=-1)
        keep_negative = ops.stop_gradient(ops.cast(
            ops.reshape(best_iou, ops.shape(obj)) < self.ignore_thresh, "float32"))
        obj_elem = (bce_with_logits(obj, obj_logit) if self.obj_loss == "bce" else
                    focal_with_logits(obj, obj_logit, self.focal_alpha, self.focal_gamma))
        terms["obj"] = _per_sample_sum((obj + (1.0 - obj) * keep_negative) * obj_elem)

        class_ids = ops.cast(ops.maximum(cls, 0.0), "int32")
        onehot = ops.one_hot(class_ids, self.num_classes, dtype="float32")
        if self.label_smoothing:
            onehot = onehot * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        cls_elem = bce_with_logits(onehot, cls_logits)
        terms["cls"] = _per_sample_sum(obj[..., None] * cls_elem)
        return terms

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "anchors": self.anchors.tolist(),
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "ignore_thresh": self.ignore_thresh,
            "box_loss": self.box_loss,
            "obj_loss": self.obj_loss,
            "huber_delta": self.huber_delta,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "label_smoothing": self.label_smoothing,
            "multi_scale": self.multi_scale,
        })
        return config


# ---------------------------------------------------------------------------------------
# Anchor-matching heads
# ---------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="detkit")
class FocalLoss(keras.losses.Loss):
    """Sigmoid focal loss of an anchor-matching classification head.

    ``loss = sum_{a not ignored} sum_k FL(onehot(label_a)_k, x_ak) / max(1, num_pos)``,
    with ``FL`` as in :func:`focal_with_logits` and ``num_pos`` the number of positive
    anchors in the batch. Background anchors have an all-zero target.

    ``y_true``: ``(B, A)`` integer labels as :func:`detkit.encode.encode_anchor_targets`
    gives them (class id ``>= 0`` positive, ``NEGATIVE = -1``, ``IGNORED = -2``).
    ``y_pred``: ``(B, A, C)`` logits (or probabilities when ``from_logits=False``).
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, from_logits: bool = True,
                 name: str = "focal_loss", reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        logits = y_pred if self.from_logits else _logit(y_pred)
        labels = ops.cast(y_true, "int32")
        onehot = ops.one_hot(ops.maximum(labels, 0), num_classes, dtype="float32")
        onehot = onehot * ops.cast(labels >= 0, "float32")[..., None]
        valid = ops.cast(labels != IGNORED, "float32")[..., None]
        per_sample = _per_sample_sum(valid * focal_with_logits(onehot, logits, self.alpha,
                                                               self.gamma))
        num_pos = ops.sum(ops.cast(labels >= 0, "float32"))
        return _normalized(per_sample, num_pos)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"alpha": self.alpha, "gamma": self.gamma,
                       "from_logits": self.from_logits})
        return config


@keras.saving.register_keras_serializable(package="detkit")
class HuberLoss(keras.losses.Loss):
    """Huber (smooth-L1) box regression over positive anchors.

    ``loss = sum_{a positive} sum_d Huber_delta(t_ad - y_ad) / max(1, num_pos)``.

    ``y_true``: ``(B, A, D + 1)``: ``D`` regression targets (e.g. the ``deltas`` of
    :func:`detkit.encode.encode_anchor_targets`) then the anchor's label (class id
    ``>= 0`` for a positive anchor; ``NEGATIVE`` and ``IGNORED`` are left out).
    ``y_pred``: ``(B, A, D)``.
    """

    def __init__(self, delta: float = 1.0, name: str = "huber_loss",
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        self.delta = float(delta)

    def call(self, y_true, y_pred):
        positive = ops.cast(y_true[..., -1] >= 0.0, "float32")
        error = y_pred - y_true[..., :-1]
        per_sample = _per_sample_sum(positive[..., None] * huber(error, self.delta))
        return _normalized(per_sample, ops.sum(positive))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"delta": self.delta})
        return config


@keras.saving.register_keras_serializable(package="detkit")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy that skips entries labelled ``ignore_label``.

    ``loss = sum_{i: y_i != ignore} BCE(y_i, x_i) / max(1, #{i: y_i != ignore})``.

    ``y_true``: ``(B, ...)`` labels in ``{0, 1, ignore_label}``; ``y_pred``: same shape,
    logits (or probabilities when ``from_logits=False``).
    """

    def __init__(self, ignore_label: float = NEGATIVE, from_logits: bool = True,
                 name: str = "masked_binary_crossentropy",
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        self.ignore_label = float(ignore_label)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        logits = y_pred if self.from_logits else _logit(y_pred)
        valid = ops.cast(y_true != self.ignore_label, "float32")
        labels = y_true * valid
        per_sample = _per_sample_sum(valid * bce_with_logits(labels, logits))
        return _normalized(per_sample, ops.sum(valid))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"ignore_label": self.ignore_label, "from_logits": self.from_logits})
        return config


def _logit(prob):
    """Probabilities -> logits, clipped away from 0 and 1."""
    prob = ops.clip(prob, EPSILON, 1.0 - EPSILON)
    return ops.log(prob) - ops.log1p(-prob)


@keras.saving.register_keras_serializable(package="detkit")
class MaskedBinaryAccuracy(keras.metrics.Metric):
    """Binary accuracy over the entries not labelled ``ignore_label``.

    ``accuracy = #{i valid: [p_i > threshold] == y_i} / #{i valid}``; with
    ``from_logits=True`` the prediction is a logit and the threshold applies to
    ``sigmoid(x)``.
    """

    def __init__(self, ignore_label: float = NEGATIVE, threshold: float = 0.5,
                 from_logits: bool = True, name: str = "masked_binary_accuracy",
                 dtype=None):
        super().__init__(name=name, dtype=dtype or "float32")
        self.ignore_label = float(ignore_label)
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if self.from_logits:
            y_pred = ops.sigmoid(y_pred)
        valid = ops.cast(y_true != self.ignore_label, "float32")
        if sample_weight is not None:
            weight = ops.cast(sample_weight, "float32")
            valid = valid * ops.reshape(weight, ops.shape(weight) +
                                        (1,) * (len(valid.shape) - len(weight.shape)))
        predicted = ops.cast(y_pred > self.threshold, "float32")
        hits = ops.cast(predicted == y_true, "float32") * valid
        self.correct.assign_add(ops.sum(hits))
        self.count.assign_add(ops.sum(valid))

    def result(self):
        return ops.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "ignore_label": self.ignore_label,
                "threshold": self.threshold, "from_logits": self.from_logits}


# ---------------------------------------------------------------------------------------
# The losses of the other families
# ---------------------------------------------------------------------------------------

def _single_output(y_pred):
    """The one raw output of a single-scale family (a list of one, or the tensor)."""
    outputs = list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]
    if len(outputs) != 1:
        raise ValueError(f"expected one output; received {len(outputs)}")
    return ops.cast(outputs[0], "float32")


def _flat_outputs(y_pred):
    """Raw outputs ``(B, H_i, W_i, A, V)`` of every level -> ``(B, N, V)`` float32, levels
    in the given order, then rows, columns, anchors (the assigners' anchor order)."""
    outputs = list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]
    batch = ops.shape(outputs[0])[0]
    return ops.concatenate([ops.reshape(ops.cast(out, "float32"),
                                        (batch, -1, out.shape[-1])) for out in outputs],
                           axis=1)


@keras.saving.register_keras_serializable(package="detkit")
class YoloV2Loss(keras.losses.Loss):
    """The YOLOv2 loss in the YAD2K form, averaged over the batch.

    For each cell and anchor with raw prediction ``t = (t_x, t_y, t_w, t_h, t_o, t_c)``,
    detector mask ``m`` and target ``(x, y, log_w, log_h, c)`` (cell offsets and log size
    ratios to the anchor, :class:`detkit.assign.yolov2.Yolov2Assigner`):

    * ``xy    = coord_weight s m |sigmoid(t_xy) - (x, y)|^2``
    * ``wh    = coord_weight s m |t_wh - (log_w, log_h)|^2`` (raw log space: no ``exp``; a
      box smaller than its anchor has a negative target and is fitted as such)
    * ``obj   = obj_weight m (1 - sigmoid(t_o))^2``
    * ``noobj = noobj_weight (1 - m) [max_j IoU(decoded, g_j) < ignore_thresh]
      sigmoid(t_o)^2``
    * ``cls   = m CE(onehot(c), softmax(t_c)) = -m log softmax(t_c)_c``

    summed over cells and anchors per image, with Darknet's region-layer weight
    ``s = 2 - w h`` (the box's size relative to the input: up to 2x for small boxes;
    YAD2K's port has ``s = 1``, ``scale_small_boxes=False``). The class term is the softmax
    cross-entropy, whose logit gradient ``softmax(t_c) - onehot(c)`` is the class delta of
    Darknet's region layer; YAD2K's squared error on the probabilities learns the classes
    several times slower from a random start. The decoded boxes of the ignore test clamp
    ``t_wh`` before ``exp`` (:func:`detkit.decode.decode_yolov3_outputs`) and carry no
    gradient, so no term can overflow to inf or NaN on a wild random start.

    ``y_true``: the dict of :class:`~detkit.assign.yolov2.Yolov2Assigner` (``mask``,
    ``targets``, ``boxes``). ``y_pred``: ``[(B, G, G, K, 5 + C)]``.

    Args:
        anchors: ``(K, 2)`` anchors in input pixels.
        num_classes: classes ``C``.
        input_size: network input side ``S`` in pixels.
        ignore_thresh: IoU with a ground-truth box above which a cell without an
            assigned box is not pushed to zero objectness (YAD2K: 0.6).
        obj_weight, noobj_weight, coord_weight: YAD2K's ``object_scale`` (5),
            ``no_object_scale`` (1) and ``coordinates_scale`` (1).
        scale_small_boxes: weigh the coordinate terms by ``2 - w h`` (Darknet, the
            default) or not (YAD2K).
    """

    OPTIONS: tuple[str, ...] = ("ignore_thresh", "obj_weight", "noobj_weight",
                                "coord_weight", "scale_small_boxes")
    #: YAD2K's scales; Darknet's small-box weight (on the synthetic bar: mAP@0.5 0.807
    #: with it, 0.692 without; BENCHMARKS.md).
    DEFAULT_OBJ_WEIGHT, DEFAULT_NOOBJ_WEIGHT, DEFAULT_COORD_WEIGHT = 5.0, 1.0, 1.0
    DEFAULT_SCALE_SMALL_BOXES = True

    def __init__(self, anchors, num_classes: int, input_size: int,
                 ignore_thresh: float = 0.5, obj_weight: float | None = None,
                 noobj_weight: float | None = None, coord_weight: float | None = None,
                 scale_small_boxes: bool | None = None, name: str = "yolov2_loss",
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; received {num_classes}")
        self.anchors = anchors
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.ignore_thresh = float(ignore_thresh)
        self.obj_weight = float(self.DEFAULT_OBJ_WEIGHT if obj_weight is None else obj_weight)
        self.noobj_weight = float(self.DEFAULT_NOOBJ_WEIGHT if noobj_weight is None
                                  else noobj_weight)
        self.coord_weight = float(self.DEFAULT_COORD_WEIGHT if coord_weight is None
                                  else coord_weight)
        self.scale_small_boxes = bool(self.DEFAULT_SCALE_SMALL_BOXES
                                      if scale_small_boxes is None else scale_small_boxes)

    term_names = ("xy", "wh", "obj", "noobj", "cls")

    def call(self, y_true, y_pred):
        """Per-sample loss ``(B,)``: the sum of :meth:`terms`."""
        return sum(self.terms(y_true, y_pred).values())

    def terms(self, y_true, y_pred) -> dict:
        """Per-sample loss terms, a dict of ``(B,)`` tensors named by :attr:`term_names`."""
        raw = _single_output(y_pred)
        mask = ops.cast(y_true["mask"], "float32")[..., 0]             # (B, G, G, K)
        target = ops.cast(y_true["targets"], "float32")
        gt_boxes = ops.cast(y_true["boxes"], "float32")
        pred_xy, pred_wh, obj_logit, cls_logits = decode_yolov3_outputs(
            raw, self.anchors, self.input_size)
        confidence = ops.sigmoid(obj_logit[..., 0])

        coord = self.coord_weight * mask[..., None]
        if self.scale_small_boxes:  # the box's w h relative to the input, from its targets
            true_wh = ops.exp(target[..., 2:4] * mask[..., None]) * (self.anchors
                                                                    / self.input_size)
            coord = coord * (2.0 - true_wh[..., 0:1] * true_wh[..., 1:2])
        xy = coord * ops.square(ops.sigmoid(raw[..., 0:2]) - target[..., 0:2])
        wh = coord * ops.square(raw[..., 2:4] - target[..., 2:4])

        batch = ops.shape(raw)[0]
        pred_xyxy = center_size_to_xyxy(pred_xy, pred_wh)
        best_iou = ops.max(pairwise_iou(ops.reshape(pred_xyxy, (batch, -1, 4)), gt_boxes),
                           axis=-1)
        keep_negative = ops.stop_gradient(ops.cast(
            ops.reshape(best_iou, ops.shape(mask)) < self.ignore_thresh, "float32"))
        obj = self.obj_weight * mask * ops.square(1.0 - confidence)
        noobj = self.noobj_weight * (1.0 - mask) * keep_negative * ops.square(confidence)

        class_ids = ops.cast(ops.maximum(target[..., 4], 0.0), "int32")
        onehot = ops.one_hot(class_ids, self.num_classes, dtype="float32")
        log_probs = ops.log_softmax(cls_logits, axis=-1)
        cls = -mask[..., None] * onehot * log_probs
        return {"xy": _per_sample_sum(xy), "wh": _per_sample_sum(wh),
                "obj": _per_sample_sum(obj), "noobj": _per_sample_sum(noobj),
                "cls": _per_sample_sum(cls)}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"anchors": self.anchors.tolist(), "num_classes": self.num_classes,
                       "input_size": self.input_size, "ignore_thresh": self.ignore_thresh,
                       "obj_weight": self.obj_weight, "noobj_weight": self.noobj_weight,
                       "coord_weight": self.coord_weight,
                       "scale_small_boxes": self.scale_small_boxes})
        return config


class _AnchorDeltaLoss(keras.losses.Loss):
    """What the anchor-delta losses (RetinaNet, RPN) share: Huber box regression of
    relative deltas over the positives, normalized by ``P + 1`` positives per batch.

    Subclasses set ``DEFAULT_HUBER_DELTA``, ``DEFAULT_BOX_WEIGHT``, ``term_names`` and
    :meth:`terms`; anchors and input size are unused (deltas are anchor-relative) but
    kept for the common family-loss signature.
    """

    DEFAULT_HUBER_DELTA = 1.0
    DEFAULT_BOX_WEIGHT = 1.0

    def __init__(self, num_classes: int, input_size: int, huber_delta: float | None,
                 box_weight: float | None, name: str, reduction: str, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.huber_delta = float(self.DEFAULT_HUBER_DELTA if huber_delta is None
                                 else huber_delta)
        self.box_weight = float(self.DEFAULT_BOX_WEIGHT if box_weight is None else box_weight)

    def call(self, y_true, y_pred):
        return sum(self.terms(y_true, y_pred).values())

    def box_term(self, flat, deltas, positive):
        """Per-sample ``box_weight sum_{a positive} sum_d Huber(t - y) / (P + 1)``, scaled
        so the batch mean is that total. ``flat``: ``(B, N, 4 + k)``; ``positive``: ``(B, N)``."""
        box = huber(flat[..., :4] - deltas, self.huber_delta)
        batch = ops.cast(ops.shape(flat)[0], "float32")
        return (self.box_weight * _per_sample_sum(positive[..., None] * box)
                * batch / (ops.sum(positive) + 1.0))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"anchors": None, "num_classes": self.num_classes,
                       "input_size": self.input_size, "huber_delta": self.huber_delta,
                       "box_weight": self.box_weight})
        return config


@keras.saving.register_keras_serializable(package="detkit")
class RetinaNetLoss(_AnchorDeltaLoss):
    """RetinaNet / EfficientDet loss: focal classification plus weighted Huber boxes.

    Over the anchors of every level (``y_pred`` flattened level by level, the order of
    :class:`detkit.assign.matching.AnchorMatchingAssigner`), with ``P`` the number of
    positive anchors in the batch:

    * ``cls = sum_{a not ignored} sum_k FL(z_ak, x_ak) / (P + 1)`` with ``z`` the one-hot
      class of a positive (all zeros for a negative), label-smoothed as
      ``z (1 - s) + s / 2``, and ``FL`` the sigmoid focal loss (alpha, gamma)
    * ``box = box_weight sum_{a positive} sum_d Huber_delta(t_ad - y_ad) / (P + 1)``

    The ``+ 1`` keeps a batch without positives finite (its box term is 0 and its
    classification term the plain sum). Per-sample values are scaled so that their batch
    mean is that total.

    ``y_true``: ``{"labels": (B, N) int (class >= 0, NEGATIVE -1, IGNORED -2),
    "deltas": (B, N, 4)}``. ``y_pred``: list of ``(B, H, W, A, 4 + C)`` (4 box deltas,
    then class logits), coarsest level first.

    Args:
        anchors, input_size: unused (the deltas are relative to the anchors); kept for
            the common family-loss signature.
        num_classes: classes ``C``.
        focal_alpha, focal_gamma: focal loss parameters (0.25, 2).
        label_smoothing: ``s`` in ``[0, 1)``.
        huber_delta: ``delta`` of the Huber loss (``None``: 0.1, EfficientDet).
        box_weight: weight of the box term (``None``: 50, EfficientDet).
    """

    OPTIONS: tuple[str, ...] = ("focal_alpha", "focal_gamma", "label_smoothing",
                                "huber_delta", "box_weight")
    DEFAULT_HUBER_DELTA = 0.1
    DEFAULT_BOX_WEIGHT = 50.0

    def __init__(self, anchors, num_classes: int, input_size: int,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 label_smoothing: float = 0.0, huber_delta: float | None = None,
                 box_weight: float | None = None, name: str = "retinanet_loss",
                 reduction: str = "sum_over_batch_size", dtype=None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; received {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); received {label_smoothing}")
        super().__init__(num_classes, input_size, huber_delta, box_weight, name, reduction,
                         dtype)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.label_smoothing = float(label_smoothing)

    term_names = ("cls", "box")

    def terms(self, y_true, y_pred) -> dict:
        flat = _flat_outputs(y_pred)
        labels = ops.cast(y_true["labels"], "int32")
        deltas = ops.cast(y_true["deltas"], "float32")
        positive = ops.cast(labels >= 0, "float32")
        valid = ops.cast(labels != IGNORED, "float32")
        onehot = ops.one_hot(ops.maximum(labels, 0), self.num_classes, dtype="float32")
        onehot = onehot * positive[..., None]
        if self.label_smoothing:
            onehot = onehot * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        focal = focal_with_logits(onehot, flat[..., 4:], self.focal_alpha, self.focal_gamma)
        batch = ops.cast(ops.shape(flat)[0], "float32")
        scale = batch / (ops.sum(positive) + 1.0)
        return {"cls": _per_sample_sum(valid[..., None] * focal) * scale,
                "box": self.box_term(flat, deltas, positive)}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"focal_alpha": self.focal_alpha, "focal_gamma": self.focal_gamma,
                       "label_smoothing": self.label_smoothing})
        return config


@keras.saving.register_keras_serializable(package="detkit")
class RpnLoss(_AnchorDeltaLoss):
    """The RPN loss: masked objectness BCE plus Huber boxes over the sampled anchors.

    With ``o`` the objectness target of each anchor (1 sampled positive, 0 sampled
    negative, ``-1`` neutral or not sampled, :class:`detkit.assign.matching.RpnAssigner`)
    and ``V`` the number of counted anchors (``o != -1``) in the batch:

    * ``obj = sum_{o_a != -1} BCE(o_a, x_a) / max(1, V)``
    * ``box = box_weight sum_{o_a = 1} sum_d Huber_delta(t_ad - y_ad) / (P + 1)``

    with ``P`` the sampled positives of the batch: the box term is a mean over the
    positives, as RetinaNet's (torchvision divides it by ``V`` too, which on a few
    thousand steps leaves the shared layers almost no box gradient: a sample of 256
    anchors holds a handful of positives). Neutral anchors take no part in either term
    nor in the metric :meth:`make_metrics` returns, the objectness accuracy over the
    counted anchors.

    ``y_true``: ``{"objectness": (B, N) float, "deltas": (B, N, 4)}``. ``y_pred``: list of
    ``(B, H, W, A, 5)`` (4 box deltas, then the objectness logit), coarsest level first.

    Args:
        anchors, num_classes, input_size: unused (class-agnostic, relative deltas);
            kept for the common family-loss signature.
        huber_delta: ``delta`` of the Huber loss (``None``: 1/9, Faster R-CNN).
        box_weight: weight of the box term (``None``: 1).
    """

    OPTIONS: tuple[str, ...] = ("huber_delta", "box_weight")
    DEFAULT_HUBER_DELTA = 1.0 / 9.0
    DEFAULT_BOX_WEIGHT = 1.0
    #: Objectness target of anchors left out (see :data:`detkit.assign.matching.NEUTRAL`).
    NEUTRAL = -1.0

    def __init__(self, anchors=None, num_classes: int = 1, input_size: int = 0,
                 huber_delta: float | None = None, box_weight: float | None = None,
                 name: str = "rpn_loss", reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(num_classes, input_size, huber_delta, box_weight, name, reduction,
                         dtype)

    term_names = ("obj", "box")

    def terms(self, y_true, y_pred) -> dict:
        flat = _flat_outputs(y_pred)
        objectness = ops.cast(y_true["objectness"], "float32")
        deltas = ops.cast(y_true["deltas"], "float32")
        counted = ops.cast(objectness != self.NEUTRAL, "float32")
        positive = ops.cast(objectness > 0.5, "float32")
        bce = bce_with_logits(objectness * counted, flat[..., 4])
        batch = ops.cast(ops.shape(flat)[0], "float32")
        scale = batch / ops.maximum(ops.sum(counted), 1.0)
        return {"obj": _per_sample_sum(counted * bce) * scale,
                "box": self.box_term(flat, deltas, positive)}

    def make_metrics(self) -> list:
        """The metrics to log beside the terms: the masked objectness accuracy."""
        return [MaskedBinaryAccuracy(ignore_label=self.NEUTRAL, name="obj_acc")]

    def update_metrics(self, metrics, y_true, y_pred) -> None:
        """Update :meth:`make_metrics`'s metrics with a batch."""
        flat = _flat_outputs(y_pred)
        for metric in metrics:
            metric.update_state(y_true["objectness"], flat[..., 4])
