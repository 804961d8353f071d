"""RPN: class-agnostic anchor objectness and box deltas on an FPN (P5, P4, P3).

The head of Faster R-CNN's region proposal network with FPN, shared by every level: a
3x3 conv (ReLU), then 1x1 convs to ``A`` objectness logits and ``A * 4`` box deltas. The
output of a level is ``(B, H, W, A, 5)``: the deltas ``(ty, tx, th, tw)`` of each anchor,
then its objectness logit; outputs coarsest first (strides 32, 16, 8). ``A = 3`` anchors
per location (aspect ratios 1:2, 1:1, 2:1 at one size per level, from the anchors file).
The number of dataset classes is accepted and ignored: the RPN is class-agnostic.
"""

from __future__ import annotations

import keras

from detkit.models.detector import HEADS_NAME, assemble, feature_inputs
from detkit.models.layers import AnchorReshape
from detkit.models.pyramid import (OUTPUT_KERNEL_STDDEV, feature_pyramid, pyramid_body,
                                   pyramid_channels)

#: Architecture name.
NAME = "rpn"
#: Anchors per location (aspect ratios).
ANCHORS_PER_SCALE = 3
#: Box deltas per anchor.
BOX_VALUES = 4


def _conv(filters: int, kernel: int, name: str, weight_decay: float, **kwargs):
    return keras.layers.Conv2D(
        filters, kernel, padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=OUTPUT_KERNEL_STDDEV),
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay else None,
        name=name, **kwargs)


def build_heads(body: keras.Model, width: float = 1.0, weight_decay: float = 0.0,
                num_anchors: int = ANCHORS_PER_SCALE) -> keras.Model:
    """``[C5, C4, C3]`` -> ``[out32, out16, out8]``, each ``(B, H, W, A, 5)``."""
    inputs = feature_inputs(body)
    channels = pyramid_channels(width)
    levels = feature_pyramid(inputs, channels, weight_decay)
    shared = _conv(channels, 3, "rpn_conv", weight_decay, activation="relu")
    obj_out = _conv(num_anchors, 1, "head_out_obj", weight_decay)
    box_out = _conv(num_anchors * BOX_VALUES, 1, "head_out_box", weight_decay)
    outputs = []
    for i, level in enumerate(levels):
        x = shared(level)
        box = AnchorReshape(num_anchors, name=f"head_reshape_box_{i}")(box_out(x))
        obj = AnchorReshape(num_anchors, name=f"head_reshape_obj_{i}")(obj_out(x))
        outputs.append(keras.layers.Concatenate(name=f"head_concat_{i}")([box, obj]))
    return keras.Model(inputs, outputs, name=HEADS_NAME)


def build_rpn(num_classes: int, width: float = 1.0, input_size: int | None = None,
              weight_decay: float = 0.0,
              backbone: str | None = None) -> keras.Model:
    """The full model ``heads(body(image))`` named ``rpn`` (``num_classes`` unused)."""
    del num_classes
    body = pyramid_body(width, input_size, weight_decay, backbone)
    heads = build_heads(body, width, weight_decay)
    return assemble(body, heads, NAME)
