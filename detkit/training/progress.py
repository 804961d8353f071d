"""A Rich progress display for ``fit``: a bar per epoch with the per-term losses."""

from __future__ import annotations

from typing import Sequence

import keras
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

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


class RichProgress(keras.callbacks.Callback):
    """Show ``epoch i/N [bar] step/steps loss ... xy ... wh ... obj ... cls ...`` and
    print one summary line per epoch (with ``val_*`` values and the learning rate).

    Args:
        console: where to draw (the CLI passes its stderr console).
        epochs: total epochs of the run (for the ``i/N`` label).
    """

    def __init__(self, console: Console, epochs: int):
        super().__init__()
        self.console = console
        self.epochs = int(epochs)
        self._progress: Progress | None = None
        self._task = None
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"), console=self.console, transient=True)
        self._progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        steps = (self.params or {}).get("steps")
        self._task = self._progress.add_task("train", total=steps, losses="",
                                             epoch=f"{epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        if self._task is not None:
            logs = logs or {}
            self._progress.update(self._task, completed=batch + 1,
                                  losses=_format(logs, _ordered(logs, self._first())))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        train = _format(logs, _ordered(logs, self._first()))
        val = _format(logs, _ordered(logs, self._first(), "val_"))
        line = f"epoch {epoch + 1}/{self.epochs}  {train}"
        if val:
            line += f"  |  {val}"
        line += f"  lr {current_lr(self.model):.3g}"
        self.console.print(line, highlight=False, soft_wrap=True)

    def _first(self) -> list[str]:
        return ["loss", *getattr(self.model, "term_names", ())]

    def on_train_end(self, logs=None):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
