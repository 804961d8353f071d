"""What picks ``best.weights.h5``: the ``--monitor`` choice as a logged key and a direction.

``val_loss`` (``loss`` without ``--val``) is lower-is-better; the COCO figures that
:mod:`detkit.training.evaluation` adds to the logs every ``--eval-every`` epochs
(``val_map`` = AP@[.5:.95], ``val_map50`` = AP@.5, ``val_fitness`` = 0.1 AP50 + 0.9 AP,
as ultralytics) are higher-is-better.
"""

from __future__ import annotations

import math

import keras

#: ``--monitor`` choice -> the key in the epoch logs and history.csv.
MONITOR_KEYS = {"val_loss": "val_loss", "map": "val_map", "map50": "val_map50",
                "fitness": "val_fitness"}
#: Logged keys of the mAP evaluation, in history.csv order.
MAP_KEYS = ("val_map", "val_map50", "val_fitness")


def monitor_mode(key: str) -> str:
    """``"max"`` for a mAP key, ``"min"`` for a loss."""
    return "max" if key in MAP_KEYS else "min"


def worst_value(key: str) -> float:
    """The value every real one improves on: ``inf`` for a loss, ``-inf`` for a mAP."""
    return -math.inf if monitor_mode(key) == "max" else math.inf


def improves(value: float, best: float, key: str) -> bool:
    """Whether ``value`` beats ``best`` for ``key`` (strictly)."""
    return value > best if monitor_mode(key) == "max" else value < best


def image_phase_best(key: str, best: float, best_epoch: int,
                     cache_epochs: int) -> tuple[float, int]:
    """The best value and 1-based epoch the image phase of a ``--bottlenecks`` run starts
    from.

    The training ``loss`` (the monitor without ``--val``) on cached, unaugmented features
    is not comparable with the loss on augmented images, so such a run picks its best
    among the image epochs; validation figures carry over from the cached phase.
    """
    if key == "loss" and best_epoch <= cache_epochs:
        return worst_value(key), 0
    return best, best_epoch


class SparseEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that skips epochs without the monitored value (mAP is computed
    every ``--eval-every`` epochs), so patience counts evaluations."""

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get(self.monitor) is not None:
            super().on_epoch_end(epoch, logs)


class SparsePlateau(keras.callbacks.ReduceLROnPlateau):
    """``ReduceLROnPlateau`` that skips epochs without the monitored value."""

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get(self.monitor) is not None:
            super().on_epoch_end(epoch, logs)
