"""The phases of a run, each turned into a :class:`TrainingPlan` that one routine fits.

A run has one or two phases: with ``--bottlenecks``, epochs ``[0, B)`` train the part
after the cache's split on cached features (:func:`cached_features_plan`); then epochs
``[B, B + E)`` train on images (:func:`images_plan`). Both build the detector, load its
weights and make its loss the same way (:func:`build_detector`,
:func:`detection_loss`); :func:`fit_plan` runs either with the run directory's
callbacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Sequence

import keras

from detkit.artifacts import Note
from detkit.errors import ArtifactError, ArtifactMismatchError
from detkit.labels import SCHEME_BOXES, check_scheme
from detkit.models import build_model
from detkit.training.callbacks import LoaderEpoch, load_state_weights
from detkit.training.distributed import distributed_batches, synchronize_batch_norm
from detkit.training.fit import (FirstBatches, batch_images_of, fit_network, make_optimizer,
                                 schedule_callbacks)
from detkit.training.objective import Objective

if TYPE_CHECKING:
    from detkit.training.run import RunContext


@dataclasses.dataclass
class TrainingPlan:
    """Everything one phase fits: what :func:`fit_plan` needs and nothing else.

    Attributes:
        model: the compiled training model (its ``network`` is what checkpoints save).
        batches: the training batches; loader: the one whose epoch is set each epoch.
        start_epoch, end_epoch: the phase's epochs ``[start, end)`` of the whole run.
        callbacks: the phase's own callbacks (learning-rate schedule, validation).
        val_batches: validation batches ``fit`` evaluates (``None``: none or done by a
            callback).
        batch_images: ``batch index -> image paths`` for the NaN report.
        scope: the distribution strategy's scope.
        report: how the initial weights loaded (``None``: none loaded).
        close: releases the phase's files.
        steps: global batches per epoch when ``batches`` has no length (a
            ``tf.distribute`` dataset), else ``None``.
    """

    model: Any
    batches: Any
    loader: Any
    start_epoch: int
    end_epoch: int
    callbacks: list = dataclasses.field(default_factory=list)
    val_batches: Any = None
    batch_images: Optional[Callable[[int], list[str]]] = None
    scope: Callable[[], ContextManager] = contextlib.nullcontext
    report: Optional[str] = None
    close: Callable[[], None] = lambda: None
    steps: Optional[int] = None


def build_detector(ctx: "RunContext", weights: Optional[Path], *, resuming: bool,
                   require_complete: bool = False, variable_size: bool = False
                   ) -> tuple[keras.Model, Optional[str]]:
    """The run's detector with ``weights`` loaded by layer name (not when resuming).

    ``variable_size`` builds it for any input side (``(None, None, 3)``, multi-scale
    training); the weights are the same, and evaluation feeds it ``--input-size``.

    Returns:
        ``(detector, load report or None)``; the report of the user's ``--weights`` is
        also a note, told before the epochs (``note:`` for a complete load, a warning for
        an incomplete one).

    Raises:
        ArtifactMismatchError: ``require_complete`` (stage 2) and a layer did not load.
    """
    from detkit.models.weights import load_weights_by_name

    opts = ctx.opts
    detector = build_model(opts.model, len(ctx.class_names), opts.width,
                           None if variable_size else opts.input_size,
                           backbone=opts.backbone)
    if weights is None and not resuming and ctx.family.backbones:
        from detkit.models.backbones import load_backbone_weights

        loaded_body = load_backbone_weights(detector, ctx.family.resolve_backbone(
            opts.backbone), opts.backbone_weights, opts.width)
        if loaded_body:
            ctx.notes.append(loaded_body)
    if weights is None or resuming:
        return detector, None
    loaded = load_weights_by_name(detector, weights)
    report = loaded.summary()
    if require_complete and not loaded.complete:
        raise ArtifactMismatchError(f"stage 2 continues a trained model, but not every "
                                    f"layer loaded:\n{report}", path=weights)
    if ctx.opts.weights is not None and Path(weights) == Path(ctx.opts.weights):
        # the user's --weights (not a cache's init weights, nor the run's own hand-over)
        told = loaded.complete or loaded.output_convs_only()   # as expected: a note
        ctx.notes.append(Note(report) if told else report)
    return detector, report


def family_options(opts) -> dict[str, Any]:
    """The options a family's loss and assigner may read (``None``: their defaults)."""
    return {**opts.family_options(), "seed": opts.seed}


