"""Training callbacks: NaN guard, history CSV, checkpoints with resume state, EMA weights.

Files of a run directory (all written atomically through :mod:`detkit.artifacts`):

- ``last.weights.h5``: the network after the latest good epoch (EMA weights with EMA).
- ``best.weights.h5``: the network at the best ``monitor`` value so far.
- ``state.weights.h5``: the training model's raw weights *and* optimizer variables
  (``YoloTrainingModel.save_weights``), the ``--resume`` point; its root attribute
  ``detkit_epoch`` is the number of epochs it holds.
- ``state.json``: the same epoch count, the best value and the settings to check on
  resume.
- ``history.csv``: one row per epoch.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from detkit.artifacts import (BEST_WEIGHTS, LAST_WEIGHTS, STATE_JSON, STATE_WEIGHTS,
                              atomic_path, ensure_space, write_json, write_text)
from detkit.errors import ArtifactError
from detkit.keras_compat import ema_variable_pairs
from detkit.training.monitor import improves, worst_value

HISTORY_CSV = "history.csv"
#: Root attribute of ``state.weights.h5``: completed epochs it holds.
EPOCH_ATTR = "detkit_epoch"


def current_lr(model: keras.Model) -> float:
    """The optimizer's learning rate now (a schedule evaluated at the current step)."""
    return float(ops.convert_to_numpy(model.optimizer.learning_rate))


