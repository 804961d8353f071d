"""Train the trainable part of a detector on cached features (stage 1 with a cache).

A detector ``heads(body(image))`` is cut in two at a *split*, named like the freeze modes
of :mod:`detkit.models.freeze`:

- ``body``: the frozen part is the body (Darknet); the trainable part is the whole
  ``heads`` model (necks and output convs).
- ``all-but-heads`` (keras-yolo3's ``freeze_body=2`` and its ``train_bottleneck.py``):
  the frozen part is the body plus every heads layer but the final ``head_out_*``
  convs; the trainable part is those 1x1 convs (and their per-anchor reshape).

The trainable part reuses the detector's own layers, so training it trains the detector:
after the cached phase the full model holds the new weights and stage 1 can go on with
frozen-body training on augmented images.

Stage-1 wiring: :func:`cache_weights` (which weights to start from), :func:`open_cache`
(checks the cache against the run and ``labels.npz``), then either
:func:`train_heads_on_cache` (one call) or :class:`CachedFeaturesTrainingModel` plus
:func:`cached_batches` fitted by the train stage's own loop, with
:class:`FullModelValidation` first among the callbacks for ``val_*`` logs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from detkit.artifacts import check_agree, read_manifest, sha256_file
from detkit.bottlenecks import BottleneckCache, CacheSettings, CachedFeatureBatches
from detkit.errors import ArtifactError, TrainingError, UsageError
from detkit.models.detector import BODY_NAME, HEADS_NAME
from detkit.models.layers import HEAD_OUT_PREFIX, HEAD_RESHAPE_PREFIX
from detkit.training.model import YoloTrainingModel
from detkit.choices import DEFAULT_SPLIT, SPLITS  # noqa: F401 (re-exported)
from detkit.data.records import DEFAULT_MAX_BOXES

#: keras-yolo3's bottleneck split: only the output convs train (~30x faster epochs).
#: Suffix of the weights a from-scratch cache run saves beside the cache.
INIT_WEIGHTS_SUFFIX = ".init.weights.h5"
#: Rows of the padded ground-truth box array of :class:`LabelTargets`.


@dataclasses.dataclass
class SplitModel:
    """A detector cut at ``split``: ``trainable(frozen(image)) == model(image)``.

    Attributes:
        split: one of :data:`SPLITS`.
        frozen: image ``(B, S, S, 3)`` -> list of features ``(B, H_i, W_i, C_i)``,
            coarsest first.
        trainable: that list -> the detector's raw outputs (shares the detector's layers).
    """

    split: str
    frozen: keras.Model
    trainable: keras.Model


def check_split(split: str) -> str:
    """Return ``split`` or raise :class:`UsageError` naming the choices."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def split_model(model: keras.Model, split: str = DEFAULT_SPLIT) -> SplitModel:
    """Cut a detector from :func:`detkit.models.build_model` at ``split``.

    Raises:
        UsageError: unknown ``split``.
        ValueError: the model lacks the ``body``/``heads`` sub-models or output convs.
    """
    check_split(split)
    try:
        body, heads = model.get_layer(BODY_NAME), model.get_layer(HEADS_NAME)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no {BODY_NAME!r}/{HEADS_NAME!r} "
                         f"sub-models; build it with detkit.models.build_model") from None
    if split == "body":
        return SplitModel(split, body, heads)
    outs, reshapes = _output_layers(heads)
    neck = keras.Model(heads.inputs, [layer.input for layer in outs], name="neck")
    image = keras.Input(body.inputs[0].shape[1:], name="image")
    frozen = keras.Model(image, neck(body(image)), name="frozen")
    features = [keras.Input((None, None, layer.input.shape[-1]), name=f"feature_{i}")
                for i, layer in enumerate(outs)]
    outputs = [reshape(out(x)) for x, out, reshape in zip(features, outs, reshapes)]
    return SplitModel(split, frozen, keras.Model(features, outputs, name="output_convs"))