def detection_loss(ctx: "RunContext"):
    """The family's loss for the run's anchors, classes and loss options."""
    opts = ctx.opts
    return ctx.family.make_loss(ctx.anchors, len(ctx.class_names), opts.input_size,
                                **family_options(opts))


def training_targets(ctx: "RunContext", input_size: Optional[int] = None):
    """The family's label assigner: ``(boxes, classes) -> y_true`` of its loss, for
    ``input_size`` (default ``--input-size``)."""
    opts = ctx.opts
    return ctx.family.make_assigner(ctx.anchors, input_size or opts.input_size,
                                    len(ctx.class_names), **family_options(opts))


def compile_model(model, opts, steps: int, epochs: int, *, resuming: bool,
                  run_dir: Path, **compile_options: Any) -> None:
    """Compile with the run's optimizer over ``epochs`` of ``steps``; restore the resume
    state (weights and optimizer) when ``resuming``."""
    model.compile(optimizer=make_optimizer(opts.lr, steps,
                                           dataclasses.replace(opts, epochs=epochs)),
                  **compile_options)
    model.optimizer.build(model.trainable_variables)
    if resuming:
        load_state_weights(run_dir, model)


def validation_batches(ctx: "RunContext"):
    """Validation batches: letterboxed images in dataset order, encoded targets."""
    from detkit.data.loader import DetectionBatches

    opts = ctx.opts
    return DetectionBatches(ctx.val_records, opts.input_size, opts.batch_size,
                            augment=False, shuffle=False, seed=opts.seed,
                            max_boxes=opts.max_boxes, encoder=training_targets(ctx),
                            workers=opts.workers)


def cached_features_plan(ctx: "RunContext", *, resuming: bool) -> TrainingPlan:
    """Phase 1 of ``--bottlenecks``: the part after the cache's split, on its features.

    The detector starts from the weights the cache was computed with
    (:func:`detkit.bottleneck_training.cache_weights`); ``val_*`` comes from the full
    detector on the validation images.
    """
    from detkit.bottleneck_training import (BoxLabelTargets, CachedFeaturesTrainingModel,
                                            FullModelValidation, cache_weights, cached_batches,
                                            open_cache, random_body)
    from detkit.models.freeze import freeze
    from detkit.training.model import YoloTrainingModel

    opts = ctx.opts
    image_paths = [str(record.image_path) for record in ctx.records]
    weights = cache_weights(opts.bottlenecks, opts.weights)
    labels = ctx.labels                 # opened and checked by RunContext.open
    check_scheme(labels, ctx.family)
    cache = open_cache(opts.bottlenecks, model=opts.model, width=opts.width,
                       input_size=opts.input_size, weights=weights, image_paths=image_paths,
                       labels=labels, backbone=ctx.family.resolve_backbone(opts.backbone))
    split = str(cache.settings["split"])
    if opts.weights is None and not resuming and random_body(opts.bottlenecks):
        ctx.notes.append(f"{opts.bottlenecks} holds features of a randomly initialized "
                         f"body (cache-bottlenecks ran without --weights): stage 1 trains "
                         f"the heads on it, frozen; cache from trained weights or "
                         f"--backbone-weights for a real start")
    detector, report = build_detector(ctx, weights, resuming=resuming)
    freeze(detector, split)
    loss = detection_loss(ctx)
    # Stored boxes are assigned per batch by the family; YOLOv3 labels hold the slots.
    targets = (BoxLabelTargets(labels, training_targets(ctx), opts.max_boxes)
               if labels.settings["scheme"] == SCHEME_BOXES else None)
    batches = cached_batches(cache, labels, opts.batch_size, seed=opts.seed,
                             max_boxes=opts.max_boxes, workers=opts.workers,
                             epoch=ctx.start_epoch, targets=targets)
    trainer = CachedFeaturesTrainingModel(detector, split, loss)
    compile_model(trainer, opts, len(batches), ctx.cache_epochs, resuming=resuming,
                  run_dir=ctx.run_dir)
    callbacks = schedule_callbacks(opts, ctx.monitor, len(batches))
    if ctx.val_records is not None:
        evaluator = YoloTrainingModel(detector, loss)
        evaluator.compile()
        callbacks.insert(0, FullModelValidation(evaluator, validation_batches(ctx)))
    return TrainingPlan(model=trainer, batches=batches, loader=batches,
                        start_epoch=ctx.start_epoch, end_epoch=ctx.cache_epochs,
                        callbacks=callbacks, batch_images=batches.batch_images,
                        # the cache's own init weights are no user's --weights to report
                        report=report if opts.weights is not None else None,
                        close=cache.close)


