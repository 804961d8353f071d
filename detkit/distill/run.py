"""The stage behind ``detkit distill``: ``train``'s run with the teacher plugged in.

:func:`run_distillation` is :func:`detkit.training.run.run_training` (stages,
checkpoints, resume, NaN guard, mixed precision) with the :class:`Distillation` objective:
the teacher is resolved and checked before any file is written, built after the student
(leaving the random draws of a ``train`` run as they were), and run in-graph by
:class:`~detkit.distill.model.DistillationTrainingModel` or read from ``--teacher-cache``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from detkit.artifacts import Note, check_agree, sha256_file
from detkit.distill.cache import (TeacherCache, TeacherOutputBatches, cache_settings,
                                  write_teacher_cache)
from detkit.distill.loss import distillation_loss_for
from detkit.distill.model import DEFAULT_ALPHA, DistillationTrainingModel
from detkit.distill.scales import StridePair, match_strides, require_pairs
from detkit.distill.teacher import (TeacherSpec, build_teacher, preserved_random_state,
                                    resolve_teacher)
from detkit.errors import ArtifactMismatchError
from detkit.families import get_family
from detkit.training.model import YoloTrainingModel
from detkit.training.objective import Objective
from detkit.training.run import TrainResult, run_training


@dataclasses.dataclass
class DistillResult(TrainResult):
    """:class:`~detkit.training.run.TrainResult` plus what the teacher was.

    Attributes:
        teacher: the teacher, in words (architecture, width, weights file).
        strides: the output strides distilled.
        alpha: the weight of the distillation terms.
        teacher_report: how the teacher's weights loaded.
    """

    teacher: str = ""
    strides: list[int] = dataclasses.field(default_factory=list)
    alpha: float = DEFAULT_ALPHA
    teacher_report: str | None = None


class Distillation(Objective):
    """The objective of ``distill``: the ground-truth loss plus a frozen teacher's.

    Made once the run's anchors and classes are known, before any file is written: the
    teacher is resolved, its classes checked and the shared output strides paired here;
    it is built later, after the student, so a distill run draws the random numbers a
    train run draws.

    Args:
        opts: the distill command's resolved options.
        anchors: the student's ``(K, 2)`` anchors; class_names: the dataset's classes.
        notes: the run's notes (a skipped stride is reported there).

    Raises:
        ArtifactError, ArtifactMismatchError: see :func:`run_distillation`.
    """

    command = "distill"

    def __init__(self, opts: Any, anchors: np.ndarray, class_names: list[str],
                 notes: list[str]) -> None:
        super().__init__()
        self.opts = opts
        spec = resolve_teacher(opts.teacher, model=opts.teacher_model,
                               width=opts.teacher_width, anchors=opts.teacher_anchors,
                               student_anchors=anchors, student_model=opts.model,
                               backbone=opts.teacher_backbone)
        if spec.class_names is not None:
            check_agree(f"the teacher {spec.weights}", {"class_names": spec.class_names},
                        "this command", {"class_names": class_names}, keys=("class_names",))

        student = get_family(opts.model)
        self.layout = student.distill_layout
        pairs, skipped = match_strides(spec.anchors, anchors, get_family(spec.model).strides,
                                       student.strides)
        require_pairs(pairs, skipped)
        if skipped:
            notes.append("distilling at stride " + ", ".join(str(p.stride) for p in pairs)
                         + " only; skipped " + "; ".join(skipped))
        self.spec: TeacherSpec = spec
        self.pairs: list[StridePair] = pairs
        self.report = None
        self.run_notes = notes               # told before the epochs
        self.settings = {"teacher_model": spec.model, "teacher_width": spec.width,
                         "teacher_backbone": spec.backbone,
                         "teacher_sha256": sha256_file(spec.weights),
                         "alpha": float(opts.alpha), "temperature": float(opts.temperature),
                         "distill_strides": [p.stride for p in pairs]}
        self.inputs = [spec.weights] + ([Path(opts.teacher_anchors)]
                                        if opts.teacher_anchors is not None else [])

    def training_model(self, detector: keras.Model, loss: Any) -> YoloTrainingModel:
        # Building draws initializer seeds from the global generators, which also order
        # fit()'s batches: left untouched, a distill run draws what a train run draws.
        with preserved_random_state():
            teacher, self.report = build_teacher(self.spec, loss.num_classes,
                                                 self.opts.input_size)
        loaded = f"; {self.report.summary().splitlines()[0]}" if self.report else ""
        self.run_notes.append(Note(f"teacher: {self.spec.describe()}; strides "
                                   f"{', '.join(str(p.stride) for p in self.pairs)}; "
                                   f"alpha {float(self.opts.alpha):g}{loaded}"))
        return DistillationTrainingModel(detector, loss, teacher,
                                         distillation_loss_for(self.layout,
                                                               self.opts.temperature),
                                         self.pairs, self.opts.alpha)

    def train_batches(self, base: keras.utils.PyDataset,
                      model: YoloTrainingModel) -> keras.utils.PyDataset:
        """``base``, with the cached teacher outputs added under ``--teacher-cache``."""
        opts = self.opts
        if opts.teacher_cache is None:
            return base
        expected = cache_settings(self.spec, input_size=opts.input_size,
                                  num_classes=model.detection_loss.num_classes,
                                  pairs=self.pairs,
                                  image_paths=[r.image_path for r in base.records])
        path = Path(opts.teacher_cache)
        if path.exists():
            self.notes.append(f"reusing the teacher's outputs cached in {path}")
        else:
            write_teacher_cache(path, model.teacher, base.records,
                                input_size=opts.input_size, batch_size=opts.batch_size,
                                pairs=self.pairs, settings=expected,
                                inputs=[self.spec.weights], workers=opts.workers)
            self.notes.append(f"cached the teacher's outputs in {path}")
        cache = TeacherCache(path)
        try:
            cache.check(expected)
        except ArtifactMismatchError:
            cache.close()
            raise
        return TeacherOutputBatches(base, cache)


def run_distillation(opts: Any, *, callbacks: Sequence[Any] = (),
                     config: dict | None = None) -> DistillResult:
    """Distill one stage end to end into a run directory (files as ``train``'s).

    Raises:
        UsageError: bad option values (``--alpha``, ``--teacher-cache`` with
            augmentation, ...).
        DataError: unreadable dataset, anchors or class names.
        ArtifactError: missing or unreadable teacher, cache or resume state.
        ArtifactMismatchError: a teacher whose weights, classes or anchors do not fit
            (naming what differs), or no shared output stride.
        TrainingError: NaN/Inf loss.
    """
    made: list[Distillation] = []

    def objective_for(ctx) -> Distillation:
        made.append(Distillation(ctx.opts, ctx.anchors, ctx.class_names, ctx.notes))
        return made[0]

    result = run_training(opts, callbacks=callbacks, config=config,
                          objective_for=objective_for)
    distillation = made[0]
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    fields["notes"] = list(result.notes) + distillation.notes
    return DistillResult(**fields, teacher=distillation.spec.describe(),
                         strides=[p.stride for p in distillation.pairs],
                         alpha=float(opts.alpha),
                         teacher_report=distillation.report.summary()
                         if distillation.report else None)