def is_finite(value: Any) -> bool:
    """True for a finite number (``None`` counts as not finite)."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------
# NaN / Inf guard
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class NonFiniteLoss:
    """Where training met a NaN or Inf loss (0-based epoch and batch; ``batch`` -1 with
    ``name`` ``val_loss``: the validation of that epoch)."""

    epoch: int
    batch: int
    value: float
    images: list[str]
    name: str = "loss"

    def describe(self) -> str:
        if self.batch < 0:
            return (f"{self.name} became {self.value} in the validation after epoch "
                    f"{self.epoch + 1}")
        where = f"epoch {self.epoch + 1}, batch {self.batch + 1}"
        if self.images:
            shown = ", ".join(self.images[:4]) + (", ..." if len(self.images) > 4 else "")
            where += f" (images: {shown})"
        return f"loss became {self.value} at {where}"


class NanGuard(keras.callbacks.Callback):
    """Stop at the first batch whose running loss is NaN or Inf and remember where; stop
    too after an epoch whose ``val_loss`` is NaN or Inf (place it after callbacks that
    add ``val_*`` to the logs).

    The weights of that step are not saved anywhere: checkpoint callbacks skip an epoch
    whose loss (or ``val_loss``) is not finite, so ``last.weights.h5`` keeps the last
    good epoch.

    Args:
        batch_images: optional ``batch index -> image paths`` of the current epoch, to
            name the images of the bad batch.
    """

    def __init__(self, batch_images: Callable[[int], Sequence[str]] | None = None):
        super().__init__()
        self.batch_images = batch_images
        self.failure: NonFiniteLoss | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or is_finite(loss) or self.failure is not None:
            return
        images = list(self.batch_images(batch)) if self.batch_images else []
        self.failure = NonFiniteLoss(self._epoch, int(batch), float(loss), images)
        self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_loss")
        if value is None or is_finite(value) or self.failure is not None:
            return
        self.failure = NonFiniteLoss(int(epoch), -1, float(value), [], name="val_loss")
        self.model.stop_training = True


class LoaderEpoch(keras.callbacks.Callback):
    """Tell a batch loader which epoch ``fit`` is in (``loader.set_epoch(epoch)``).

    Keras calls a ``PyDataset``'s ``on_epoch_end`` once before the first epoch too (when
    it resets its iterator), so a loader that counts those calls runs one epoch ahead;
    setting the epoch at each epoch's start keeps its shuffling and augmentation draws
    tied to the real epoch, identical between a straight and a resumed run.
    """

    def __init__(self, loader):
        super().__init__()
        self.loader = loader

    def on_epoch_begin(self, epoch, logs=None):
        self.loader.set_epoch(epoch)


# ---------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------

class HistoryCSV(keras.callbacks.Callback):
    """Write ``history.csv``: ``epoch`` (1-based), ``lr``, then every logged value.

    Columns are fixed at the first epoch: ``epoch, lr``, the training values (those in
    ``order`` first, e.g. ``loss, xy, wh, obj, cls``), then the same for ``val_*``. Rows
    of earlier epochs (a resumed run) are kept; the whole file is rewritten atomically
    after each epoch.

    Args:
        path: the CSV file.
        keep_epochs: keep existing rows with ``epoch <= keep_epochs`` (resume), drop the
            rest; 0 starts a new file.
        order: preferred order of the logged names (others follow, sorted).
        always: columns present even in epochs that do not log them (the mAP of
            ``--eval-every``: blank cells in the epochs without an evaluation).
    """

    def __init__(self, path: str | os.PathLike, keep_epochs: int = 0,
                 order: Sequence[str] = ("loss",), always: Sequence[str] = ()):
        super().__init__()
        self.path = Path(path)
        self.order = list(order)
        self.always = list(always)
        self.columns: list[str] | None = None
        self.rows: list[dict[str, Any]] = []
        if keep_epochs > 0:
            self.columns, self.rows = read_history(self.path, keep_epochs)
            if self.columns is not None:  # a resumed run may evaluate what it did not
                self.columns += [k for k in self.always if k not in self.columns]

    def on_epoch_end(self, epoch, logs=None):
        # ReduceLROnPlateau logs "learning_rate"; the "lr" column already holds it.
        logs = {k: v for k, v in (logs or {}).items() if k != "learning_rate"}
        row = {"epoch": epoch + 1, "lr": current_lr(self.model), **logs}
        if self.columns is None:
            names = list(logs) + [k for k in self.always if k not in logs]
            train = sorted((k for k in names if not k.startswith("val_")), key=self._rank)
            val = sorted((k for k in names if k.startswith("val_")),
                         key=lambda k: self._rank(k[len("val_"):]))
            self.columns = ["epoch", "lr"] + train + val
        self.rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        for item in self.rows:
            writer.writerow({key: _csv_value(item.get(key, "")) for key in self.columns})
        write_text(self.path, buffer.getvalue())


    def _rank(self, name: str) -> tuple[int, str]:
        return (self.order.index(name) if name in self.order else len(self.order), name)


def _csv_value(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return value


def read_history(path: str | os.PathLike, epochs: int | None = None
                 ) -> tuple[list[str] | None, list[dict[str, Any]]]:
    """Columns and rows of a ``history.csv`` (``(None, [])`` when there is none); with
    ``epochs``, only the rows of the first ``epochs`` epochs."""
    path = Path(path)
    if not path.is_file():
        return None, []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [dict(row) for row in reader]
        columns = list(reader.fieldnames or [])
    return columns, rows if epochs is None else _first_epochs(rows, epochs)


def _first_epochs(rows: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """The history rows of epochs ``1..epochs``."""
    return [row for row in rows if int(float(row["epoch"])) <= epochs]


def trim_history(path: str | os.PathLike, epochs: int) -> None:
    """Drop the rows of ``history.csv`` past epoch ``epochs`` (an epoch logged but not
    kept: Ctrl-C before its checkpoint)."""
    columns, rows = read_history(path)
    kept = _first_epochs(rows, epochs)
    if columns is None or len(kept) == len(rows):
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------
# EMA weights
# ---------------------------------------------------------------------------------------

def _ema_pairs(model: keras.Model) -> list | None:
    """The optimizer's ``(variable, moving average)`` pairs; ``None`` without EMA or
    before the first step it applied (the averages, zeros until then, are set from the
    weights at that step; a mixed-precision loss scale skips the first steps whose
    gradients overflow)."""
    optimizer = model.optimizer
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if not getattr(optimizer, "use_ema", False):
        return None
    if int(ops.convert_to_numpy(optimizer.iterations)) == 0:
        return None
    return ema_variable_pairs(optimizer)


@contextlib.contextmanager
def ema_weights(model: keras.Model) -> Iterator[bool]:
    """Hold the optimizer's moving averages in the trainable variables for a while.

    Yields whether anything was swapped (False without EMA). The raw weights come back on
    exit, so the training run and the optimizer state are unaffected.
    """
    pairs = _ema_pairs(model)
    if pairs is None:
        yield False
        return
    variables = [variable for variable, _ in pairs]
    raw = [ops.convert_to_numpy(v) for v in variables]
    for variable, average in pairs:
        variable.assign(ops.convert_to_numpy(average))
    try:
        yield True
    finally:
        for variable, value in zip(variables, raw):
            variable.assign(value)


# ---------------------------------------------------------------------------------------
# Checkpoints and resume state
# ---------------------------------------------------------------------------------------

class RunCheckpoint(keras.callbacks.Callback):
    """After each epoch with a finite loss: ``last``, maybe ``best``, and the state.

    ``last``/``best`` hold ``network``'s weights (EMA averages when the optimizer keeps
    them); the state holds the training model's raw weights and optimizer variables.

    Args:
        run_dir: the run directory.
        network: the model whose weights ``last``/``best`` hold.
        monitor: the logged value that decides ``best`` (lower is better; higher for
            the mAP keys, see :mod:`detkit.training.monitor`); an epoch without it
            (mAP not evaluated) keeps ``best``.
        best: the best value so far (a resumed run); ``None``: none yet.
        best_epoch: the 1-based epoch of ``best`` (0: none yet).
        state_extra: settings stored in ``state.json`` (checked on resume).
        on_saved: called as ``on_saved(path, epoch, logs)`` after each weights file.
    """

    def __init__(self, run_dir: str | os.PathLike, network: keras.Model, *,
                 monitor: str = "val_loss", best: float | None = None, best_epoch: int = 0,
                 state_extra: Mapping[str, Any] | None = None,
                 on_saved: Callable[[Path, int, dict], None] | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.network = network
        self.monitor = monitor
        self.best = worst_value(monitor) if best is None else float(best)
        self.best_epoch = int(best_epoch)
        self.state_extra = dict(state_extra or {})
        self.on_saved = on_saved
        self.last_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not is_finite(logs.get("loss")):
            return
        if "val_loss" in logs and not is_finite(logs["val_loss"]):
            return  # NanGuard stops the run; the last good epoch's files stay
        value = logs.get(self.monitor)
        improved = is_finite(value) and improves(float(value), self.best, self.monitor)
        self._check_space(epoch, improved)
        # Ctrl-C waits for the epoch's files to be written together: weights that are
        # an epoch ahead of the resume state would not be what the run says it keeps.
        with deferred_interrupt(), ema_weights(self.model):
            self._save_network(self.run_dir / LAST_WEIGHTS, epoch, logs)
            if improved:
                self.best, self.best_epoch = float(value), epoch + 1
                self._save_network(self.run_dir / BEST_WEIGHTS, epoch, logs)
            save_state(self.run_dir, self.model, epoch + 1, {
                **self.state_extra, "monitor": self.monitor, "best": self.best,
                "best_epoch": self.best_epoch})
        self.last_epoch = epoch + 1

    def _check_space(self, epoch: int, improved: bool) -> None:
        """Stop before writing when the disk cannot take this epoch's files (a full disk
        mid-write can crash HDF5); the previous epoch's files stay as they are."""
        network = _variables_bytes(self.network.weights)
        state = _variables_bytes(self.model.weights) + _variables_bytes(
            getattr(self.model.optimizer, "variables", []))
        need = int(1.1 * (network * (2 if improved else 1) + state)) + (1 << 20)
        kept = (f"the weights of epoch {epoch} stay in {self.run_dir / LAST_WEIGHTS}"
                if epoch else "no epoch saved yet")
        ensure_space(self.run_dir, need, f"the checkpoint of epoch {epoch + 1} ({kept})")

    def _save_network(self, path: Path, epoch: int, logs: dict) -> None:
        # The manifest first, then the weights renamed into place: they never appear
        # without it.
        with atomic_path(path) as tmp:
            self.network.save_weights(tmp)
            if self.on_saved is not None:
                self.on_saved(path, epoch + 1, logs)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise :class:`KeyboardInterrupt`.

    Only in the main thread (where Python handles signals); elsewhere the block runs as
    is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _variables_bytes(variables: Sequence[Any]) -> int:
    """Bytes the values of Keras variables take (what a weights file stores)."""
    total = 0
    for variable in variables:
        total += int(np.prod(variable.shape)) * np.dtype(
            getattr(variable, "dtype", "float32")).itemsize
    return total