def images_plan(ctx: "RunContext", objective: Objective, *, start_epoch: int,
                resuming: bool, weights: Optional[Path]) -> TrainingPlan:
    """The phase on (augmented) images, from ``start_epoch`` to the end of the run.

    The training batches are :class:`detkit.data.mix.MixedBatches` (mosaic and mixup
    with their ``--mosaic`` and ``--mixup`` probabilities, no mosaics in the last
    ``--close-mosaic`` epochs; the loader's samples when both are 0). With ``--multi-scale`` each training batch has its own side (targets
    assigned for it) and the detector is built for any side; validation stays at
    ``--input-size`` (:func:`detkit.training.run.check_multi_scale` has checked the
    run allows it).
    """
    from detkit.data.mix import MixedBatches
    from detkit.models.freeze import freeze
    from detkit.training.strategy import make_distribution

    opts = ctx.opts
    distribution = make_distribution(opts.strategy)
    sides = opts.multi_scale_sides()
    encoder = (training_targets(ctx) if sides is None
               else {side: training_targets(ctx, side) for side in sides})
    base = MixedBatches(ctx.records, opts.input_size, opts.batch_size,
                        augment=opts.augment, augment_config=opts.augment_config(),
                        shuffle=True, seed=opts.seed, max_boxes=opts.max_boxes,
                        encoder=encoder, sides=sides, workers=opts.workers,
                        epoch=start_epoch, mosaic_until=opts.mosaic_until())
    val_batches = None
    if ctx.val_records is not None:
        val_batches = validation_batches(ctx)
        if opts.steps_per_epoch:
            val_batches = FirstBatches(val_batches, opts.steps_per_epoch)
    with distribution.scope():
        detector, report = build_detector(ctx, weights, resuming=resuming,
                                          require_complete=opts.stage == 2,
                                          variable_size=sides is not None)
        if (weights is None and opts.freeze != "none" and not resuming
                and opts.backbone_weights in (None, "none")):
            ctx.notes.append(f"--freeze {opts.freeze} without --weights keeps a randomly "
                             f"initialized part frozen; use --freeze none to train from "
                             f"scratch")
        elif (weights is None and opts.stage == 2 and not resuming
                and opts.backbone_weights in (None, "none")):
            ctx.notes.append("stage 2 without --weights trains from random weights; it "
                             "continues stage 1: give stage 1's best.weights.h5")
        freeze(detector, opts.freeze)
        if opts.freeze != "none" and not resuming:
            ctx.notes.append(Note(_frozen_note(detector, opts.freeze)))
        if distribution.handle is not None and keras.backend.backend() == "tensorflow":
            synchronize_batch_norm(detector)  # statistics of the global batch
        model = objective.training_model(detector, detection_loss(ctx))
        batches = objective.train_batches(base, model)
        if opts.steps_per_epoch:
            batches = FirstBatches(batches, opts.steps_per_epoch)
        # The cosine schedule spans this phase's epochs (after a --bottlenecks phase too).
        # Keras on JAX runs an uncompiled step eagerly (very slow): always compile there.
        compile_model(model, opts, len(batches), opts.epochs, resuming=resuming,
                      run_dir=ctx.run_dir,
                      jit_compile=opts.jit or keras.backend.backend() == "jax")
        if resuming and int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0:
            raise ArtifactError("the resume state holds no optimizer state; it does not "
                                "match this model", path=ctx.run_dir / "state.weights.h5")
    fit_batches, steps = batches, None
    if distribution.name == "multi-worker" and distribution.handle is not None:
        # Each worker prepares only its replicas' slices of every global batch.
        steps = len(batches) - (1 if len(base.records) % opts.batch_size
                                and len(batches) == len(base) else 0)
        source = batches.base if isinstance(batches, FirstBatches) else batches
        fit_batches = distributed_batches(distribution.handle, source, steps,
                                          opts.batch_size)
    return TrainingPlan(model=model, batches=fit_batches, loader=base,
                        start_epoch=start_epoch, end_epoch=opts.total_epochs,
                        callbacks=schedule_callbacks(opts, ctx.monitor, len(batches)),
                        val_batches=val_batches, batch_images=batch_images_of(base),
                        scope=distribution.scope, report=report, steps=steps)


