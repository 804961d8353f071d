"""Pieces of the feature-pyramid detectors (RetinaNet, RPN): a small Darknet body and an FPN.

* :func:`build_body` - a Darknet-style body (a stem and five stride-2 stages of
  residual units, Darknet-53 with fewer units) returning the stride-32, 16 and 8
  features ``[C5, C4, C3]``, coarsest first: the part stage 1 freezes and
  ``cache-bottlenecks`` runs.
* :func:`feature_pyramid` - the FPN neck: 1x1 lateral convs to ``F`` channels, a
  top-down path (nearest 2x upsampling and addition) and a 3x3 conv per level:
  ``[P5, P4, P3]``.
* :func:`conv_tower` - the shared subnet block: ``depth`` 3x3 convs with GroupNorm and
  ReLU, its layers made once and applied to every level.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras

from detkit.models.layers import scale_channels
from detkit.models.yolov3 import residual_body

#: The stages ``(channels, residual units)``, each halving resolution (stem and feature
#: stages as Darknet-53's, :func:`detkit.models.yolov3.residual_body`).
BODY_STAGES = ((32, 1), (64, 1), (128, 2), (256, 2), (512, 1))
#: Channels of the pyramid and the subnets (before ``width``).
PYRAMID_FILTERS = 256
#: Groups of the subnets' GroupNorm (fewer when the channels are few).
NORM_GROUPS = 32
#: Channels per GroupNorm group, at least.
MIN_GROUP_CHANNELS = 8
#: Standard deviation of the output convs' kernels (RetinaNet).
OUTPUT_KERNEL_STDDEV = 0.01
#: Prior probability of the classification outputs (RetinaNet's bias initialization).
CLASS_PRIOR = 0.01


def prior_bias(prior: float = CLASS_PRIOR) -> keras.initializers.Initializer:
    """Bias ``-log((1 - pi) / pi)``: every output starts at probability ``pi``."""
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior!r}")
    return keras.initializers.Constant(-math.log((1 - prior) / prior))


#: Name of this body as a ``--backbone`` (the pyramid families' own).
BODY = "darknet-small"


def build_body(width: float = 1.0, input_size: int | None = None,
               weight_decay: float = 0.0, num_scales: int = 3) -> keras.Model:
    """image -> ``[C5, C4, C3]`` (the first ``num_scales`` of them).

    Shapes: ``(B, S, S, 3)`` -> ``[(B, S/32, S/32, 512w), (B, S/16, S/16, 256w),
    (B, S/8, S/8, 128w)]``.
    """
    return residual_body(BODY_STAGES, width, input_size, weight_decay, num_scales)


def pyramid_body(width: float, input_size: int | None, weight_decay: float,
                 backbone: str | None = None) -> keras.Model:
    """The body of a pyramid family: :func:`build_body` (``backbone`` ``None`` or
    :data:`BODY`), else the ``--backbone`` registry's body with three scales
    (:mod:`detkit.models.backbones`, strides 32, 16, 8, coarsest first)."""
    if backbone is None or backbone == BODY:
        return build_body(width, input_size, weight_decay)
    from detkit.models.backbones import build_body as build_backbone

    return build_backbone(backbone, width, input_size, weight_decay, num_scales=3)


def _regularizer(weight_decay: float):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def feature_pyramid(features: Sequence, channels: int, weight_decay: float = 0.0) -> list:
    """FPN over ``features`` (coarsest first) -> ``[P_coarsest, ..., P_finest]``, each
    ``channels`` wide at its feature map's resolution."""
    laterals = [keras.layers.Conv2D(channels, 1, kernel_initializer="he_normal",
                                    kernel_regularizer=_regularizer(weight_decay),
                                    name=f"fpn_lateral{i}")(f) for i, f in enumerate(features)]
    merged = [laterals[0]]
    for i, lateral in enumerate(laterals[1:], start=1):
        up = keras.layers.UpSampling2D(2, name=f"fpn_upsample{i}")(merged[-1])
        merged.append(keras.layers.Add(name=f"fpn_add{i}")([lateral, up]))
    return [keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer="he_normal",
                                kernel_regularizer=_regularizer(weight_decay),
                                name=f"fpn_output{i}")(x) for i, x in enumerate(merged)]


def norm_groups(channels: int) -> int:
    """GroupNorm groups for ``channels`` (32, fewer for narrow layers, at least 1)."""
    groups = min(NORM_GROUPS, max(1, channels // MIN_GROUP_CHANNELS))
    while channels % groups:
        groups -= 1
    return groups


def conv_tower(name: str, channels: int, depth: int, weight_decay: float = 0.0):
    """A subnet's ``depth`` x (3x3 conv, GroupNorm, ReLU) as a function of one level.

    The layers are made once, so calling the returned function on every level shares
    them (RetinaNet's shared subnets).
    """
    layers = []
    for k in range(1, depth + 1):
        layers.append((
            keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                                kernel_initializer="he_normal",
                                kernel_regularizer=_regularizer(weight_decay),
                                name=f"{name}{k}_conv"),
            keras.layers.GroupNormalization(norm_groups(channels), name=f"{name}{k}_norm"),
            keras.layers.ReLU(name=f"{name}{k}_relu")))

    def apply(x):
        for conv, norm, relu in layers:
            x = relu(norm(conv(x)))
        return x

    return apply


def output_conv(filters: int, name: str, weight_decay: float = 0.0,
                bias_initializer="zeros") -> keras.layers.Conv2D:
    """A shared 3x3 output conv with small normal kernels (RetinaNet's initialization)."""
    return keras.layers.Conv2D(
        filters, 3, padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=OUTPUT_KERNEL_STDDEV),
        bias_initializer=bias_initializer, kernel_regularizer=_regularizer(weight_decay),
        name=name)


def pyramid_channels(width: float) -> int:
    """``F``: the channels of the pyramid and the subnets at ``width``."""
    return scale_channels(PYRAMID_FILTERS, width)