def _output_layers(heads: keras.Model) -> tuple[list, list]:
    """The ``head_out_i`` convs and ``head_reshape_i`` layers, by index ``i``."""
    by_prefix = {}
    for prefix in (HEAD_OUT_PREFIX, HEAD_RESHAPE_PREFIX):
        found = {int(layer.name[len(prefix):]): layer for layer in heads.layers
                 if layer.name.startswith(prefix) and layer.name[len(prefix):].isdigit()}
        by_prefix[prefix] = [found[i] for i in sorted(found)]
    outs, reshapes = by_prefix[HEAD_OUT_PREFIX], by_prefix[HEAD_RESHAPE_PREFIX]
    if not outs or len(outs) != len(reshapes) or len(outs) != len(heads.outputs):
        # e.g. RetinaNet and the RPN: one output conv shared by every level.
        raise UsageError("this model cannot be cut at all-but-heads (it has no output "
                         "conv of its own per output: its heads share them across "
                         "levels); use --split body")
    return outs, reshapes


def frozen_features(split: SplitModel, images: np.ndarray) -> list[np.ndarray]:
    """Features of ``images`` ``(B, S, S, 3)`` float32 in ``[0, 1]`` (inference mode)."""
    outputs = split.frozen(images, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(out) for out in outputs]


def init_weights_path(cache_path: str | os.PathLike) -> Path:
    """Where a from-scratch cache run keeps its model weights: ``NAME.init.weights.h5``.

    ``bottlenecks.h5`` -> ``bottlenecks.init.weights.h5``.
    """
    cache_path = Path(cache_path)
    stem = cache_path.name[:-3] if cache_path.name.endswith(".h5") else cache_path.name
    return cache_path.with_name(stem + INIT_WEIGHTS_SUFFIX)


def cache_weights(cache_path: str | os.PathLike, weights: str | os.PathLike | None) -> Path:
    """The weights stage 1 must start from to use ``cache_path``.

    ``weights`` when given (the cache check then compares its sha256); otherwise the
    init weights the from-scratch cache run saved beside the cache, so the body is
    exactly the one that computed the features.

    Raises:
        ArtifactError: no ``weights`` and no init weights beside the cache.
    """
    if weights is not None:
        return Path(weights)
    init = init_weights_path(cache_path)
    if not init.is_file():
        raise ArtifactError(f"no --weights given and no {init.name} beside the cache: "
                            f"pass the --weights the cache was computed with", path=init)
    return init


def computes_features(layer_path: str, split: str) -> bool:
    """Whether the layer at name path ``layer_path`` (``body/...``, ``heads/...``) is in
    the part of the detector that computes the features cached at ``split``."""
    top, _, rest = layer_path.partition("/")
    if top != HEADS_NAME:
        return True
    return split != "body" and not rest.startswith(HEAD_OUT_PREFIX)


def random_body(cache_path: str | os.PathLike) -> bool:
    """Whether the cache's features come from a randomly initialized network: its
    manifest records neither ``--weights`` nor ``--backbone-weights`` (a from-scratch
    demo); ``False`` when the manifest cannot tell."""
    try:
        config = read_manifest(cache_path).get("config") or {}
    except ArtifactError:
        return False
    return ("weights" in config and config["weights"] is None
            and config.get("backbone_weights") in (None, "none"))


class LabelTargets:
    """``y_true`` of cached rows from ``labels.npz``, as :class:`detkit.losses.YoloV3Loss`
    takes it.

    ``targets(indices)`` returns ``{"targets": [(B, g, g, 3, 6), ...], "boxes": (B, M, 4)}``:
    the dense targets of :meth:`detkit.labels.LabelsFile.dense_batch` and the images'
    ground-truth boxes (normalized xyxy, zero rows pad) for the loss's ignore mask. The
    boxes are those the labels file holds (one per assigned box; a box the encoder
    dropped for a slot collision is not among them).

    Args:
        labels: a :class:`detkit.labels.LabelsFile` whose images are the cache's rows.
        max_boxes: rows of the padded box array (grown when an image has more).
    """

    def __init__(self, labels: Any, max_boxes: int = DEFAULT_MAX_BOXES):
        self.labels = labels
        self.max_boxes = int(max_boxes)

    def boxes(self, indices: Sequence[int]) -> np.ndarray:
        """``(B, M, 4)`` float32 normalized xyxy boxes of images ``indices``."""
        per_image = []
        for index in np.asarray(indices, np.int64).reshape(-1):
            xywh = np.unique(self.labels.image_rows(int(index))["xywh"], axis=0)
            per_image.append(np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2,
                                             xywh[:, :2] + xywh[:, 2:] / 2], axis=1))
        rows = max([self.max_boxes] + [len(b) for b in per_image])
        out = np.zeros((len(per_image), rows, 4), np.float32)
        for slot, boxes in enumerate(per_image):
            out[slot, :len(boxes)] = boxes
        return out

    def __call__(self, indices: Sequence[int]) -> dict[str, Any]:
        return {"targets": tuple(self.labels.dense_batch(indices)),
                "boxes": self.boxes(indices)}


