"""The stage logic behind ``detkit train``: data, model, optimizer, callbacks, ``fit``.

Stage 1 (default: body frozen, lr 1e-3) trains the heads of a detector that usually
starts from pretrained ``--weights``; stage 2 (default: nothing frozen, lr 1e-4)
fine-tunes everything from stage 1's weights. Both are one :func:`run_training` call.
Training images are augmented and encoded on the fly
(:class:`detkit.training.targets.YoloTrainingTargets`); validation images are
letterboxed only.

The optimizer is Adam with global gradient-norm clipping, a linear warmup and then a
cosine decay (``schedule="cosine"``) or ``ReduceLROnPlateau`` (``"plateau"``), and an
optional EMA of the weights (checkpoints and validation then use the averages).

:func:`fit_network` is the reusable core: it fits any compiled
:class:`~detkit.training.model.YoloTrainingModel` on any batches with the run
directory's callbacks (the seam for training the heads on cached bottlenecks).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import keras
import numpy as np

from detkit.errors import ArtifactError, ArtifactMismatchError, TrainingError
from detkit.training.callbacks import (BEST_WEIGHTS, HISTORY_CSV, LAST_WEIGHTS, HistoryCSV,
                                       LoaderEpoch, NanGuard, RunCheckpoint,
                                       load_state_weights, read_history, read_state)
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
#: Policy of ``--mixed-precision`` (loss scaling is added by ``compile``).
MIXED_POLICY = "mixed_float16"
#: Settings a resumed run must share with the run it continues.
RESUME_KEYS = ("model", "width", "stage", "input_size", "anchors", "class_names",
               "monitor")
#: Settings stage 2's ``--weights`` must share with it (from the weights' manifest).
STAGE2_KEYS = ("model", "anchors", "class_names")
#: Name of the run manifest.
MANIFEST = "manifest.json"


@dataclasses.dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        run_dir: the run directory.
        epochs_run: epochs trained by this call (0 when a resumed run was complete).
        start_epoch: epochs already done before this call (``--resume``).
        total_epochs: epochs the run now holds.
        monitor: the value that picked ``best`` (``val_loss`` or ``loss``).
        best: the best ``monitor`` value and its 1-based epoch.
        history: rows of ``history.csv`` (all epochs of the run), as dicts of floats.
        stopped_early: ``EarlyStopping`` ended the run.
        weights_report: what ``--weights`` loaded (``LoadReport.summary()``), if given.
        notes: warnings worth showing (frozen random body, skipped layers, dataset fixes).
        files: the files written.
    """

    run_dir: Path
    epochs_run: int
    start_epoch: int
    total_epochs: int
    monitor: str
    best: float
    best_epoch: int
    history: list[dict[str, float]]
    stopped_early: bool = False
    weights_report: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    files: list[Path] = dataclasses.field(default_factory=list)


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


def _batch_images(batches) -> Callable[[int], list[str]]:
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


