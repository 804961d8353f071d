"""``distill``: train a student detector with a frozen teacher's outputs -> a run directory."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

#: Options given as paths (converted from strings).
PATH_OPTIONS = ("anchors", "classes", "weights", "val", "out", "teacher", "teacher_anchors",
                "teacher_cache")


def distill(data: str | os.PathLike, *, teacher: str | os.PathLike,
            callbacks: Sequence[Any] = (), config: Mapping[str, Any] | None = None,
            **options: Any):
    """Distill one training stage (see :class:`detkit.distill.DistillOptions`).

    Args:
        data: the training dataset.
        teacher: the teacher's ``*.weights.h5`` or its run directory.
        callbacks: extra Keras callbacks (e.g. a progress display).
        config: the resolved command config, recorded in the manifests.
        **options: ``teacher_model``, ``teacher_width``, ``teacher_anchors``, ``alpha``,
            ``temperature``, ``teacher_cache`` and every option of ``train``
            (:class:`detkit.training.run.TrainOptions`).

    Returns:
        :class:`detkit.distill.DistillResult`.

    Raises:
        TypeError: an option name that does not exist.
        UsageError, DataError, ArtifactError, ArtifactMismatchError, TrainingError: see
            :func:`detkit.distill.run_distillation`.
    """
    from detkit.distill import DistillOptions, run_distillation

    known = {field.name for field in dataclasses.fields(DistillOptions)} - {"data", "teacher"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown distill option(s): {', '.join(unknown)}")
    options["teacher"] = teacher
    for key in PATH_OPTIONS:
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return run_distillation(DistillOptions(data=Path(data), **options), callbacks=callbacks,
                            config=None if config is None else dict(config))