def open_cache(path: str | os.PathLike, *, model: str, width: float, input_size: int,
               weights: str | os.PathLike, image_paths: Sequence[str],
               labels: Any = None, backbone: str | None = None) -> BottleneckCache:
    """Open a cache for stage 1 and check it against the run (and ``labels.npz``).

    Args:
        path: the cache (``--bottlenecks``).
        model, width, input_size: the run's architecture and input side.
        backbone: the run's body (resolved ``--backbone``; ``None``: not compared).
        weights: the weights the run starts from (see :func:`cache_weights`); their
            sha256 must be the one the cache was computed with.
        image_paths: the training images, in dataset order (one cache row each).
        labels: the :class:`detkit.labels.LabelsFile` paired with the cache, if any; its
            image list must be the cache's and its input size the run's.

    Raises:
        ArtifactError: missing, unreadable or incomplete cache.
        ArtifactMismatchError: naming every setting that differs (model, width, split,
            input size, weights sha256, image count and list with the first difference).
    """
    cache = BottleneckCache(path)
    expected = CacheSettings(model=model, width=float(width),
                             split=str(cache.settings.get("split")), input_size=int(input_size),
                             weights_sha256=sha256_file(weights), image_paths=image_paths,
                             dtype=str(cache.settings.get("dtype", "float16")),
                             backbone=backbone)
    try:
        own = Path(weights) == init_weights_path(path)   # not the user's: no need to name
        cache.check(expected, expected_name="this run" if own else
                    f"this run (--weights {Path(weights).name})")
        if labels is not None:
            labels.check_images(cache.image_paths, name=f"the cache {Path(path).name}")
            check_agree(str(labels.path), labels.settings, str(path),
                        {"input_size": cache.settings["input_size"]}, keys=("input_size",))
    except Exception:
        cache.close()
        raise
    return cache


class CachedFeaturesTrainingModel(YoloTrainingModel):
    """:class:`~detkit.training.model.YoloTrainingModel` fed with cached features.

    Its ``network`` is the full ``detector`` (what checkpoints such as
    :class:`detkit.training.callbacks.RunCheckpoint` save, and what the weights, the
    regularization losses and the trainable variables come from: the same variables,
    counted once), but :meth:`call` runs only the part after ``split`` on the features of
    a :class:`detkit.bottlenecks.CachedFeatureBatches`. So ``fit_network`` of the train
    stage can fit it unchanged, and ``last``/``best`` weights are whole detectors.

    Freeze ``detector`` at ``split`` first (:func:`detkit.models.freeze.freeze`), so
    only the part after the split trains.

    Args:
        detector: the full detector.
        split: the cache's split (one of :data:`SPLITS`).
        loss: a :class:`detkit.losses.YoloV3Loss`.
    """

    def __init__(self, detector: keras.Model, split: str, loss: Any, **kwargs: Any):
        super().__init__(detector, loss, name=kwargs.pop("name", "heads_on_cache"), **kwargs)
        self.split = check_split(split)
        self.trainable_part = split_model(detector, split).trainable

    def call(self, inputs, training=None):
        outputs = self.trainable_part(list(inputs), training=training)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


class BoxLabelTargets:
    """``y_true`` of cached rows from a boxes-scheme ``labels.npz``: the images' stored
    boxes, padded to ``max_boxes`` rows, through the family's ``assigner`` (the one
    the image batches use, so both phases train on the same targets).

    Args:
        labels: a :class:`detkit.labels.BoxLabelsFile` whose images are the cache's rows.
        assigner: ``(boxes, classes) -> y_true`` (``Family.make_assigner``).
        max_boxes: rows of the padded box arrays (grown when an image has more).
    """

    def __init__(self, labels: Any, assigner: Any, max_boxes: int = DEFAULT_MAX_BOXES):
        self.labels = labels
        self.assigner = assigner
        self.max_boxes = int(max_boxes)

    def __call__(self, indices: Sequence[int]) -> Any:
        return self.assigner(*self.labels.boxes_batch(indices, self.max_boxes))


