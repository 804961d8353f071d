"""TensorBoard logs of a run, in ``RUN_DIR/tensorboard/`` (``tensorboard --logdir RUN_DIR``).

One scalar per logged value and epoch, at step = the 1-based epoch (as history.csv):
``train/<term>`` (``train/loss``, ``train/xy``, ...), ``val/<term>``, ``lr``, and with
``--eval-every`` ``metrics/map``, ``metrics/map50``, ``metrics/fitness`` and images
``val_images/<i>`` (a few validation images, true boxes white, predictions in class
colors). Written by :class:`~detkit.training.event_file.EventFile`, so it works on every
Keras backend.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

import keras

from detkit.training.callbacks import current_lr
from detkit.training.monitor import MAP_KEYS

#: Folder of the event files inside the run directory.
TENSORBOARD_DIR = "tensorboard"
#: Tags of the mAP logs.
METRIC_TAGS = {key: "metrics/" + key[len("val_"):] for key in MAP_KEYS}


def scalar_tags(logs: dict, lr: float) -> dict[str, float]:
    """``{tag: value}`` of one epoch's logs (see the module docstring)."""
    tags = {"lr": float(lr)}
    for key, value in logs.items():
        if key == "learning_rate" or value is None:
            continue
        if key in METRIC_TAGS:
            tag = METRIC_TAGS[key]
        elif key.startswith("val_"):
            tag = "val/" + key[len("val_"):]
        else:
            tag = "train/" + key
        try:
            tags[tag] = float(value)
        except (TypeError, ValueError):
            continue
    return tags


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package can be imported."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLog(keras.callbacks.Callback):
    """Write each epoch's scalars (and the evaluation's drawn images) to event files.

    Place it after the callbacks that add values to the logs (validation, mAP).

    Args:
        log_dir: the event files' folder (``RUN_DIR/tensorboard``).
        images: the :class:`~detkit.training.evaluation.MapEvaluation` whose drawings
            are logged at the epochs it evaluates (``None``: no images).
    """

    def __init__(self, log_dir: str | os.PathLike, images=None):
        super().__init__()
        from detkit.training.event_file import EventFile

        self.events = EventFile(Path(log_dir))
        self.images: Optional[object] = images

    def on_epoch_end(self, epoch, logs=None):
        step = int(epoch) + 1
        self.events.scalars(step, scalar_tags(dict(logs or {}), current_lr(self.model)))
        source = self.images
        if source is not None and source.drawn_epoch == epoch and source.drawings:
            self.events.images(step, {f"val_images/{i}": image
                                      for i, image in enumerate(source.drawings)})
        self.events.flush()

    def on_train_end(self, logs=None):
        self.events.close()
