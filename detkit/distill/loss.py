"""Objectness-scaled distillation of raw YOLO outputs: :class:`DistillationLoss`."""

from __future__ import annotations

import math

import keras
from keras import ops

from detkit.losses import _per_sample_sum, bce_with_logits

#: Per-term names of the distillation loss (logged beside the ground-truth terms).
TERM_NAMES = ("d_obj", "d_xy", "d_wh", "d_cls")
#: Raw-output layout: ``t_x, t_y, t_w, t_h, t_obj, t_cls...``.
XY, WH, OBJ, CLS = slice(0, 2), slice(2, 4), 4, slice(5, None)
#: Default of ``--temperature``.
DEFAULT_TEMPERATURE = 1.0


def paired_outputs(teacher_outputs, student_outputs) -> list[tuple]:
    """``[(teacher, student)]`` per scale, float32, the teacher's gradient stopped.

    Raises:
        ValueError: the two lists differ in length or a pair in shape.
    """
    teacher_outputs = as_list(teacher_outputs)
    student_outputs = as_list(student_outputs)
    if len(teacher_outputs) != len(student_outputs) or not teacher_outputs:
        raise ValueError(f"expected one teacher output per student output; received "
                         f"{len(teacher_outputs)} and {len(student_outputs)}")
    pairs = []
    for teacher, student in zip(teacher_outputs, student_outputs):
        if tuple(teacher.shape[1:]) != tuple(student.shape[1:]):
            raise ValueError(f"teacher output {tuple(teacher.shape)} and student output "
                             f"{tuple(student.shape)} differ in shape")
        pairs.append((ops.stop_gradient(ops.cast(teacher, "float32")),
                      ops.cast(student, "float32")))
    return pairs


def binary_kl_with_logits(teacher_logits, student_logits):
    """``KL(sigmoid(u) || sigmoid(t))`` of Bernoulli variables, elementwise.

    ``BCE(q, t) - BCE(q, u)`` with ``q = sigmoid(u)``: the cross-entropy to the teacher's
    probability minus the teacher's entropy. Same gradient in ``t`` as the BCE, zero
    when ``t == u``. Finite for any logits.
    """
    prob = ops.sigmoid(teacher_logits)
    return bce_with_logits(prob, student_logits) - bce_with_logits(prob, teacher_logits)


@keras.saving.register_keras_serializable(package="detkit")
class DistillationLoss(keras.losses.Loss):
    """Objectness-scaled distillation of raw YOLO outputs (Mehta and Ozturk, 2018).

    For every output scale the teacher and the student share (paired by the caller), with
    teacher raw outputs ``u`` and student raw outputs ``t``, both
    ``(B, G, G, 3, 5 + C)`` ``(t_x, t_y, t_w, t_h, t_o, t_c...)``, teacher objectness
    ``p = sigmoid(u_o)`` and temperature ``T``, each cell and anchor contributes

    * ``d_obj = KL(sigmoid(u_o) || sigmoid(t_o))``                 (everywhere)
    * ``d_xy  = p * sum_{x,y} KL(sigmoid(u_xy) || sigmoid(t_xy))``  (cell offsets)
    * ``d_wh  = p * 0.5 * sum_{w,h} (t_wh - u_wh)^2``                (log sizes)
    * ``d_cls = p * T^2 * sum_k KL(sigmoid(u_k / T) || sigmoid(t_k / T))``

    with ``KL(sigmoid(u) || sigmoid(t)) = BCE(sigmoid(u), t) - H(sigmoid(u))`` (see
    :func:`binary_kl_with_logits`): the binary cross-entropy to the teacher's sigmoid,
    shifted so that a student equal to the teacher scores 0. Box and class terms are
    weighted by the teacher's objectness, so cells the teacher calls background teach
    nothing about boxes and classes; ``T^2`` keeps the class gradients' scale
    independent of ``T``. Each term is summed over cells, anchors and scales per image;
    the teacher side carries no gradient.

    ``y_true``: the teacher's raw outputs, a list (one per shared scale);
    ``y_pred``: the student's raw outputs at the same scales, same order and shapes.

    Args:
        temperature: ``T > 0`` of the class logits.
    """

    #: The loss's name unless one is given.
    default_name = "distillation_loss"

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, name: str | None = None,
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name or self.default_name, reduction=reduction,
                         dtype=dtype or "float32")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number; received "
                             f"{temperature!r}")
        self.temperature = float(temperature)

    @property
    def term_names(self) -> tuple[str, ...]:
        """Names of the per-term losses :meth:`terms` returns (their sum is the loss)."""
        return TERM_NAMES

    def call(self, y_true, y_pred):
        """Per-sample loss ``(B,)``: the sum of :meth:`terms`."""
        return sum(self.terms(y_true, y_pred).values())

    def terms(self, teacher_outputs, student_outputs) -> dict:
        """Per-sample terms ``{name: (B,)}`` summed over the paired scales.

        Raises:
            ValueError: the two lists differ in length or a pair in shape.
        """
        totals = {name: 0.0 for name in TERM_NAMES}
        for teacher, student in paired_outputs(teacher_outputs, student_outputs):
            scale_terms = self._scale_terms(teacher, student)
            for name, value in scale_terms.items():
                totals[name] = totals[name] + value
        return totals

    def _scale_terms(self, teacher, student) -> dict:
        """Terms of one scale: ``teacher``, ``student`` ``(B, G, G, 3, 5 + C)`` float32."""
        weight = ops.sigmoid(teacher[..., OBJ])[..., None]          # (B, G, G, 3, 1)
        temperature = self.temperature
        obj = binary_kl_with_logits(teacher[..., OBJ], student[..., OBJ])
        xy = weight * binary_kl_with_logits(teacher[..., XY], student[..., XY])
        wh = weight * 0.5 * ops.square(student[..., WH] - teacher[..., WH])
        cls = weight * (temperature ** 2) * self.class_divergence(
            teacher[..., CLS] / temperature, student[..., CLS] / temperature)
        return {"d_obj": _per_sample_sum(obj), "d_xy": _per_sample_sum(xy),
                "d_wh": _per_sample_sum(wh), "d_cls": _per_sample_sum(cls)}

    def class_divergence(self, teacher_logits, student_logits):
        """Per-class ``KL(sigmoid(u_k) || sigmoid(t_k))`` ``(..., C)`` (YOLOv3's
        independent sigmoid classes)."""
        return binary_kl_with_logits(teacher_logits, student_logits)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