def map_evaluation(plan: TrainingPlan, ctx: "RunContext"):
    """The phase's :class:`~detkit.training.evaluation.MapEvaluation` (``None`` without
    ``--eval-every`` and ``--val``)."""
    opts = ctx.opts
    if not opts.eval_every or ctx.val_dataset is None:
        return None
    from detkit.training.evaluation import MapEvaluation, MapEvaluator

    evaluator = MapEvaluator(plan.model.network, ctx.family, ctx.anchors, opts.input_size,
                             ctx.val_dataset, opts.batch_size)
    return MapEvaluation(evaluator, opts.eval_every, last_epoch=opts.total_epochs)


def fit_plan(plan: TrainingPlan, ctx: "RunContext", *, best: float, best_epoch: int,
             on_saved: Callable, callbacks: Sequence[keras.callbacks.Callback] = ()
             ) -> dict[str, Any]:
    """Fit one phase's plan (see :func:`detkit.training.fit.fit_network`), with the mAP
    evaluation of ``--eval-every`` and the TensorBoard logs of the run."""
    ctx.tell_notes()              # before the epochs: the user reads them while it trains
    try:
        with plan.scope():
            return fit_network(
                plan.model, plan.batches, run_dir=ctx.run_dir, epochs=plan.end_epoch,
                start_epoch=plan.start_epoch, val_batches=plan.val_batches,
                monitor=ctx.monitor, best=best, best_epoch=best_epoch,
                state_extra=ctx.settings, schedule_callbacks=plan.callbacks,
                early_stopping=ctx.opts.early_stopping, ema=ctx.opts.ema,
                batch_images=plan.batch_images, on_saved=on_saved,
                callbacks=[LoaderEpoch(plan.loader), *callbacks],
                steps_per_epoch=plan.steps, evaluation=map_evaluation(plan, ctx),
                log_dir=ctx.log_dir)
    finally:
        plan.close()


def _frozen_note(detector: keras.Model, mode: str) -> str:
    """``--freeze body: 1,234 of 5,678 parameters train (the rest are frozen or BatchNorm
    statistics)``: how much of the model a frozen start trains."""
    total = int(detector.count_params())
    trained = sum(math.prod(v.shape) for v in detector.trainable_weights)
    return (f"--freeze {mode}: {trained:,} of {total:,} parameters train (the rest are "
            f"frozen or BatchNorm statistics)")
