"""``detkit distill DATA --teacher T``: train a student with a frozen teacher's outputs.

Writes what ``train`` writes (see :func:`detkit.distill.run_distillation`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from detkit.artifacts import check_run_folder, manifest_path, run_files
from detkit.choices import BACKBONES
from detkit.commands.train import Options as TrainOptions
from detkit.errors import ArtifactError, UsageError
from detkit.families import MODEL_NAMES, get_family
from detkit.models.recorded import RecordedSettings
from detkit.options import as_config, option
from detkit.progress import SILENT, Progress

__all__ = ["Options", "run"]


@dataclasses.dataclass(kw_only=True)
class Options(TrainOptions):
    """Every option of ``detkit distill``: ``train``'s plus the teacher's."""

    out: Path = option(Path("runs/distill"), "Run directory.", role="output", folder=True,
                       writes=run_files)
    teacher: Optional[Path] = option(
        None, "The teacher: its *.weights.h5, or a run directory (best.weights.h5 and the "
              "manifest naming its architecture). Required.", role="input")
    teacher_model: Optional[str] = option(
        None, "Teacher architecture (default: from its manifest).", choices=MODEL_NAMES)
    teacher_width: Optional[float] = option(
        None, "Teacher channel width multiplier (default: from its manifest, else 1.0).",
        above=0)
    teacher_backbone: Optional[str] = option(
        None, "Teacher body (default: from its manifest, else its model's own).",
        choices=BACKBONES)
    teacher_anchors: Optional[Path] = option(
        None, "Teacher anchors file (default: its manifest's, else the student's when the "
              "count fits, else its model's).", role="input")
    alpha: float = option(0.5, "Weight of the teacher terms in [0, 1]: loss = (1 - alpha) "
                               "ground truth + alpha distillation (0: ground truth only).",
                          low=0, high=1)
    temperature: float = option(1.0, "Temperature of the class logits in the distillation "
                                     "term.", above=0)
    teacher_cache: Optional[Path] = option(
        None, "HDF5 file of the teacher's outputs on the letterboxed images: computed "
              "once, reused after (needs --no-augment).", role="output")
    # train's options that distill cannot honour are none of its own (not on its command
    # line or in its --help); their defaults stand: the teacher must see every image the
    # student trains on (no cached features), at one input size (no multi-scale).
    bottlenecks: Optional[Path] = None
    labels: Optional[Path] = None
    bottleneck_epochs: int = 0
    multi_scale: float = 0.0
    #: Those fields (train's options fixed at their defaults here).
    FIXED: ClassVar[tuple[str, ...]] = ("bottlenecks", "labels", "bottleneck_epochs",
                                        "multi_scale")

    def recorded_start(self) -> Optional[RecordedSettings]:
        """:meth:`TrainOptions.recorded_start`, plus, when that holds no anchors and
        ``--anchors`` is not given, the anchors the teacher's manifest records if the
        student's model takes as many (then every output stride pairs: a student of the
        family's default anchors would share none with a teacher of k-means anchors),
        with the input size they are in pixels of (``--input-size`` not given: the
        teacher's). Nothing else is taken from the teacher.
        """
        start = super().recorded_start()
        if ((start is not None and start.anchors is not None) or self.anchors is not None
                or self.teacher is None):
            return start
        from detkit.distill.teacher import teacher_weights_and_manifest

        try:
            weights, manifest = teacher_weights_and_manifest(self.teacher)
        except ArtifactError:               # reported, naming the path, by the teacher's check
            return None
        anchors = manifest.get("anchors")
        anchors = None if anchors is None else np.asarray(anchors, np.float32).reshape(-1, 2)
        model = self.model if start is None else start.values.get("model", self.model)
        if anchors is None or len(anchors) != get_family(model).num_anchors:
            return start
        size = manifest.get("input_size")
        values = {} if start is None else dict(start.values)
        sources = {} if start is None else dict(start.sources)
        if (isinstance(size, int) and not isinstance(size, bool)
                and "input_size" not in values):
            values["input_size"] = size
            sources["input_size"] = manifest_path(weights)
        if start is not None:                  # the student's start names its architecture
            return dataclasses.replace(start, anchors=anchors, values=values,
                                       sources=sources)
        return RecordedSettings(manifest_path(weights), values, anchors, None)

    def resolved(self) -> "Options":
        """:meth:`TrainOptions.resolved` plus the distillation options' checks.

        Raises:
            UsageError: naming the option and the value received.
        """
        opts = super().resolved()
        if opts.teacher is None:
            raise UsageError("--teacher is required (a *.weights.h5 file or a run "
                             "directory)")
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




def run(opts: Options, progress: Progress = SILENT):
    """Distill one training stage.

    Returns:
        :class:`detkit.distill.DistillResult`.

    Raises:
        UsageError, DataError, ArtifactError, ArtifactMismatchError, TrainingError: see
            :func:`detkit.distill.run_distillation`.
    """
    opts = opts.with_run_options()
    if opts.strategy != "multi-worker":   # before Keras loads: a refused --out exits at once
        check_run_folder(opts.out, resume=opts.resume, exist_ok=opts.exist_ok)
    from detkit.distill import run_distillation
    from detkit.training.progress import ProgressCallback

    return run_distillation(opts, callbacks=[ProgressCallback(progress, opts.epochs)],
                            config=as_config(opts))
