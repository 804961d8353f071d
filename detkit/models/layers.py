"""Building blocks of the Darknet models: conv + BN + leaky ReLU, residual blocks, heads.

All layers use ``keras.ops`` only and implement ``get_config`` so models round-trip
through ``.keras`` files.
"""

from __future__ import annotations

import math

import keras
from keras import ops

#: Negative slope of Darknet's leaky ReLU.
LEAKY_SLOPE = 0.1
#: Darknet's BatchNorm settings (keras-yolo3 uses Keras' defaults for momentum/epsilon).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
#: Channels never drop below this under a width multiplier, and are rounded to it.
CHANNEL_DIVISOR = 8
#: Values per anchor before the class scores: t_x, t_y, t_w, t_h, objectness.
BOX_VALUES = 5
#: Name prefixes of the final output convs ``head_out_{i}`` (the only layers stage 1's
#: ``all-but-heads`` trains) and of their per-anchor reshapes ``head_reshape_{i}``.
HEAD_OUT_PREFIX = "head_out_"
HEAD_RESHAPE_PREFIX = "head_reshape_"
#: Prior probability that a grid cell/anchor holds an object, for the objectness bias.
OBJECTNESS_PRIOR = 0.01


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to a multiple of :data:`CHANNEL_DIVISOR` (at least one).

    Raises:
        ValueError: ``width`` is not positive.
    """
    if not width > 0:
        raise ValueError(f"width must be positive, got {width!r}")
    scaled = int(round(channels * width / CHANNEL_DIVISOR)) * CHANNEL_DIVISOR
    return max(CHANNEL_DIVISOR, scaled)


@keras.saving.register_keras_serializable(package="detkit")
class DarknetConv(keras.layers.Layer):
    """Conv2D (no bias) + BatchNorm + LeakyReLU(0.1), Darknet's basic unit.

    A stride-2 conv pads one row/column on the top and left and uses ``valid`` padding,
    like Darknet; stride 1 uses ``same`` padding.

    Args:
        filters: output channels.
        kernel_size: square kernel side.
        strides: 1 or 2.
        weight_decay: L2 factor on the kernel (0 disables it).

    Shapes: ``(B, H, W, C_in)`` -> ``(B, H / strides, W / strides, filters)``.
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1,
                 weight_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2, got {strides!r}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.weight_decay = float(weight_decay)
        regularizer = keras.regularizers.L2(self.weight_decay) if self.weight_decay else None
        self.pad = (keras.layers.ZeroPadding2D(((1, 0), (1, 0)), name="pad")
                    if self.strides == 2 else None)
        self.conv = keras.layers.Conv2D(
            self.filters, self.kernel_size, strides=self.strides,
            padding="valid" if self.strides == 2 else "same", use_bias=False,
            kernel_initializer="he_normal", kernel_regularizer=regularizer, name="conv")
        self.bn = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                                  name="bn")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.pad is not None:
            self.pad.build(shape)
            shape = self.pad.compute_output_shape(shape)
        self.conv.build(shape)
        self.bn.build(self.conv.compute_output_shape(shape))

    def call(self, inputs, training=None):
        x = inputs if self.pad is None else self.pad(inputs)
        x = self.bn(self.conv(x), training=training)
        return ops.leaky_relu(x, negative_slope=LEAKY_SLOPE)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.pad is not None:
            shape = self.pad.compute_output_shape(shape)
        return self.conv.compute_output_shape(shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, weight_decay=self.weight_decay)
        return config


def scaled_conv(width: float, weight_decay: float = 0.0):
    """``conv(x, filters, kernel, name)``: a :class:`DarknetConv` of ``filters`` scaled by
    ``width`` (stride 1) applied to ``x``, as the heads write their layers."""

    def conv(x, filters: int, kernel: int, name: str):
        return DarknetConv(scale_channels(filters, width), kernel, weight_decay=weight_decay,
                           name=name)(x)

    return conv


