"""YOLOv2: a Darknet-19 body and one output at stride 32 with the passthrough from stride 16.

The body is Darknet-19 without its classifier; it returns the stride-32 features (after the
last 1024-channel conv) and the stride-16 features (after the 512-channel conv of the
fourth stage), coarsest first. The heads add two 3x3 1024-channel convs on the stride-32
features, the *passthrough*: a 1x1 64-channel conv of the stride-16 features reorganized
to stride 32 (:class:`SpaceToDepth`, 2x2 blocks into channels),
concatenated, a 3x3 1024-channel conv and the output conv: one raw output
``(B, S/32, S/32, 5, 5 + C)`` (``t_x, t_y, t_w, t_h``, objectness logit, class logits), the
layout of the YOLOv3 heads with 5 anchors per cell.
"""

from __future__ import annotations

import keras
from keras import ops

from detkit.models.detector import BODY_NAME, HEADS_NAME, assemble, feature_inputs, image_input
from detkit.models.layers import (AnchorReshape, BOX_VALUES, DarknetConv,
                                  scale_channels, scaled_conv)

#: Architecture name.
NAME = "yolov2"
#: Anchors per grid cell (one output scale).
ANCHORS_PER_SCALE = 5
#: Darknet-19 stages: the convs ``(filters, kernel)`` of each, a 2x2 max pool between
#: stages (five pools: stride 32).
DARKNET19_STAGES = (
    ((32, 3),),
    ((64, 3),),
    ((128, 3), (64, 1), (128, 3)),
    ((256, 3), (128, 1), (256, 3)),
    ((512, 3), (256, 1), (512, 3), (256, 1), (512, 3)),
    ((1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)),
)
#: Stage whose output is the stride-16 passthrough source.
PASSTHROUGH_STAGE = 4
#: Head channels: the detection convs, the passthrough's 1x1 reduction, reorg block size.
HEAD_FILTERS, PASSTHROUGH_FILTERS, REORG_BLOCK = 1024, 64, 2


@keras.saving.register_keras_serializable(package="detkit")
class SpaceToDepth(keras.layers.Layer):
    """YOLOv2's *reorg*: each ``block x block`` patch of pixels becomes one pixel.

    Output channel ``(dy * block + dx) * C + c`` of pixel ``(i, j)`` is channel ``c`` of
    input pixel ``(i * block + dy, j * block + dx)`` (TensorFlow's ``space_to_depth``
    order, written in ``keras.ops``).

    Shapes: ``(B, H, W, C)`` -> ``(B, H / block, W / block, block * block * C)``; ``H``
    and ``W`` must be multiples of ``block``.
    """

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        if int(block) != block or block < 1:
            raise ValueError(f"block must be a positive integer, got {block!r}")
        self.block = int(block)

    def call(self, inputs):
        shape = ops.shape(inputs)
        b, channels = self.block, inputs.shape[-1]
        height, width = shape[1] // b, shape[2] // b
        x = ops.reshape(inputs, (shape[0], height, b, width, b, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (shape[0], height, width, b * b * channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        b = self.block
        return (batch, None if height is None else height // b,
                None if width is None else width // b, b * b * channels)

    def get_config(self):
        config = super().get_config()
        config.update(block=self.block)
        return config


def yolov2_output(x, num_classes: int, weight_decay: float = 0.0):
    """The output conv ``head_out_0`` and its per-anchor reshape ``head_reshape_0``.

    Unlike the YOLOv3 heads (objectness bias at a 1% prior), every bias starts at 0, as in
    Darknet: the YAD2K loss is a squared error on ``sigmoid(t_o)``, whose gradient
    ``2 (p - 1) p (1 - p)`` would be 50 times smaller at a 1% start.

    Shapes: ``(B, G, G, C_in)`` -> ``(B, G, G, 5, 5 + num_classes)``.
    """
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    x = keras.layers.Conv2D(ANCHORS_PER_SCALE * (BOX_VALUES + num_classes), 1,
                            padding="same", kernel_regularizer=regularizer,
                            name="head_out_0")(x)
    return AnchorReshape(ANCHORS_PER_SCALE, name="head_reshape_0")(x)


def build_body(width: float = 1.0, input_size: int | None = None,
               weight_decay: float = 0.0) -> keras.Model:
    """Darknet-19: image -> ``[f32, f16]``.

    Shapes: ``(B, S, S, 3)`` -> ``[(B, S/32, S/32, 1024w), (B, S/16, S/16, 512w)]``.
    """
    image = image_input(input_size)
    x = image
    passthrough = None
    for stage, convs in enumerate(DARKNET19_STAGES):
        if stage:
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same",
                                          name=f"pool{stage}")(x)
        for index, (filters, kernel) in enumerate(convs, start=1):
            x = DarknetConv(scale_channels(filters, width), kernel, weight_decay=weight_decay,
                            name=f"stage{stage + 1}_conv{index}")(x)
        if stage == PASSTHROUGH_STAGE:
            passthrough = x
    return keras.Model(image, [x, passthrough], name=BODY_NAME)


def build_heads(body: keras.Model, num_classes: int, width: float = 1.0,
                weight_decay: float = 0.0) -> keras.Model:
    """``[f32, f16]`` -> ``[out32]``, ``(B, S/32, S/32, 5, 5 + num_classes)``."""
    f32, f16 = inputs = feature_inputs(body)
    conv = scaled_conv(width, weight_decay)
    x = conv(f32, HEAD_FILTERS, 3, "head_conv1")
    x = conv(x, HEAD_FILTERS, 3, "head_conv2")
    skip = conv(f16, PASSTHROUGH_FILTERS, 1, "passthrough_conv")
    skip = SpaceToDepth(REORG_BLOCK, name="passthrough_reorg")(skip)
    x = keras.layers.Concatenate(name="passthrough_concat")([skip, x])
    x = conv(x, HEAD_FILTERS, 3, "head_conv3")
    return keras.Model(inputs, [yolov2_output(x, num_classes, weight_decay)], name=HEADS_NAME)


def build_yolov2(num_classes: int, width: float = 1.0, input_size: int | None = None,
                 weight_decay: float = 0.0) -> keras.Model:
    """The full model ``heads(body(image))`` named ``yolov2``."""
    body = build_body(width, input_size, weight_decay)
    heads = build_heads(body, num_classes, width, weight_decay)
    return assemble(body, heads, NAME)