def fit_network(model, train_batches, *, run_dir: Path, epochs: int, start_epoch: int = 0,
                val_batches=None, monitor: str = "loss", best: float = math.inf,
                best_epoch: int = 0, state_extra: dict | None = None,
                schedule_callbacks: Sequence[keras.callbacks.Callback] = (),
                early_stopping: int = 0, ema: bool = False,
                batch_images: Callable[[int], list[str]] | None = None,
                on_saved: Callable | None = None,
                callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, Any]:
    """Fit a compiled :class:`YoloTrainingModel` with the run directory's callbacks.

    Writes ``last``/``best`` weights of ``model.network``, the resume state and
    ``history.csv`` after every epoch; stops cleanly on a NaN/Inf loss.

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
    all_callbacks: list[keras.callbacks.Callback] = [guard, *schedule_callbacks]
    if ema:
        # Validation sees the averaged weights, like the checkpoints.
        all_callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
    all_callbacks += [HistoryCSV(run_dir / HISTORY_CSV, keep_epochs=start_epoch,
                                 order=("loss", *model.term_names)), checkpoint]
    if early_stopping:
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=early_stopping)
        all_callbacks.append(stopper)
    all_callbacks += list(callbacks)
    # The loaders shuffle per (seed, epoch) themselves; a Keras reshuffle of the batch
    # order would draw on Python's global random state and break exact resumes.
    model.fit(train_batches, validation_data=val_batches, epochs=epochs, shuffle=False,
              initial_epoch=start_epoch, callbacks=all_callbacks, verbose=0)
    if guard.failure is not None:
        kept = (f"the weights of epoch {checkpoint.last_epoch or start_epoch} are kept in "
                f"{run_dir / LAST_WEIGHTS}" if (checkpoint.last_epoch or start_epoch)
                else "no epoch had finished, so no weights were written")
        raise TrainingError(f"{guard.failure.describe()}; training stopped, {kept}")
    return {"checkpoint": checkpoint,
            "stopped_early": bool(stopper is not None and stopper.stopped_epoch > 0)}


class RunExtension:
    """Hooks through which another stage reuses :func:`run_training` (``distill``).

    This base class changes nothing: it is plain ``train``.
    """

    #: The command recorded in the manifests.
    command = "train"

    def prepare(self, opts: TrainOptions, anchors: np.ndarray, class_names: list[str],
                notes: list[str]) -> dict[str, Any]:
        """Called once anchors and classes are known, before any file is written.

        Returns:
            Extra settings, recorded in the manifests and ``state.json`` and checked
            on ``--resume``.
        """
        return {}

    def inputs(self) -> list[Path]:
        """Extra input files whose sha256 the manifests record."""
        return []

    def training_model(self, detector: keras.Model, loss: Any):
        """The training model around ``detector`` (inside the strategy's scope)."""
        from detkit.training.model import YoloTrainingModel

        return YoloTrainingModel(detector, loss)

    def train_batches(self, batches: keras.utils.PyDataset, model) -> keras.utils.PyDataset:
        """The training batches to fit on, given the loader's and the training model."""
        return batches


def run_training(opts: TrainOptions, *, callbacks: Sequence[keras.callbacks.Callback] = (),
                 config: dict | None = None,
                 extension: RunExtension | None = None) -> TrainResult:
    """Train one stage end to end and write the run directory.

    Args:
        opts: the options (stage defaults are filled in by their ``resolved()``).
        callbacks: extra Keras callbacks (e.g. a progress display).
        config: the command's config to record in the manifests (the resolved options
            are recorded over it).
        extension: hooks of a stage built on this one (``distill``); none for ``train``.

    Raises:
        UsageError: bad option values.
        DataError: unreadable dataset, anchors or class names.
        ArtifactError, ArtifactMismatchError: unusable ``--weights`` or resume state.
        TrainingError: NaN/Inf loss.
    """
    from detkit.artifacts import read_manifest, check_agree
    from detkit.data.dataset import load_dataset
    from detkit.families import get_family

    extension = extension or RunExtension()
    opts = opts.resolved()
    dataset = load_dataset(opts.data, opts.format, opts.classes)
    class_names = list(dataset.class_names)
    val_dataset = (load_dataset(opts.val, opts.format, class_names)
                   if opts.val is not None else None)
    anchors, anchors_path = get_family(opts.model).resolve_anchors(opts.anchors)
    run_dir = opts.out
    monitor = "val_loss" if val_dataset is not None else "loss"
    settings = {"model": opts.model, "width": opts.width, "stage": opts.stage,
                "input_size": opts.input_size, "anchors": anchors.tolist(),
                "class_names": class_names, "monitor": monitor}
    notes = [summary for summary in (dataset.fixes.summary(),) if summary]
    extra_settings = extension.prepare(opts, anchors, class_names, notes)
    settings.update(extra_settings)

    start_epoch, best, best_epoch = 0, math.inf, 0
    state = read_state(run_dir) if opts.resume else None
    if opts.resume and state is None:
        notes.append(f"--resume: no state in {run_dir}, starting a new run")
    if state is not None:
        check_agree(str(run_dir / "state.json"), state, "this command", settings,
                    keys=RESUME_KEYS + tuple(extra_settings))
        start_epoch = int(state["epoch"])
        best = float(state.get("best", math.inf))
        best_epoch = int(state.get("best_epoch", 0))
    total_epochs = opts.total_epochs
    if start_epoch >= total_epochs:
        _, rows = read_history(run_dir / HISTORY_CSV)
        return TrainResult(run_dir, 0, start_epoch, start_epoch, monitor, best, best_epoch,
                           _float_rows(rows), notes=notes + [
                               f"the run already holds {start_epoch} epochs "
                               f"(--epochs {total_epochs}): nothing to do"])

    run_dir.mkdir(parents=True, exist_ok=True)
    # The resolved options (stage defaults filled in) over what the caller recorded.
    config = {**(config or {}), **_plain(dataclasses.asdict(opts))}
    inputs = [p for p in (opts.data, opts.val, anchors_path, opts.classes, opts.weights,
                          opts.labels) if p is not None and Path(p).is_file()]
    inputs += extension.inputs()

    def on_saved(path: Path, epoch: int, logs: dict) -> None:
        from detkit.artifacts import write_manifest

        write_manifest(path, command=extension.command, config=config, inputs=inputs,
                       seed=opts.seed, extra={**settings, "epoch": epoch,
                              "metrics": {k: float(v) for k, v in logs.items()}})

    previous_policy = keras.config.dtype_policy()
    keras.utils.set_random_seed(opts.seed)
    if opts.mixed_precision:
        keras.config.set_dtype_policy(MIXED_POLICY)
    # Stage 1 with --bottlenecks runs two phases numbered as one run: epochs
    # [0, B) train the heads on cached features, epochs [B, B + E) go on with frozen-body
    # training on images, starting from the phase-1 weights with a fresh optimizer.
    cache_epochs = total_epochs - opts.epochs
    report = None
    stopped_early = False
    try:
        if opts.stage == 2 and opts.weights is not None and state is None:
            manifest = read_manifest(opts.weights)
            check_agree(str(opts.weights), manifest, "this command", settings,
                        keys=STAGE2_KEYS)
        from detkit.artifacts import write_json

        write_json(run_dir / MANIFEST, _run_manifest(config, settings, opts, inputs,
                                                     extension.command))
        fit_options = dict(run_dir=run_dir, monitor=monitor, state_extra=settings,
                           ema=opts.ema, on_saved=on_saved)
        val_records = val_dataset.records if val_dataset is not None else None
        if start_epoch < cache_epochs:
            outcome, report = _fit_on_cache(
                opts, anchors, class_names, dataset.records, val_records, notes,
                start_epoch=start_epoch, resuming=state is not None, callbacks=callbacks,
                fit_options={**fit_options, "best": best, "best_epoch": best_epoch})
            best, best_epoch = outcome["checkpoint"].best, outcome["checkpoint"].best_epoch
            stopped_early = outcome["stopped_early"]
        if opts.epochs and not stopped_early:
            # Phase 2 resumes its own state only once it has finished an epoch.
            resuming = state is not None and start_epoch > cache_epochs
            first = max(start_epoch, cache_epochs)
            weights = opts.weights if not cache_epochs else run_dir / LAST_WEIGHTS
            image_opts = dataclasses.replace(opts, weights=weights)
            built = _build(image_opts, anchors, class_names, dataset.records, val_records,
                           first, resuming, notes, extension)
            model, train_batches, val_batches, base_batches, distribution, loaded = built
            report = loaded or report
            with distribution.scope():
                outcome = fit_network(
                    model, train_batches, epochs=total_epochs, start_epoch=first,
                    val_batches=val_batches, best=best, best_epoch=best_epoch,
                    schedule_callbacks=_schedule_callbacks(opts, monitor, len(train_batches)),
                    early_stopping=opts.early_stopping,
                    batch_images=_batch_images(base_batches),
                    callbacks=[LoaderEpoch(base_batches), *callbacks], **fit_options)
            stopped_early = outcome["stopped_early"]
    finally:
        keras.config.set_dtype_policy(previous_policy)
    checkpoint = outcome["checkpoint"]
    _, rows = read_history(run_dir / HISTORY_CSV)
    files = [run_dir / name for name in (BEST_WEIGHTS, LAST_WEIGHTS, HISTORY_CSV, MANIFEST)
             if (run_dir / name).exists()]
    return TrainResult(run_dir, checkpoint.last_epoch - start_epoch, start_epoch,
                       checkpoint.last_epoch, monitor, checkpoint.best, checkpoint.best_epoch,
                       _float_rows(rows), stopped_early=stopped_early,
                       weights_report=report, notes=notes, files=files)


def _schedule_callbacks(opts: TrainOptions, monitor: str,
                        steps: int) -> list[keras.callbacks.Callback]:
    """Warmup and ``ReduceLROnPlateau`` of the plateau schedule (cosine needs none)."""
    callbacks: list[keras.callbacks.Callback] = []
    if opts.schedule == "plateau":
        warmup_steps = int(round(opts.warmup_epochs * steps))
        if warmup_steps:
            callbacks.append(LinearWarmup(opts.lr, warmup_steps))
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE,
            min_lr=MIN_LR))
    return callbacks