@keras.saving.register_keras_serializable(package="detkit")
class DarknetResidual(keras.layers.Layer):
    """Darknet-53 residual unit: ``x + conv3x3(conv1x1(x))``.

    Args:
        filters: channels of the input and output.
        hidden: channels of the 1x1 bottleneck (usually ``filters / 2``).
        weight_decay: L2 factor on the kernels.

    Shapes: ``(B, H, W, filters)`` -> ``(B, H, W, filters)``.
    """

    def __init__(self, filters: int, hidden: int, weight_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.hidden = int(hidden)
        self.weight_decay = float(weight_decay)
        self.reduce = DarknetConv(self.hidden, 1, weight_decay=self.weight_decay,
                                  name="reduce")
        self.expand = DarknetConv(self.filters, 3, weight_decay=self.weight_decay,
                                  name="expand")

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.filters:
            raise ValueError(f"DarknetResidual({self.filters}) got {input_shape[-1]} "
                             f"input channels")
        self.reduce.build(input_shape)
        self.expand.build(self.reduce.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        return inputs + self.expand(self.reduce(inputs, training=training),
                                    training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, hidden=self.hidden,
                      weight_decay=self.weight_decay)
        return config


@keras.saving.register_keras_serializable(package="detkit")
class YoloHeadBias(keras.initializers.Initializer):
    """Bias of a head's output conv: objectness at ``log(p / (1 - p))``, the rest 0.

    With ``p = 0.01`` every anchor starts at 1% objectness (bias -4.6), so the
    objectness loss of the many empty cells does not swamp the first steps.

    Args:
        num_anchors: anchors per cell (3).
        prior: initial objectness probability.
    """

    def __init__(self, num_anchors: int, prior: float = OBJECTNESS_PRIOR):
        if not 0 < prior < 1:
            raise ValueError(f"prior must be in (0, 1), got {prior!r}")
        self.num_anchors = int(num_anchors)
        self.prior = float(prior)

    def __call__(self, shape, dtype=None):
        (size,) = shape
        per_anchor = size // self.num_anchors
        if per_anchor * self.num_anchors != size or per_anchor <= BOX_VALUES - 1:
            raise ValueError(f"bias of size {size} does not split into {self.num_anchors} "
                             f"anchors of {BOX_VALUES} + classes values")
        is_objectness = ops.equal(ops.mod(ops.arange(size), per_anchor), BOX_VALUES - 1)
        logit = math.log(self.prior / (1 - self.prior))
        return ops.cast(ops.where(is_objectness, logit, 0.0), dtype or "float32")

    def get_config(self):
        return {"num_anchors": self.num_anchors, "prior": self.prior}


@keras.saving.register_keras_serializable(package="detkit")
class AnchorReshape(keras.layers.Layer):
    """Split the channels of a head output per anchor.

    Shapes: ``(B, H, W, A * V)`` -> ``(B, H, W, A, V)`` with ``A = num_anchors``.
    """

    def __init__(self, num_anchors: int, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = int(num_anchors)

    def call(self, inputs):
        shape = ops.shape(inputs)
        values = inputs.shape[-1] // self.num_anchors
        return ops.reshape(inputs, (shape[0], shape[1], shape[2], self.num_anchors, values))

    def compute_output_shape(self, input_shape):
        *lead, channels = input_shape
        return (*lead, self.num_anchors, channels // self.num_anchors)

    def get_config(self):
        config = super().get_config()
        config.update(num_anchors=self.num_anchors)
        return config


def head_output(x, num_anchors: int, num_classes: int, index: int,
                weight_decay: float = 0.0):
    """The final 1x1 conv ``head_out_{index}`` (with bias) and its per-anchor reshape.

    Shapes: ``(B, H, W, C_in)`` -> ``(B, H, W, num_anchors, 5 + num_classes)``.
    """
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    x = keras.layers.Conv2D(num_anchors * (BOX_VALUES + num_classes), 1, padding="same",
                            bias_initializer=YoloHeadBias(num_anchors),
                            kernel_regularizer=regularizer, name=f"{HEAD_OUT_PREFIX}{index}")(x)
    return AnchorReshape(num_anchors, name=f"{HEAD_RESHAPE_PREFIX}{index}")(x)