def softmax_kl_with_logits(teacher_logits, student_logits):
    """``KL(softmax(u) || softmax(t))`` over the last axis, ``(..., 1)``.

    ``sum_k p_k (log p_k - log q_k)`` with ``p = softmax(u)``, ``q = softmax(t)``, from
    log-softmaxes: finite for any logits, zero when ``t == u``.
    """
    log_p = ops.log_softmax(teacher_logits, axis=-1)
    log_q = ops.log_softmax(student_logits, axis=-1)
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="detkit")
class SoftmaxDistillationLoss(DistillationLoss):
    """:class:`DistillationLoss` for YOLOv2 outputs, whose classes are one softmax.

    The same ``d_obj``, ``d_xy`` and ``d_wh``; the class term is the divergence of the
    two class distributions (Hinton et al., 2015) instead of per-class Bernoullis:

    * ``d_cls = p * T^2 * KL(softmax(u_c / T) || softmax(t_c / T))``

    Args:
        temperature: ``T > 0`` of the class logits.
    """

    default_name = "softmax_distillation_loss"

    def class_divergence(self, teacher_logits, student_logits):
        """``KL(softmax(u) || softmax(t))`` ``(..., 1)``."""
        return softmax_kl_with_logits(teacher_logits, student_logits)


def as_list(outputs) -> list:
    """A model's output(s) as a list."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


#: Per-term names of the anchor-head distillation loss.
ANCHOR_TERM_NAMES = ("d_cls", "d_box")
#: Box deltas, then class (or objectness) logits, in an anchor head's raw output.
DELTAS, LOGITS = slice(0, 4), slice(4, None)


@keras.saving.register_keras_serializable(package="detkit")
class AnchorDistillationLoss(DistillationLoss):
    """Distillation of raw anchor-head outputs (RetinaNet; the RPN, whose one logit is
    its objectness): soft classes and boxes.

    Teacher and student raw outputs ``u``, ``t`` are ``(B, H, W, A, 4 + C)`` (box deltas,
    then class logits) at the scales they share. With ``q_a = max_k sigmoid(u_ak)`` the
    teacher's confidence that anchor ``a`` holds an object and ``Q = sum_a q_a + 1`` over
    the batch (the soft count of positives, as RetinaNet's ground-truth loss divides by
    the positives + 1):

    * ``d_cls = T^2 sum_a sum_k KL(sigmoid(u_ak / T) || sigmoid(t_ak / T)) / Q``
    * ``d_box = sum_a q_a * 0.5 * sum_d (t_ad - u_ad)^2 / Q``

    (per-sample values scaled so that their batch mean is that total). Every anchor
    teaches its classes (background ones teach "nothing here"); boxes are taught where
    the teacher sees an object. The teacher side carries no gradient.

    Args:
        temperature: ``T > 0`` of the class logits.
    """

    default_name = "anchor_distillation_loss"

    @property
    def term_names(self) -> tuple[str, ...]:
        return ANCHOR_TERM_NAMES

    def terms(self, teacher_outputs, student_outputs) -> dict:
        pairs = paired_outputs(teacher_outputs, student_outputs)
        sums = {name: 0.0 for name in ANCHOR_TERM_NAMES}
        confidence = 0.0
        for teacher, student in pairs:
            weight = ops.max(ops.sigmoid(teacher[..., LOGITS]), axis=-1)     # (B, H, W, A)
            temperature = self.temperature
            cls = (temperature ** 2) * binary_kl_with_logits(
                teacher[..., LOGITS] / temperature, student[..., LOGITS] / temperature)
            box = weight[..., None] * 0.5 * ops.square(student[..., DELTAS] -
                                                       teacher[..., DELTAS])
            sums["d_cls"] = sums["d_cls"] + _per_sample_sum(cls)
            sums["d_box"] = sums["d_box"] + _per_sample_sum(box)
            confidence = confidence + ops.sum(weight)
        batch = ops.cast(ops.shape(pairs[0][0])[0], "float32")
        scale = batch / (confidence + 1.0)
        return {name: value * scale for name, value in sums.items()}


#: The distillation loss of each output layout (``Family.distill_layout``).
LOSSES_BY_LAYOUT = {"yolov3": DistillationLoss, "yolov2": SoftmaxDistillationLoss,
                    "retinanet": AnchorDistillationLoss, "rpn": AnchorDistillationLoss}


def distillation_loss_for(layout: str, temperature: float = DEFAULT_TEMPERATURE):
    """The distillation loss of a family's output layout.

    Raises:
        ValueError: a layout without one.
    """
    try:
        return LOSSES_BY_LAYOUT[layout](temperature)
    except KeyError:
        raise ValueError(f"no distillation loss for the output layout {layout!r}") from None
