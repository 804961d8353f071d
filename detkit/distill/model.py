"""``train``'s training model with a frozen teacher: :class:`DistillationTrainingModel`."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from detkit.distill.loss import DistillationLoss, as_list
from detkit.distill.scales import StridePair
from detkit.training.model import YoloTrainingModel

#: Key of the cached teacher outputs in a batch's targets (``--teacher-cache``).
TEACHER_KEY = "teacher"
#: Default of ``--alpha``.
DEFAULT_ALPHA = 0.5


class DistillationTrainingModel(YoloTrainingModel):
    """``train``'s :class:`~detkit.training.model.YoloTrainingModel` plus a teacher.

    Per image the data loss is ``(1 - alpha) * sum(ground-truth terms) + alpha *
    sum(distillation terms)`` while training, and the ground-truth terms alone when
    evaluating (``val_loss``). Every term is logged unweighted. The teacher runs
    in-graph on the student's batch (the same augmented pixels), in inference mode
    (``training=False``: batch-norm statistics frozen), and is never trained; when the
    targets carry ``"teacher"`` (cached outputs, see :mod:`detkit.distill.cache`)
    those are used instead.

    Args:
        network: the student (image -> list of raw outputs, coarsest first).
        loss: the ground-truth :class:`detkit.losses.YoloV3Loss`.
        teacher: the frozen teacher detector (same input, raw outputs).
        distill_loss: a :class:`DistillationLoss`.
        pairs: the scales teacher and student share
            (:func:`detkit.distill.scales.match_strides`).
        alpha: weight of the distillation terms, in ``[0, 1]``.
    """

    def __init__(self, network: keras.Model, loss: Any, teacher: keras.Model,
                 distill_loss: DistillationLoss, pairs: Sequence[StridePair],
                 alpha: float = DEFAULT_ALPHA, **kwargs: Any):
        super().__init__(network, loss, extra_term_names=distill_loss.term_names,
                         name=kwargs.pop("name", f"{network.name}_distillation"), **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; received {alpha!r}")
        teacher.trainable = False
        self.teacher = teacher
        self.distill_loss = distill_loss
        self.pairs = tuple(pairs)
        self.alpha = float(alpha)

    def teacher_outputs(self, x, y) -> list:
        """The teacher's raw outputs at the shared scales (cached ones if ``y`` has them)."""
        cached = y.get(TEACHER_KEY) if isinstance(y, dict) else None
        if cached is not None:
            return as_list(cached)
        raw = as_list(self.teacher(x, training=False))
        return [raw[pair.teacher_index] for pair in self.pairs]

    def loss_terms(self, x, y, y_pred, training=True):
        """Ground-truth and distillation terms ``{name: (B,)}`` and the data loss ``(B,)``."""
        y_pred = list(y_pred)
        terms = self.detection_loss.terms(y, y_pred)
        student = [y_pred[pair.student_index] for pair in self.pairs]
        distill_terms = self.distill_loss.terms(self.teacher_outputs(x, y), student)
        ground_truth = sum(terms.values())
        # Python-level branches: alpha 0 is plain training, bit for bit.
        if not training or self.alpha == 0.0:
            data = ground_truth
        elif self.alpha == 1.0:
            data = sum(distill_terms.values())
        else:
            data = ((1.0 - self.alpha) * ground_truth +
                    self.alpha * sum(distill_terms.values()))
        return {**terms, **distill_terms}, data
