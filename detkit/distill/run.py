"""The stage behind ``detkit distill``: ``train``'s run with the teacher plugged in.

:func:`run_distillation` is :func:`detkit.training.run.run_training` (stages,
checkpoints, resume, NaN guard, mixed precision) with :class:`DistillExtension`'s hooks:
the teacher is resolved and checked before any file is written, built after the student
(leaving the random draws of a ``train`` run as they were), and run in-graph by
:class:`~detkit.distill.model.DistillationTrainingModel` or read from ``--teacher-cache``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from detkit.distill.cache import (TeacherCache, TeacherOutputBatches, cache_settings,
                                  write_teacher_cache)
from detkit.distill.loss import DEFAULT_TEMPERATURE, DistillationLoss
from detkit.distill.model import DEFAULT_ALPHA, DistillationTrainingModel
from detkit.distill.scales import StridePair, match_strides, require_pairs
from detkit.distill.teacher import (TeacherSpec, build_teacher, preserved_random_state,
                                    resolve_teacher)
from detkit.errors import ArtifactMismatchError, UsageError
from detkit.training.model import YoloTrainingModel
from detkit.training.run import RunExtension, TrainOptions, TrainResult, run_training


@dataclasses.dataclass
class DistillOptions(TrainOptions):
    """Every option of ``detkit distill``: ``train``'s plus the teacher's.

    Attributes (beyond :class:`~detkit.training.run.TrainOptions`):
        teacher: the teacher's ``*.weights.h5`` or its run directory (required).
        teacher_model, teacher_width: its architecture (default: from its manifest).
        teacher_anchors: its anchors file (default: manifest, student's, model default).
        alpha: weight of the distillation terms in ``[0, 1]`` (0: ground truth only).
        temperature: ``T`` of the class logits.
        teacher_cache: HDF5 file of the teacher's outputs on the non-augmented images,
            computed when missing and reused after (requires ``augment=False``).
    """

    out: Path = Path("runs/distill")
    teacher: Path | None = None
    teacher_model: str | None = None
    teacher_width: float | None = None
    teacher_anchors: Path | None = None
    alpha: float = DEFAULT_ALPHA
    temperature: float = DEFAULT_TEMPERATURE
    teacher_cache: Path | None = None

    def resolved(self) -> "DistillOptions":
        """:meth:`TrainOptions.resolved` plus the distillation options' checks.

        Raises:
            UsageError: naming the option and the value received.
        """
        from detkit.models import MODEL_NAMES

        opts = super().resolved()
        if opts.teacher is None:
            raise UsageError("--teacher is required (a *.weights.h5 file or a run "
                             "directory)")
        if not (math.isfinite(opts.alpha) and 0.0 <= opts.alpha <= 1.0):
            raise UsageError(f"--alpha must be in [0, 1], got {opts.alpha!r}")
        if not (math.isfinite(opts.temperature) and opts.temperature > 0):
            raise UsageError(f"--temperature must be a positive number, "
                             f"got {opts.temperature!r}")
        if opts.teacher_model is not None and opts.teacher_model not in MODEL_NAMES:
            raise UsageError(f"--teacher-model must be one of {', '.join(MODEL_NAMES)}, "
                             f"got {opts.teacher_model!r}")
        if opts.teacher_width is not None and not opts.teacher_width > 0:
            raise UsageError(f"--teacher-width must be positive, got {opts.teacher_width!r}")
        if opts.bottlenecks is not None:
            raise UsageError("distill trains on images, which the teacher must see: "
                             "--bottlenecks is not supported (train the heads with "
                             "`detkit train --bottlenecks` first, then distill)")
        if opts.teacher_cache is not None and opts.augment:
            raise UsageError("--teacher-cache needs --no-augment: cached teacher outputs "
                             "are of the letterboxed images, and the teacher must see the "
                             "pixels the student sees")
        return dataclasses.replace(opts, teacher=Path(opts.teacher), teacher_cache=(
            None if opts.teacher_cache is None else Path(opts.teacher_cache)))


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


class DistillExtension(RunExtension):
    """The hooks that turn :func:`~detkit.training.run.run_training` into distillation."""

    command = "distill"

    def __init__(self) -> None:
        self.opts: DistillOptions | None = None
        self.spec: TeacherSpec | None = None
        self.pairs: list[StridePair] = []
        self.settings: dict[str, Any] = {}
        self.report = None
        self.notes: list[str] = []

    def prepare(self, opts: DistillOptions, anchors: np.ndarray, class_names: list[str],
                notes: list[str]) -> dict[str, Any]:
        """Resolve the teacher, check its classes, pair the scales (before any file)."""
        from detkit.artifacts import check_agree, sha256_file

        self.opts = opts
        spec = resolve_teacher(opts.teacher, model=opts.teacher_model,
                               width=opts.teacher_width, anchors=opts.teacher_anchors,
                               student_anchors=anchors)
        if spec.class_names is not None:
            check_agree(f"the teacher {spec.weights}", {"class_names": spec.class_names},
                        "this command", {"class_names": class_names}, keys=("class_names",))
        pairs, skipped = match_strides(spec.anchors, anchors)
        require_pairs(pairs, skipped)
        if skipped:
            notes.append("distilling at stride " + ", ".join(str(p.stride) for p in pairs)
                         + " only; skipped " + "; ".join(skipped))
        self.spec, self.pairs = spec, pairs
        self.settings = {"teacher_model": spec.model, "teacher_width": spec.width,
                         "teacher_sha256": sha256_file(spec.weights),
                         "alpha": float(opts.alpha), "temperature": float(opts.temperature),
                         "distill_strides": [p.stride for p in pairs]}
        return dict(self.settings)

    def inputs(self) -> list[Path]:
        return [self.spec.weights] + ([Path(self.opts.teacher_anchors)]
                                      if self.opts.teacher_anchors is not None else [])

    def training_model(self, detector: keras.Model, loss: Any) -> YoloTrainingModel:
        # Building draws initializer seeds from the global generators, which also order
        # fit()'s batches: left untouched, a distill run draws what a train run draws.
        with preserved_random_state():
            teacher, self.report = build_teacher(self.spec, loss.num_classes,
                                                 self.opts.input_size)
        return DistillationTrainingModel(detector, loss, teacher,
                                         DistillationLoss(self.opts.temperature),
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


def run_distillation(opts: DistillOptions, *, callbacks: Sequence[Any] = (),
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
    extension = DistillExtension()
    result = run_training(opts, callbacks=callbacks, config=config, extension=extension)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    fields["notes"] = list(result.notes) + extension.notes
    spec = extension.spec
    return DistillResult(**fields, teacher=spec.describe() if spec else "",
                         strides=[p.stride for p in extension.pairs],
                         alpha=float(opts.alpha),
                         teacher_report=extension.report.summary() if extension.report
                         else None)
