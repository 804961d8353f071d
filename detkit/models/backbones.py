"""Backbones: the bodies the YOLO heads sit on, one registry entry per ``--backbone``.

A body maps the image ``(B, S, S, 3)``, float32 RGB in ``[0, 1]``, to feature maps at
strides 32, 16 and 8, coarsest first (as many as the heads use: three for ``yolov3``,
two for ``yolov3-tiny``). Whatever the network expects at its input (ImageNet mean and
scale, BGR order) is done inside the body by an :class:`ImagePreprocess` layer, so every
model of detkit takes the same images.

================  =========================================  ============================
``--backbone``    features (strides 32, 16, 8)               ``--width``
================  =========================================  ============================
darknet53         detkit's Darknet-53 stages 5, 4, 3         scales every conv
darknet-tiny      yolov3-tiny's convs 7, 5, 4                scales every conv
darknet-small     retinanet / rpn's residual Darknet (units   scales every conv
                  1, 1, 2, 2, 1), stages 5, 4, 3
mobilenetv2       ``out_relu``, ``block_13_expand_relu``,    MobileNetV2's ``alpha`` (and
                  ``block_6_expand_relu``                    the neck and heads)
efficientnetb0    ``top_activation``, ``block5c_add``,       only the neck and heads
                  ``block3b_add``
resnet50          ``conv5_block3_out``, ``conv4_block6_out``,  only the neck and heads
                  ``conv3_block4_out``
================  =========================================  ============================

The ``keras.applications`` networks are nested in the body as one sub-model named after
the backbone (``body/mobilenetv2/Conv1``), so ``--weights`` loads by name as for
Darknet. The ``weight_decay`` L2 applies to detkit's convs; a ``keras.applications``
body has no kernel regularizers.

Initial weights of a body (``--backbone-weights``, :func:`load_backbone_weights`):
``none`` (random), ``imagenet`` (the ``keras.applications`` download; without a network
it fails at once, naming the FILE alternative) or a FILE: a ``.weights.h5`` of the
backbone alone, of a detkit body or of a whole detkit detector (only the body's layers
are read), or the legacy ``.h5`` file ``keras.applications`` downloads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import socket
import threading
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np
from keras import ops

from detkit.artifacts import Note
from detkit.choices import BACKBONE_WEIGHTS_WORDS, BACKBONES
from detkit.errors import ArtifactError, ArtifactMismatchError, UsageError, lookup
from detkit.models.detector import BODY_NAME, image_input, sub_model

__all__ = ["BACKBONES", "Backbone", "ImagePreprocess", "get_backbone", "build_body",
           "load_backbone_weights"]

#: Feature strides a body returns, coarsest first.
STRIDES = (32, 16, 8)
#: ImageNet statistics of RGB images in ``[0, 1]`` (torchvision's, which EfficientNet
#: and most ImageNet models use), and Caffe's BGR means in ``[0, 255]`` (ResNet50).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: Where ``keras.applications`` downloads its weights from, and how long to wait for it.
WEIGHTS_HOST = "storage.googleapis.com"
NETWORK_TIMEOUT_S = 5.0
#: Input preprocessing of :class:`ImagePreprocess`.
PREPROCESS_MODES = ("none", "tf", "caffe", "imagenet255")


@keras.saving.register_keras_serializable(package="detkit")
class ImagePreprocess(keras.layers.Layer):
    """RGB in ``[0, 1]`` -> the input a pretrained backbone expects.

    Modes:
        ``none``: unchanged (Darknet bodies take ``[0, 1]``).
        ``tf``: ``2x - 1`` (MobileNetV2's ``[-1, 1]``).
        ``caffe``: BGR order, ``255x`` minus the ImageNet BGR means (ResNet50).
        ``imagenet255``: ``255 (x - mean) / std`` per RGB channel (EfficientNet, whose
            own ``Rescaling(1/255)`` follows; its ``Normalization`` is kept as identity).

    Shapes: ``(B, H, W, 3)`` -> ``(B, H, W, 3)``.
    """

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"mode must be one of {', '.join(PREPROCESS_MODES)}, "
                             f"got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x * 2.0 - 1.0
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(np.float32(CAFFE_MEAN_BGR), self.compute_dtype)
            return ops.flip(x, axis=-1) * 255.0 - mean
        if self.mode == "imagenet255":
            mean = ops.convert_to_tensor(np.float32(IMAGENET_MEAN_RGB), self.compute_dtype)
            scale = ops.convert_to_tensor(255.0 / np.float32(IMAGENET_STD_RGB),
                                          self.compute_dtype)
            return (x - mean) * scale
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One ``--backbone``.

    Attributes:
        name: the ``--backbone`` name (and the nested sub-model's name).
        builder: ``"module:function"`` of detkit's own body ``(width, input_size,
            weight_decay, num_scales) -> keras.Model`` (``None`` for applications).
        application: the ``keras.applications`` constructor's name.
        taps: layer names of the stride-32, 16 and 8 features in the application.
        preprocess: the :class:`ImagePreprocess` mode in front of the application.
        width_is_alpha: ``--width`` is the application's ``alpha``.
        imagenet_alphas: the alphas ImageNet weights exist for (``width_is_alpha``).
        imagenet_file: name of the file ``keras.applications`` downloads (``{alpha}``
            is filled in), to find it in Keras' cache and to name it in messages.
    """

    name: str
    builder: Optional[str] = None
    application: Optional[str] = None
    taps: tuple[str, ...] = ()
    preprocess: str = "none"
    width_is_alpha: bool = False
    imagenet_alphas: tuple[float, ...] = ()
    imagenet_file: str = ""

    @property
    def is_application(self) -> bool:
        return self.application is not None

    def alpha(self, width: float) -> float | None:
        """The application's ``alpha`` for ``--width`` (``None``: not a width knob)."""
        return float(width) if self.width_is_alpha else None


#: Every backbone, by ``--backbone`` name.
REGISTRY: dict[str, Backbone] = {spec.name: spec for spec in (
    Backbone("darknet53", builder="detkit.models.yolov3:build_body"),
    Backbone("darknet-tiny", builder="detkit.models.yolov3_tiny:build_body"),
    Backbone("darknet-small", builder="detkit.models.pyramid:build_body"),
    Backbone("mobilenetv2", application="MobileNetV2",
             taps=("out_relu", "block_13_expand_relu", "block_6_expand_relu"),
             preprocess="tf", width_is_alpha=True,
             imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
             imagenet_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_"
                           "no_top.h5"),
    Backbone("efficientnetb0", application="EfficientNetB0",
             taps=("top_activation", "block5c_add", "block3b_add"),
             preprocess="imagenet255", imagenet_file="efficientnetb0_notop.h5"),
    Backbone("resnet50", application="ResNet50",
             taps=("conv5_block3_out", "conv4_block6_out", "conv3_block4_out"),
             preprocess="caffe",
             imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
)}
assert tuple(REGISTRY) == BACKBONES, "detkit.choices.BACKBONES and REGISTRY differ"


def get_backbone(name: str) -> Backbone:
    """The registry entry of ``name``.

    Raises:
        UsageError: an unknown name (listing the known ones).
    """
    return lookup(REGISTRY, name, "backbone")


def build_body(name: str, width: float = 1.0, input_size: int | None = None,
               weight_decay: float = 0.0, num_scales: int = 3) -> keras.Model:
    """The body ``name``: image -> ``num_scales`` feature maps, coarsest first.

    Shapes: ``(B, S, S, 3)`` -> ``[(B, S/32, S/32, C_32), (B, S/16, S/16, C_16), ...]``.

    Raises:
        UsageError: unknown ``name``, or ``num_scales`` not in 1..3.
    """
    spec = get_backbone(name)
    if num_scales not in (1, 2, 3):
        raise UsageError(f"a body has 1 to 3 feature scales, got {num_scales!r}")
    if spec.builder is not None:
        module, _, function = spec.builder.partition(":")
        builder = getattr(importlib.import_module(module), function)
        return builder(width, input_size, weight_decay, num_scales=num_scales)
    features = _application_features(spec, width, input_size, num_scales)
    image = image_input(input_size)
    x = ImagePreprocess(spec.preprocess, name="preprocess")(image)
    outputs = features(x)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return keras.Model(image, outputs, name=BODY_NAME)


def _application(spec: Backbone, width: float, input_size: int | None,
                 weights: str | None) -> keras.Model:
    """The ``keras.applications`` network without its classifier."""
    kwargs: dict[str, Any] = {"include_top": False, "weights": weights}
    if weights is None:
        kwargs["input_shape"] = (input_size, input_size, 3)
    alpha = spec.alpha(width)
    if alpha is not None:
        kwargs["alpha"] = alpha
    return getattr(keras.applications, spec.application)(**kwargs)


def _application_features(spec: Backbone, width: float, input_size: int | None,
                          num_scales: int) -> keras.Model:
    """The application cut at its taps, as one sub-model named ``spec.name``."""
    app = _application(spec, width, input_size, None)
    taps = [app.get_layer(name).output for name in spec.taps[:num_scales]]
    features = keras.Model(app.inputs, taps, name=spec.name)
    _identity_normalization(features)
    return features


def _identity_normalization(model: keras.Model) -> None:
    """Keep every ``Normalization`` layer of ``model`` an identity (mean 0, variance 1).

    EfficientNet normalizes its input with one; detkit does it in
    :class:`ImagePreprocess` instead, so whatever statistics a weights file holds for
    that layer (the ImageNet file keeps standard deviations as variances) never matter.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization) and layer.weights:
            mean, variance, *rest = layer.get_weights()
            layer.set_weights([np.zeros_like(mean), np.ones_like(variance), *rest])
            layer.finalize_state()


def backbone_part(model: keras.Model, name: str) -> keras.Model:
    """The layers of ``model`` that ``--backbone-weights`` fills: the nested application
    of a ``keras.applications`` backbone, else the whole body.

    Args:
        model: a detector (``heads(body(image))``) or its body.
        name: its backbone's name.
    """
    body = model if model.name == BODY_NAME else sub_model(model, BODY_NAME)
    if get_backbone(name).is_application:
        return sub_model(body, name)
    return body


def load_backbone_weights(model: keras.Model, name: str, source: str | os.PathLike | None,
                          width: float = 1.0) -> str | None:
    """Fill the backbone of ``model`` from ``source`` (``--backbone-weights``).

    Args:
        model: a detector (or its body) whose backbone is ``name``.
        name: the backbone.
        source: ``None`` or ``"none"`` (leave it as built), ``"imagenet"`` or a file.
        width: the model's ``--width`` (MobileNetV2's alpha picks the ImageNet file).

    Returns:
        A :class:`~detkit.artifacts.Note` saying what loaded (``None`` when nothing was
        asked).

    Raises:
        UsageError: ``imagenet`` for a backbone or alpha without ImageNet weights.
        ArtifactError: no network for ``imagenet`` (naming the FILE alternative), or an
            unreadable file.
        ArtifactMismatchError: a file that does not fill every layer of the backbone.
    """
    spec = get_backbone(name)
    if source is None or str(source) == "none":
        return None
    part = backbone_part(model, name)
    if str(source) == "imagenet":
        fresh = _imagenet_application(spec, width)
        count = _copy_by_layer_name(fresh, part)
        _identity_normalization(part)
        return Note(f"backbone {name}: ImageNet weights of {count} layers "
                    f"(keras.applications)")
    path = Path(source)
    if not path.is_file():
        raise ArtifactError("--backbone-weights: no such file (give imagenet, none or a "
                            "weights file)", path=path)
    if _is_legacy_h5(path):
        if not spec.is_application:
            raise ArtifactError(f"--backbone-weights: a legacy Keras .h5 file; {name} "
                                f"takes a detkit .weights.h5 (from train or "
                                f"import-darknet)", path=path)
        try:
            part.load_weights(os.fspath(path), by_name=True)
        except (ValueError, KeyError, OSError) as err:
            raise ArtifactMismatchError(f"--backbone-weights does not fit {name}: "
                                        f"{str(err).splitlines()[0]}", path=path) from None
        _identity_normalization(part)
        return Note(f"backbone {name}: weights from {path} (keras.applications file)")
    count = _load_by_name_path(part, path, name)
    _identity_normalization(part)
    return Note(f"backbone {name}: {count} layers from {path}")


def _is_legacy_h5(path: Path) -> bool:
    """A Keras 2 / ``keras.applications`` ``.h5`` weights file (``layer_names`` attr)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return "layer_names" in handle.attrs or (
                "model_weights" in handle and "layer_names" in handle["model_weights"].attrs)
    except OSError as err:
        raise ArtifactError(f"--backbone-weights: not a readable HDF5 weights file "
                            f"({err})", path=path) from None


def _load_by_name_path(part: keras.Model, path: Path, name: str) -> int:
    """Copy every weight-holding layer of ``part`` from a ``.weights.h5`` file.

    The file may hold the backbone alone (paths ``Conv1``), a body (``mobilenetv2/
    Conv1`` or ``stem/conv``) or a detector (``body/...``): the path prefix that matches
    most layers is used. Every layer must load.

    Returns:
        The number of layers copied.
    """
    from detkit.models.weights import file_layer_arrays, model_layer_variables

    arrays = file_layer_arrays(path)
    variables = model_layer_variables(part)
    prefixes = ("", f"{name}/", f"{BODY_NAME}/", f"{BODY_NAME}/{name}/")
    prefix = max(prefixes, key=lambda p: sum(p + key in arrays for key in variables))
    problems = []
    for key, model_vars in variables.items():
        values = arrays.get(prefix + key)
        if values is None:
            problems.append(f"{key}: not in the file")
        elif len(values) != len(model_vars) or any(
                tuple(v.shape) != tuple(a.shape) for v, a in zip(model_vars, values)):
            problems.append(f"{key}: other shapes in the file")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} layers)"
                                           if len(problems) > 3 else "")
        raise ArtifactMismatchError(f"--backbone-weights does not fit --backbone {name} "
                                    f"(or its --width): {shown}", path=path)
    for key, model_vars in variables.items():
        for variable, value in zip(model_vars, arrays[prefix + key]):
            variable.assign(value.astype(variable.dtype))
    return len(variables)


