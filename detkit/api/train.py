"""``train``: one training stage of a detector -> a run directory."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence


def train(data: str | os.PathLike, *, callbacks: Sequence[Any] = (),
          config: Mapping[str, Any] | None = None, **options: Any):
    """Train one stage (see :class:`detkit.training.run.TrainOptions` for ``options``).

    Args:
        data: the training dataset.
        callbacks: extra Keras callbacks (e.g. :class:`detkit.training.progress.RichProgress`).
        config: the resolved command config, recorded in the manifests.
        **options: ``stage``, ``model``, ``width``, ``anchors``, ``classes``, ``epochs``,
            ``batch_size``, ``weights``, ``val``, ``seed``, ``out`` and the rest of
            :class:`~detkit.training.run.TrainOptions`.

    Returns:
        :class:`detkit.training.run.TrainResult`.

    Raises:
        TypeError: an option name that does not exist.
        UsageError, DataError, ArtifactError, TrainingError: see
            :func:`detkit.training.run.run_training`.
    """
    from detkit.training.run import TrainOptions, run_training

    known = {field.name for field in dataclasses.fields(TrainOptions)} - {"data"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown train option(s): {', '.join(unknown)}")
    for key in ("anchors", "classes", "weights", "val", "out"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return run_training(TrainOptions(data=Path(data), **options), callbacks=callbacks,
                        config=None if config is None else dict(config))
