"""RetinaNet: a body, an FPN (P5, P4, P3) and shared class and box subnets.

Every level ``P_i`` goes through the same two subnets (RetinaNet's sharing):
four 3x3 convs (GroupNorm, ReLU) and an output conv: ``A * C`` class logits (bias
``-log((1 - pi) / pi)``, ``pi = 0.01``, so each anchor starts at 1% per class) and
``A * 4`` box deltas. The output of a level is ``(B, H, W, A, 4 + C)``: the deltas
``(ty, tx, th, tw)`` of each anchor, then its class logits; outputs coarsest first
(strides 32, 16, 8). ``A = 9`` anchors per location (3 scales x 3 aspect ratios, from the
anchors file, see :mod:`detkit.assign.layout`).
"""

from __future__ import annotations

import keras

from detkit.models.detector import HEADS_NAME, assemble, feature_inputs
from detkit.models.layers import AnchorReshape
from detkit.models.pyramid import (conv_tower, feature_pyramid, output_conv, prior_bias,
                                   pyramid_body, pyramid_channels)

#: Architecture name.
NAME = "retinanet"
#: Anchors per location (scales x aspect ratios).
ANCHORS_PER_SCALE = 9
#: Box deltas per anchor.
BOX_VALUES = 4
#: Convs of each subnet before its output conv.
SUBNET_DEPTH = 4


def build_heads(body: keras.Model, num_classes: int, width: float = 1.0,
                weight_decay: float = 0.0, num_anchors: int = ANCHORS_PER_SCALE
                ) -> keras.Model:
    """``[C5, C4, C3]`` -> ``[out32, out16, out8]``, each ``(B, H, W, A, 4 + C)``."""
    inputs = feature_inputs(body)
    channels = pyramid_channels(width)
    levels = feature_pyramid(inputs, channels, weight_decay)
    cls_tower = conv_tower("cls_tower", channels, SUBNET_DEPTH, weight_decay)
    box_tower = conv_tower("box_tower", channels, SUBNET_DEPTH, weight_decay)
    cls_out = output_conv(num_anchors * num_classes, "head_out_cls", weight_decay,
                          bias_initializer=prior_bias())
    box_out = output_conv(num_anchors * BOX_VALUES, "head_out_box", weight_decay)
    outputs = []
    for i, level in enumerate(levels):
        box = AnchorReshape(num_anchors, name=f"head_reshape_box_{i}")(box_out(box_tower(level)))
        cls = AnchorReshape(num_anchors, name=f"head_reshape_cls_{i}")(cls_out(cls_tower(level)))
        outputs.append(keras.layers.Concatenate(name=f"head_concat_{i}")([box, cls]))
    return keras.Model(inputs, outputs, name=HEADS_NAME)


def build_retinanet(num_classes: int, width: float = 1.0, input_size: int | None = None,
                    weight_decay: float = 0.0,
                    backbone: str | None = None) -> keras.Model:
    """The full model ``heads(body(image))`` named ``retinanet``."""
    body = pyramid_body(width, input_size, weight_decay, backbone)
    heads = build_heads(body, num_classes, width, weight_decay)
    return assemble(body, heads, NAME)