def _fit_on_cache(opts: TrainOptions, anchors: np.ndarray, class_names: list[str], records,
                  val_records, notes: list[str], *, start_epoch: int, resuming: bool,
                  callbacks: Sequence[keras.callbacks.Callback], fit_options: dict):
    """Phase 1 of ``--bottlenecks``: fit the part after the cache's split on its features.

    The detector starts from the weights the cache was computed with
    (:func:`detkit.bottleneck_training.cache_weights`); ``val_*`` comes from the full
    detector on the validation images. Returns ``(fit_network's outcome, load report)``.
    """
    from detkit.bottleneck_training import (CachedFeaturesTrainingModel, FullModelValidation,
                                            cache_weights, cached_batches, open_cache)
    from detkit.labels import load_labels
    from detkit.losses import YoloV3Loss
    from detkit.models import build_model
    from detkit.models.freeze import freeze
    from detkit.models.weights import load_weights_by_name
    from detkit.training.model import YoloTrainingModel

    image_paths = [str(record.image_path) for record in records]
    weights = cache_weights(opts.bottlenecks, opts.weights)
    labels = load_labels(opts.labels, settings={"anchors": anchors,
                                                "input_size": opts.input_size,
                                                "class_names": class_names},
                         image_paths=image_paths)
    cache = open_cache(opts.bottlenecks, model=opts.model, width=opts.width,
                       input_size=opts.input_size, weights=weights, image_paths=image_paths,
                       labels=labels)
    split = str(cache.settings["split"])
    detector = build_model(opts.model, len(class_names), opts.width, opts.input_size)
    report = None
    if not resuming:
        loaded = load_weights_by_name(detector, weights)
        report = loaded.summary()
        if not loaded.complete:
            notes.append(report)
    freeze(detector, split)
    loss = YoloV3Loss(anchors, len(class_names), opts.input_size,
                      ignore_thresh=opts.ignore_thresh, box_loss=opts.box_loss,
                      obj_loss=opts.obj_loss)
    batches = cached_batches(cache, labels, opts.batch_size, seed=opts.seed,
                             max_boxes=opts.max_boxes, workers=opts.workers, epoch=start_epoch)
    trainer = CachedFeaturesTrainingModel(detector, split, loss)
    cache_epochs = opts.total_epochs - opts.epochs
    trainer.compile(optimizer=make_optimizer(opts.lr, len(batches),
                                             dataclasses.replace(opts, epochs=cache_epochs)))
    trainer.optimizer.build(trainer.trainable_variables)
    if resuming:
        load_state_weights(opts.out, trainer)
    schedule = _schedule_callbacks(opts, fit_options["monitor"], len(batches))
    if val_records is not None:
        evaluator = YoloTrainingModel(detector, loss)
        evaluator.compile()
        val_batches = _val_batches(opts, anchors, len(class_names), val_records)
        schedule.insert(0, FullModelValidation(evaluator, val_batches))
    try:
        outcome = fit_network(trainer, batches, epochs=cache_epochs, start_epoch=start_epoch,
                              schedule_callbacks=schedule, early_stopping=opts.early_stopping,
                              batch_images=batches.batch_images,
                              callbacks=[LoaderEpoch(batches), *callbacks], **fit_options)
    finally:
        cache.close()
    return outcome, report