def _copy_by_layer_name(source: keras.Model, target: keras.Model) -> int:
    """Copy the weights of every layer of ``target`` from the same-named layer of
    ``source`` (two builds of one application)."""
    by_name = {layer.name: layer for layer in source.layers}
    count = 0
    for layer in target.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
            count += 1
    return count


def imagenet_file_name(spec: Backbone, width: float) -> str:
    """The file ``keras.applications`` downloads for ``spec`` (at ``--width``)."""
    alpha = spec.alpha(width)
    return spec.imagenet_file.format(alpha=alpha if alpha is None else float(alpha))


def keras_cache_file(file_name: str) -> Path:
    """Where Keras keeps a downloaded weights file (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / file_name


def _imagenet_application(spec: Backbone, width: float) -> keras.Model:
    """The application with its ImageNet weights, downloaded unless Keras has them.

    Raises:
        UsageError: no ImageNet weights for this backbone or alpha.
        ArtifactError: the download failed (one line naming ``--backbone-weights FILE``).
    """
    if not spec.is_application:
        raise UsageError(f"--backbone-weights imagenet: {spec.name} is detkit's own body, "
                         f"with no keras.applications ImageNet weights; give a FILE (e.g. "
                         f"the output of detkit import-darknet, or a trained detkit "
                         f"model) or none")
    alpha = spec.alpha(width)
    if alpha is not None and not any(np.isclose(alpha, a) for a in spec.imagenet_alphas):
        raise UsageError(f"--backbone-weights imagenet: {spec.name} has ImageNet weights "
                         f"for --width {', '.join(f'{a:g}' for a in spec.imagenet_alphas)} "
                         f"only, got {width:g}")
    file_name = imagenet_file_name(spec, width)
    hint = (f"download {file_name} where there is a network (keras.applications."
            f"{spec.application}(weights='imagenet', include_top=False) puts it in "
            f"~/.keras/models) and give --backbone-weights FILE")
    if not keras_cache_file(file_name).is_file():
        reason = network_unreachable(WEIGHTS_HOST)
        if reason:
            raise ArtifactError(f"cannot download the ImageNet weights of {spec.name} "
                                f"({WEIGHTS_HOST}: {reason}); {hint}")
    try:
        with _socket_timeout(NETWORK_TIMEOUT_S):
            return _application(spec, width, None, "imagenet")
    except Exception as err:  # keras.utils.get_file raises a bare Exception
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArtifactError(f"cannot get the ImageNet weights of {spec.name} ({first}); "
                            f"{hint}") from None


def network_unreachable(host: str, port: int = 443,
                        timeout: float = NETWORK_TIMEOUT_S) -> str | None:
    """Why ``host:port`` cannot be reached within ``timeout`` seconds (``None``: it can).

    The name lookup runs in a daemon thread, so a resolver that hangs costs
    ``timeout`` at most.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as err:
            outcome.append(str(err) or type(err).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer in {timeout:g} s"
    return outcome[0]


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def is_backbone_weights_word(value: Any) -> bool:
    """``imagenet`` or ``none`` (anything else given to ``--backbone-weights`` is a file)."""
    return str(value) in BACKBONE_WEIGHTS_WORDS
