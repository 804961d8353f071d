"""``fit``'s progress reported to a :class:`detkit.progress.Progress`: a bar per epoch
with the per-term losses, and a summary line per epoch (the CLI draws them with Rich)."""

from __future__ import annotations

from typing import Sequence

import keras

from detkit.progress import Progress
from detkit.training.callbacks import current_lr


def _format(logs: dict, keys: Sequence[str]) -> str:
    return "  ".join(f"{key} {float(logs[key]):.4g}" for key in keys if key in logs)


def _ordered(logs: dict, first: Sequence[str], prefix: str = "") -> list[str]:
    """Keys of ``logs`` starting with ``prefix`` (or not ``val_`` for ""), ``first`` first."""
    names = [k[len(prefix):] for k in logs
             if (k.startswith(prefix) if prefix else not k.startswith("val_"))
             and k != "learning_rate"]
    rank = {name: i for i, name in enumerate(first)}
    return [prefix + n for n in sorted(names, key=lambda n: (rank.get(n, len(rank)), n))]


class ProgressCallback(keras.callbacks.Callback):
    """Report ``epoch i/N [bar] step/steps loss ... xy ... wh ... obj ... cls ...`` and
    one summary line per epoch (with ``val_*`` values and the learning rate).

    Args:
        progress: where to report (the CLI passes a Rich display).
        epochs: total epochs of the run (for the ``i/N`` label).
    """

    def __init__(self, progress: Progress, epochs: int):
        super().__init__()
        self.progress = progress
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.progress.start(f"epoch {epoch + 1}/{self.epochs}", (self.params or {}).get("steps"))

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.progress.update(batch + 1, _format(logs, _ordered(logs, self._first())))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.progress.finish()
        train = _format(logs, _ordered(logs, self._first()))
        val = _format(logs, _ordered(logs, self._first(), "val_"))
        line = f"epoch {epoch + 1}/{self.epochs}  {train}"
        if val:
            line += f"  |  {val}"
        line += f"  lr {current_lr(self.model):.3g}"
        self.progress.note(line)

    def _first(self) -> list[str]:
        return ["loss", *getattr(self.model, "term_names", ())]

    def on_train_end(self, logs=None):
        self.progress.finish()
