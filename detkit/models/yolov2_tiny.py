"""YOLOv2-tiny: a 7-conv max-pooling body and one output at stride 32 (no passthrough).

The body is that of Darknet's ``yolov2-tiny.cfg``: 3x3 convs of 16 to 1024 channels, each
but the last followed by a 2x2 max pool (the sixth pool has stride 1, so the resolution
stays at stride 32). The heads are one 3x3 512-channel conv and the output conv:
``(B, S/32, S/32, 5, 5 + C)``, the layout of :mod:`detkit.models.yolov2`.
"""

from __future__ import annotations

import keras

from detkit.models.detector import BODY_NAME, HEADS_NAME, assemble, feature_inputs, image_input
from detkit.models.layers import DarknetConv, scale_channels
from detkit.models.yolov2 import yolov2_output

#: Architecture name.
NAME = "yolov2-tiny"
#: Anchors per grid cell (one output scale).
ANCHORS_PER_SCALE = 5
#: Body convs (3x3), each but the last followed by a 2x2 max pool.
BODY_FILTERS = (16, 32, 64, 128, 256, 512, 1024)
#: Index of the conv followed by a stride-1 pool (resolution stays at stride 32).
STRIDE1_POOL_CONV = 5
#: Channels of the head's 3x3 conv.
HEAD_FILTERS = 512


def build_body(width: float = 1.0, input_size: int | None = None,
               weight_decay: float = 0.0) -> keras.Model:
    """image -> ``[f32]``: ``(B, S, S, 3)`` -> ``[(B, S/32, S/32, 1024w)]``."""
    image = image_input(input_size)
    x = image
    for i, filters in enumerate(BODY_FILTERS):
        x = DarknetConv(scale_channels(filters, width), 3, weight_decay=weight_decay,
                        name=f"conv{i + 1}")(x)
        if i == STRIDE1_POOL_CONV:
            x = keras.layers.MaxPooling2D(2, strides=1, padding="same", name=f"pool{i + 1}")(x)
        elif i < len(BODY_FILTERS) - 1:
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool{i + 1}")(x)
    return keras.Model(image, [x], name=BODY_NAME)


def build_heads(body: keras.Model, num_classes: int, width: float = 1.0,
                weight_decay: float = 0.0) -> keras.Model:
    """``[f32]`` -> ``[out32]``, ``(B, S/32, S/32, 5, 5 + num_classes)``."""
    inputs = feature_inputs(body)
    x = DarknetConv(scale_channels(HEAD_FILTERS, width), 3, weight_decay=weight_decay,
                    name="head_conv1")(inputs[0])
    return keras.Model(inputs, [yolov2_output(x, num_classes, weight_decay)], name=HEADS_NAME)


def build_yolov2_tiny(num_classes: int, width: float = 1.0, input_size: int | None = None,
                      weight_decay: float = 0.0) -> keras.Model:
    """The full model ``heads(body(image))`` named ``yolov2-tiny``."""
    body = build_body(width, input_size, weight_decay)
    heads = build_heads(body, num_classes, width, weight_decay)
    return assemble(body, heads, NAME)
