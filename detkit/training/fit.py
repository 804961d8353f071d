"""Fitting a compiled training model with the run directory's callbacks.

:func:`fit_network` is the one fit routine of every phase (images, cached features):
it writes ``last``/``best`` weights, the resume state and ``history.csv`` after every
epoch and stops cleanly on a NaN/Inf loss. :func:`make_optimizer` and
:func:`schedule_callbacks` give the optimizer and learning-rate callbacks of a phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import keras

from detkit.errors import TrainingError
from detkit.training.callbacks import (HISTORY_CSV, LAST_WEIGHTS, HistoryCSV, NanGuard,
                                       RunCheckpoint)
from detkit.training.monitor import (MAP_KEYS, SparseEarlyStopping, SparsePlateau,
                                     monitor_mode)
from detkit.training.schedule import LinearWarmup, WarmupCosine

if TYPE_CHECKING:  # the train command's options (the stage reads their attributes)
    from detkit.commands.train import Options as TrainOptions

#: Global gradient-norm clip of the optimizer.
CLIP_NORM = 10.0
#: Momentum of the weights' exponential moving average (``--ema``).
EMA_MOMENTUM = 0.99
#: ``ReduceLROnPlateau`` of the plateau schedule, and ``EarlyStopping``'s min delta.
PLATEAU_FACTOR = 0.1
PLATEAU_PATIENCE = 3
MIN_LR = 1e-7


class FirstBatches(keras.utils.PyDataset):
    """The first ``steps`` batches of a ``PyDataset`` each epoch (``--steps-per-epoch``)."""

    def __init__(self, base: keras.utils.PyDataset, steps: int):
        super().__init__(workers=base.workers, use_multiprocessing=base.use_multiprocessing,
                         max_queue_size=base.max_queue_size)
        self.base = base
        self.steps = int(steps)

    def __len__(self) -> int:
        return min(self.steps, len(self.base))

    def __getitem__(self, index: int):
        return self.base[index]

    def on_epoch_end(self) -> None:
        self.base.on_epoch_end()


def batch_images_of(batches) -> Callable[[int], list[str]]:
    """``batch index -> image paths`` of a :class:`DetectionBatches` in its current epoch."""
    def images(batch: int) -> list[str]:
        order = batches.order[batch * batches.batch_size:(batch + 1) * batches.batch_size]
        return [str(batches.records[i].image_path) for i in order]
    return images


def make_optimizer(lr: float, steps_per_epoch: int, opts: TrainOptions):
    """Adam with clipping, warmup and the cosine schedule (plateau: a plain rate)."""
    warmup_steps = int(round(opts.warmup_epochs * steps_per_epoch))
    if opts.schedule == "cosine":
        rate = WarmupCosine(lr, total_steps=opts.epochs * steps_per_epoch,
                            warmup_steps=warmup_steps)
    else:
        rate = lr / max(warmup_steps, 1) if warmup_steps else lr
    return keras.optimizers.Adam(learning_rate=rate, global_clipnorm=CLIP_NORM,
                                 use_ema=opts.ema, ema_momentum=EMA_MOMENTUM)


def schedule_callbacks(opts: TrainOptions, monitor: str,
                        steps: int) -> list[keras.callbacks.Callback]:
    """Warmup and ``ReduceLROnPlateau`` of the plateau schedule (cosine needs none)."""
    callbacks: list[keras.callbacks.Callback] = []
    if opts.schedule == "plateau":
        warmup_steps = int(round(opts.warmup_epochs * steps))
        if warmup_steps:
            callbacks.append(LinearWarmup(opts.lr, warmup_steps))
        callbacks.append(SparsePlateau(
            monitor=monitor, mode=monitor_mode(monitor), factor=PLATEAU_FACTOR,
            patience=PLATEAU_PATIENCE, min_lr=MIN_LR))
    return callbacks


def fit_network(model, train_batches, *, run_dir: Path, epochs: int, start_epoch: int = 0,
                val_batches=None, monitor: str = "loss", best: float | None = None,
                best_epoch: int = 0, state_extra: dict | None = None,
                schedule_callbacks: Sequence[keras.callbacks.Callback] = (),
                early_stopping: int = 0, ema: bool = False,
                batch_images: Callable[[int], list[str]] | None = None,
                on_saved: Callable | None = None,
                callbacks: Sequence[keras.callbacks.Callback] = (),
                steps_per_epoch: int | None = None, evaluation=None,
                log_dir: Path | None = None) -> dict[str, Any]:
    """Fit a compiled :class:`YoloTrainingModel` with the run directory's callbacks.

    Writes ``last``/``best`` weights of ``model.network``, the resume state and
    ``history.csv`` after every epoch; stops cleanly on a NaN/Inf loss. ``monitor`` is
    lower-is-better, or higher-is-better for a mAP key (:mod:`detkit.training.monitor`).

    Args:
        evaluation: a :class:`~detkit.training.evaluation.MapEvaluation` run first at
            each epoch's end (its ``val_map*`` columns are then always in history.csv).
        log_dir: where :class:`~detkit.training.board.TensorBoardLog` writes (``None``:
            no TensorBoard logs).

    Returns:
        ``{"checkpoint": RunCheckpoint, "stopped_early": bool}``.

    Raises:
        TrainingError: a NaN or Inf loss (naming the epoch, batch and images); the files
            of the last good epoch are kept.
    """
    guard = NanGuard(batch_images)
    checkpoint = RunCheckpoint(run_dir, model.network, monitor=monitor, best=best,
                               best_epoch=best_epoch, state_extra=state_extra,
                               on_saved=on_saved)
    stopper = None
    # The mAP first: the plateau schedule, the checkpoint and the logs may read it.
    all_callbacks: list[keras.callbacks.Callback] = [evaluation] if evaluation else []
    # The guard after the schedule callbacks: one of them may add val_loss to the logs.
    all_callbacks += [*schedule_callbacks, guard]
    if ema:
        # Validation sees the averaged weights, like the checkpoints.
        all_callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
    all_callbacks += [HistoryCSV(run_dir / HISTORY_CSV, keep_epochs=start_epoch,
                                 order=("loss", *model.term_names, "map", "map50",
                                        "fitness"),
                                 always=MAP_KEYS if evaluation else ()), checkpoint]
    if early_stopping:
        stopper = SparseEarlyStopping(monitor=monitor, mode=monitor_mode(monitor),
                                      patience=early_stopping)
        all_callbacks.append(stopper)
    if log_dir is not None:
        from detkit.training.board import TensorBoardLog

        all_callbacks.append(TensorBoardLog(log_dir, images=evaluation))
    all_callbacks += list(callbacks)
    # The loaders shuffle per (seed, epoch) themselves; a Keras reshuffle of the batch
    # order would draw on Python's global random state and break exact resumes.
    model.fit(train_batches, validation_data=val_batches, epochs=epochs, shuffle=False,
              initial_epoch=start_epoch, callbacks=all_callbacks, verbose=0,
              steps_per_epoch=steps_per_epoch)
    if guard.failure is not None:
        kept = (f"the weights of epoch {checkpoint.last_epoch or start_epoch} are kept in "
                f"{run_dir / LAST_WEIGHTS}" if (checkpoint.last_epoch or start_epoch)
                else "no epoch had finished, so no weights were written")
        raise TrainingError(f"{guard.failure.describe()}; training stopped, {kept}")
    return {"checkpoint": checkpoint,
            "stopped_early": bool(stopper is not None and stopper.stopped_epoch > 0)}