def _val_batches(opts: TrainOptions, anchors: np.ndarray, num_classes: int, records):
    """Validation batches: letterboxed images in dataset order, encoded targets."""
    from detkit.data.loader import DetectionBatches
    from detkit.training.targets import YoloTrainingTargets

    return DetectionBatches(records, opts.input_size, opts.batch_size, augment=False,
                            shuffle=False, seed=opts.seed, max_boxes=opts.max_boxes,
                            encoder=YoloTrainingTargets(anchors, opts.input_size,
                                                        num_classes),
                            workers=opts.workers)


def _build(opts: TrainOptions, anchors: np.ndarray, class_names: list[str], records,
           val_records, start_epoch: int, resuming: bool, notes: list[str],
           extension: RunExtension):
    """Model, batches and distribution of a run (inside the strategy's scope)."""
    from detkit.data.loader import DetectionBatches
    from detkit.losses import YoloV3Loss
    from detkit.models import build_model
    from detkit.models.freeze import freeze
    from detkit.models.weights import load_weights_by_name
    from detkit.training.strategy import make_distribution
    from detkit.training.targets import YoloTrainingTargets

    num_classes = len(class_names)
    distribution = make_distribution(opts.strategy)
    base = DetectionBatches(records, opts.input_size, opts.batch_size, augment=opts.augment,
                            augment_config=opts.augment_config(),
                            shuffle=True, seed=opts.seed, max_boxes=opts.max_boxes,
                            encoder=YoloTrainingTargets(anchors, opts.input_size, num_classes),
                            workers=opts.workers, epoch=start_epoch)
    val_batches = None
    if val_records is not None:
        val_batches = _val_batches(opts, anchors, num_classes, val_records)
        if opts.steps_per_epoch:
            val_batches = FirstBatches(val_batches, opts.steps_per_epoch)
    report = None
    with distribution.scope():
        detector = build_model(opts.model, num_classes, opts.width, opts.input_size)
        if opts.weights is not None and not resuming:
            loaded = load_weights_by_name(detector, opts.weights)
            report = loaded.summary()
            if opts.stage == 2 and not loaded.complete:
                raise ArtifactMismatchError(
                    f"stage 2 continues a trained model, but not every layer loaded:\n"
                    f"{report}", path=opts.weights)
            if not loaded.complete:
                notes.append(report)
        elif opts.freeze != "none" and not resuming:
            notes.append(f"--freeze {opts.freeze} without --weights keeps a randomly "
                         f"initialized part frozen; use --freeze none to train from scratch")
        freeze(detector, opts.freeze)
        loss = YoloV3Loss(anchors, num_classes, opts.input_size,
                          ignore_thresh=opts.ignore_thresh, box_loss=opts.box_loss,
                          obj_loss=opts.obj_loss)
        model = extension.training_model(detector, loss)
        batches = extension.train_batches(base, model)
        train_batches = (FirstBatches(batches, opts.steps_per_epoch) if opts.steps_per_epoch
                         else batches)
        # The cosine schedule spans this phase's epochs (after a --bottlenecks phase too).
        optimizer = make_optimizer(opts.lr, len(train_batches), opts)
        # Keras on JAX runs an uncompiled step eagerly (very slow): always compile there.
        model.compile(optimizer=optimizer,
                      jit_compile=opts.jit or keras.backend.backend() == "jax")
        model.optimizer.build(model.trainable_variables)
        if resuming:
            load_state_weights(opts.out, model)
            if int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0:
                raise ArtifactError("the resume state holds no optimizer state; it does "
                                    "not match this model", path=opts.out / "state.weights.h5")
    return model, train_batches, val_batches, base, distribution, report


def _run_manifest(config: dict, settings: dict, opts: TrainOptions,
                  inputs: list[Path], command: str = "train") -> dict[str, Any]:
    import datetime

    from detkit.artifacts import library_versions, sha256_file

    return {"artifact": opts.out.name, "command": command, "config": config, **settings,
            "num_classes": len(settings["class_names"]), "seed": opts.seed,
            "inputs": {str(p): sha256_file(p) for p in inputs},
            "versions": library_versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}


def _plain(config: dict) -> dict:
    return {key: (os.fspath(value) if isinstance(value, Path) else value)
            for key, value in config.items()}


def _float_rows(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    out = []
    for row in rows:
        item = {}
        for key, value in row.items():
            try:
                item[key] = float(value)
            except (TypeError, ValueError):
                item[key] = math.nan
        out.append(item)
    return out
