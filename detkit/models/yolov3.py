"""YOLOv3: a Darknet-53 body and FPN-style heads at strides 32, 16 and 8.

With ``width=1.0`` and 80 classes the model has 61,949,149 parameters, like the
reference keras-yolo3 model. The body returns the stride-32, stride-16 and stride-8
Darknet features (coarsest first); the heads return one raw output per stride,
``(B, S/stride, S/stride, 3, 5 + C)``. Another body (``backbone``, see
:mod:`detkit.models.backbones`) gives the heads its own stride-32/16/8 features.
"""

from __future__ import annotations

import keras

from detkit.anchors import ANCHORS_PER_SCALE
from detkit.models import backbones
from detkit.models.detector import BODY_NAME, HEADS_NAME, assemble, feature_inputs, image_input
from detkit.models.layers import DarknetConv, DarknetResidual, head_output, scale_channels

#: Architecture name.
NAME = "yolov3"
#: Darknet-53 stem channels.
STEM_FILTERS = 32
#: Darknet-53 stages: (output channels, residual units); each halves the resolution.
DARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))
#: Stages whose outputs the heads use (strides 32, 16, 8: coarsest first).
FEATURE_STAGES = (4, 3, 2)
#: The body of ``build_yolov3`` unless another ``backbone`` is given.
DEFAULT_BACKBONE = "darknet53"
#: Neck channels per head (the 1x1 convs; the 3x3 convs have twice as many).
NECK_FILTERS = (512, 256, 128)


def build_body(width: float = 1.0, input_size: int | None = None,
               weight_decay: float = 0.0, num_scales: int = 3) -> keras.Model:
    """Darknet-53 without its classifier: image -> ``[f32, f16, f8]`` feature maps.

    Shapes: ``(B, S, S, 3)`` -> ``[(B, S/32, S/32, 1024w), (B, S/16, S/16, 512w),
    (B, S/8, S/8, 256w)]`` (``w``: channels scaled by ``width``); the first
    ``num_scales`` of them.
    """
    return residual_body(DARKNET53_STAGES, width, input_size, weight_decay, num_scales)


def residual_body(stages, width: float, input_size: int | None, weight_decay: float,
                  num_scales: int) -> keras.Model:
    """A Darknet-style body: a 3x3 stem, then per stage ``(channels, units)`` a stride-2
    3x3 conv and ``units`` residual units; returns stages 4, 3, 2 (strides 32, 16, 8,
    coarsest first), the first ``num_scales`` of them, as the model ``body``."""
    image = image_input(input_size)
    x = DarknetConv(scale_channels(STEM_FILTERS, width), 3, weight_decay=weight_decay,
                    name="stem")(image)
    stage_outputs = []
    for stage, (filters, units) in enumerate(stages, start=1):
        channels = scale_channels(filters, width)
        x = DarknetConv(channels, 3, strides=2, weight_decay=weight_decay,
                        name=f"stage{stage}_down")(x)
        for unit in range(1, units + 1):
            x = DarknetResidual(channels, scale_channels(filters // 2, width),
                                weight_decay=weight_decay, name=f"stage{stage}_res{unit}")(x)
        stage_outputs.append(x)
    features = [stage_outputs[stage] for stage in FEATURE_STAGES[:num_scales]]
    return keras.Model(image, features, name=BODY_NAME)


def _neck(x, filters: int, scale: int, weight_decay: float):
    """Five alternating 1x1/3x3 convs (``neck{scale}_1..5``), ending on ``filters``."""
    for i in range(5):
        kernel = 1 if i % 2 == 0 else 3
        channels = filters if kernel == 1 else 2 * filters
        x = DarknetConv(channels, kernel, weight_decay=weight_decay,
                        name=f"neck{scale}_{i + 1}")(x)
    return x


def build_heads(body: keras.Model, num_classes: int, width: float = 1.0,
                weight_decay: float = 0.0) -> keras.Model:
    """FPN-style heads: ``[f32, f16, f8]`` -> ``[out32, out16, out8]`` raw outputs.

    Each coarser neck is reduced by a 1x1 conv (``lateral{scale}``), upsampled 2x and
    concatenated with the next finer feature map.

    Shapes: output ``i`` is ``(B, H_i, W_i, 3, 5 + num_classes)``.
    """
    inputs = feature_inputs(body)
    outputs = []
    x = None
    for scale, (feature, filters) in enumerate(zip(inputs, NECK_FILTERS)):
        channels = scale_channels(filters, width)
        if x is None:
            x = feature
        else:
            x = DarknetConv(channels, 1, weight_decay=weight_decay, name=f"lateral{scale}")(x)
            x = keras.layers.UpSampling2D(2, name=f"upsample{scale}")(x)
            x = keras.layers.Concatenate(name=f"concat{scale}")([x, feature])
        x = _neck(x, channels, scale, weight_decay)
        y = DarknetConv(2 * channels, 3, weight_decay=weight_decay, name=f"head{scale}_conv")(x)
        outputs.append(head_output(y, ANCHORS_PER_SCALE, num_classes, scale, weight_decay))
    return keras.Model(inputs, outputs, name=HEADS_NAME)


def build_yolov3(num_classes: int, width: float = 1.0, input_size: int | None = None,
                 weight_decay: float = 0.0, backbone: str = DEFAULT_BACKBONE) -> keras.Model:
    """The full model ``heads(body(image))`` named ``yolov3``, on the body ``backbone``."""
    body = backbones.build_body(backbone, width, input_size, weight_decay,
                                num_scales=len(NECK_FILTERS))
    heads = build_heads(body, num_classes, width, weight_decay)
    return assemble(body, heads, NAME)
