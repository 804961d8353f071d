"""YOLOv3-tiny: a 7-conv max-pooling body and two heads at strides 32 and 16.

With ``width=1.0`` and 80 classes the model has 8,858,734 parameters, like the
reference. The body returns the stride-32 features (after the 1024-channel conv) and
the stride-16 features (after the 256-channel conv), coarsest first. Another body
(``backbone``, see :mod:`detkit.models.backbones`) gives the heads its own stride-32
and stride-16 features.
"""

from __future__ import annotations

import keras

from detkit.anchors import ANCHORS_PER_SCALE
from detkit.models import backbones
from detkit.models.detector import BODY_NAME, HEADS_NAME, assemble, feature_inputs, image_input
from detkit.models.layers import DarknetConv, head_output, scale_channels, scaled_conv

#: Architecture name.
NAME = "yolov3-tiny"
#: Body convs (3x3), each but the last followed by a 2x2 max pool; the pool after the
#: stride-16 conv (256) is where the stride-16 features are taken.
BODY_FILTERS = (16, 32, 64, 128, 256, 512, 1024)
#: Index in BODY_FILTERS of the conv whose output is the stride-16 feature map.
STRIDE16_CONV = 4
#: Index of the conv followed by a stride-1 pool (resolution stays at stride 32).
STRIDE1_POOL_CONV = 5
#: Index of the conv whose output is the stride-8 feature map (only a three-scale head
#: on this body uses it).
STRIDE8_CONV = 3
#: Feature maps the yolov3-tiny heads take (strides 32 and 16).
NUM_SCALES = 2
#: The body of ``build_yolov3_tiny`` unless another ``backbone`` is given.
DEFAULT_BACKBONE = "darknet-tiny"
#: Head channels: (stride-32 1x1 reduce, its 3x3, lateral 1x1, stride-16 3x3).
REDUCE_FILTERS, HEAD32_FILTERS, LATERAL_FILTERS, HEAD16_FILTERS = 256, 512, 128, 256


def build_body(width: float = 1.0, input_size: int | None = None,
               weight_decay: float = 0.0, num_scales: int = NUM_SCALES) -> keras.Model:
    """image -> ``[f32, f16]`` (and ``f8`` with ``num_scales=3``).

    Shapes: ``(B, S, S, 3)`` -> ``[(B, S/32, S/32, 1024w), (B, S/16, S/16, 256w),
    (B, S/8, S/8, 128w)]``, the first ``num_scales`` of them.
    """
    image = image_input(input_size)
    x = image
    stride16 = stride8 = None
    for i, filters in enumerate(BODY_FILTERS):
        x = DarknetConv(scale_channels(filters, width), 3, weight_decay=weight_decay,
                        name=f"conv{i + 1}")(x)
        if i == STRIDE16_CONV:
            stride16 = x
        if i == STRIDE8_CONV:
            stride8 = x
        if i == STRIDE1_POOL_CONV:
            x = keras.layers.MaxPooling2D(2, strides=1, padding="same", name=f"pool{i + 1}")(x)
        elif i < len(BODY_FILTERS) - 1:
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool{i + 1}")(x)
    return keras.Model(image, [x, stride16, stride8][:num_scales], name=BODY_NAME)


def build_heads(body: keras.Model, num_classes: int, width: float = 1.0,
                weight_decay: float = 0.0) -> keras.Model:
    """``[f32, f16]`` -> ``[out32, out16]``, each ``(B, H, W, 3, 5 + num_classes)``."""
    f32, f16 = inputs = feature_inputs(body)
    conv = scaled_conv(width, weight_decay)
    x = conv(f32, REDUCE_FILTERS, 1, "neck0_1")
    y0 = conv(x, HEAD32_FILTERS, 3, "head0_conv")
    x = conv(x, LATERAL_FILTERS, 1, "lateral1")
    x = keras.layers.UpSampling2D(2, name="upsample1")(x)
    x = keras.layers.Concatenate(name="concat1")([x, f16])
    y1 = conv(x, HEAD16_FILTERS, 3, "head1_conv")
    outputs = [head_output(y, ANCHORS_PER_SCALE, num_classes, i, weight_decay)
               for i, y in enumerate((y0, y1))]
    return keras.Model(inputs, outputs, name=HEADS_NAME)


def build_yolov3_tiny(num_classes: int, width: float = 1.0, input_size: int | None = None,
                      weight_decay: float = 0.0,
                      backbone: str = DEFAULT_BACKBONE) -> keras.Model:
    """The full model ``heads(body(image))`` named ``yolov3-tiny``, on ``backbone``."""
    body = backbones.build_body(backbone, width, input_size, weight_decay,
                                num_scales=NUM_SCALES)
    heads = build_heads(body, num_classes, width, weight_decay)
    return assemble(body, heads, NAME)