def save_state(run_dir: str | os.PathLike, model: keras.Model, epoch: int,
               extra: Mapping[str, Any]) -> None:
    """Write ``state.weights.h5`` (weights + optimizer, tagged with ``epoch``) then
    ``state.json``."""
    import h5py

    run_dir = Path(run_dir)
    with atomic_path(run_dir / STATE_WEIGHTS) as tmp:
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as handle:
            handle.attrs[EPOCH_ATTR] = int(epoch)
    write_json(run_dir / STATE_JSON, {"epoch": int(epoch), **extra})


def read_state(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The resume state of ``run_dir`` (``None`` when there is none).

    The epoch comes from ``state.weights.h5`` (written first), so a run interrupted
    between the two files resumes from what the weights hold.

    Raises:
        ArtifactError: a corrupt state file, or ``state.json`` without its weights.
    """
    import h5py

    run_dir = Path(run_dir)
    json_path, weights_path = run_dir / STATE_JSON, run_dir / STATE_WEIGHTS
    if not json_path.is_file():
        return None
    try:
        state = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"corrupt resume state: {err.msg}", path=json_path,
                            line=err.lineno) from None
    if not weights_path.is_file():
        raise ArtifactError(f"resume state without its {STATE_WEIGHTS}", path=json_path)
    try:
        with h5py.File(weights_path, "r") as handle:
            state["epoch"] = int(handle.attrs.get(EPOCH_ATTR, state.get("epoch", 0)))
    except OSError as err:
        raise ArtifactError(f"unreadable resume weights ({err})", path=weights_path) from None
    return state


def load_state_weights(run_dir: str | os.PathLike, model: keras.Model) -> None:
    """Restore the training model's weights and optimizer variables (optimizer built)."""
    path = Path(run_dir) / STATE_WEIGHTS
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as err:
        raise ArtifactError(f"cannot restore the resume state ({err}); "
                            f"was it written with other settings?", path=path) from None
