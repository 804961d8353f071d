"""``detkit train DATA``: one training stage of a detector -> a run directory.

Writes ``OUT/best.weights.h5``, ``OUT/last.weights.h5``, ``OUT/history.csv`` and
``OUT/manifest.json`` (see :func:`detkit.training.run.run_training`).
"""

from __future__ import annotations

from detkit.options import as_config
from detkit.progress import SILENT, Progress
from detkit.training.options import TrainOptions as Options

__all__ = ["Options", "run"]


def run(opts: Options, progress: Progress = SILENT):
    """Train one stage.

    Returns:
        :class:`detkit.training.run.TrainResult`.

    Raises:
        UsageError, DataError, ArtifactError, TrainingError: see
            :func:`detkit.training.run.run_training`.
    """
    from detkit.training.progress import ProgressCallback
    from detkit.training.run import run_training

    return run_training(opts, callbacks=[ProgressCallback(progress, opts.total_epochs)],
                        config=as_config(opts))