def cached_batches(cache: BottleneckCache, labels: Any, batch_size: int, *, seed: int = 0,
                   shuffle: bool = True, max_boxes: int = DEFAULT_MAX_BOXES,
                   workers: int = 1, epoch: int = 0,
                   targets: Any = None) -> CachedFeatureBatches:
    """Training batches ``(features, y_true)`` of the cache paired with ``labels.npz``.

    ``targets``: ``indices -> y_true`` (default :class:`LabelTargets` of ``labels``).
    """
    targets = targets if targets is not None else LabelTargets(labels, max_boxes)
    return CachedFeatureBatches(cache, targets, batch_size, shuffle=shuffle, seed=seed,
                                workers=workers, epoch=epoch)


def train_heads_on_cache(model: keras.Model, cache: BottleneckCache, labels: Any, *,
                         loss: Any, optimizer: Any, epochs: int, batch_size: int,
                         seed: int = 0, shuffle: bool = True,
                         callbacks: Sequence[keras.callbacks.Callback] = (),
                         validation_data: Any = None, initial_epoch: int = 0,
                         max_boxes: int = DEFAULT_MAX_BOXES, workers: int = 1,
                         verbose: int | str = "auto") -> keras.callbacks.History:
    """Stage 1, phase 1 in one call: fit the part of ``model`` after the cache's split.

    Freezes ``model`` at the cache's split, wraps it in
    :class:`CachedFeaturesTrainingModel` with ``loss`` and ``optimizer`` and fits it on
    :func:`cached_batches`. ``model`` holds the trained weights afterwards. (The train
    stage can instead build those two pieces itself and use its own fit loop.)

    Args:
        model: the full detector, weights loaded from :func:`cache_weights`.
        cache: from :func:`open_cache`.
        labels: the :class:`detkit.labels.LabelsFile` of the cached images.
        loss: a :class:`detkit.losses.YoloV3Loss`.
        optimizer: a fresh Keras optimizer.
        epochs: ``--bottleneck-epochs``.
        batch_size: images per step.
        seed, shuffle: the per-epoch order of the rows.
        callbacks: e.g. :class:`FullModelValidation` first, then checkpoints.
        validation_data: cached validation batches, if any.
        initial_epoch: first epoch (``--resume``).
        max_boxes: rows of the ground-truth box arrays.
        workers: loader threads.

    Returns:
        The Keras ``History``.

    Raises:
        TrainingError: the loss became NaN or Inf.
    """
    from detkit.models.freeze import freeze

    if epochs < 0:
        raise UsageError(f"--bottleneck-epochs must be >= 0, got {epochs}")
    split = str(cache.settings["split"])
    freeze(model, split)
    batches = cached_batches(cache, labels, batch_size, seed=seed, shuffle=shuffle,
                             max_boxes=max_boxes, workers=workers, epoch=initial_epoch)
    trainer = CachedFeaturesTrainingModel(model, split, loss)
    trainer.compile(optimizer=optimizer)
    history = trainer.fit(batches, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                          validation_data=validation_data, callbacks=list(callbacks),
                          verbose=verbose)
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise TrainingError(f"loss became {losses[-1]} while training on the cache")
    return history


class FullModelValidation(keras.callbacks.Callback):
    """Log ``val_*`` of the full detector on validation images after each epoch.

    The phase on cached features has no images to validate on; this callback evaluates
    ``evaluator`` (a compiled :class:`detkit.training.model.YoloTrainingModel` around the
    full detector) on ``data`` (e.g. non-augmented ``DetectionBatches`` of ``--val``)
    and adds ``val_loss`` and the per-term ``val_*`` to the epoch's logs, so checkpoint
    and history callbacks placed after it see the same numbers as in frozen-body
    training. Place it first in the callback list.
    """

    def __init__(self, evaluator: keras.Model, data: Any):
        super().__init__()
        self.evaluator = evaluator
        self.data = data

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        results = self.evaluator.evaluate(self.data, verbose=0, return_dict=True)
        logs.update({f"val_{name}": float(value) for name, value in results.items()})
