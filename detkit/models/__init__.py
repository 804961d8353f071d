"""Detector architectures: ``build_model(name, num_classes, width, input_size)``.

Every model is ``heads(body(image))``: ``model.get_layer("body")`` maps the image
``(B, S, S, 3)`` float32 RGB in ``[0, 1]`` to a list of feature maps and
``model.get_layer("heads")`` maps those to a list of raw outputs
``(B, S/stride, S/stride, 3, 5 + C)`` (t_x, t_y, t_w, t_h, objectness logit, class
logits), coarsest stride first (the order of :func:`detkit.anchors.anchor_masks`).
"""

from __future__ import annotations

from typing import Callable

#: Architectures, by ``--model`` name, with their number of anchors (3 per scale).
_ANCHORS = {"yolov3": 9, "yolov3-tiny": 6}
MODEL_NAMES = tuple(_ANCHORS)
#: Input sides must be multiples of the coarsest stride.
MAX_STRIDE = 32
#: L2 factor on conv kernels, as in keras-yolo3.
DEFAULT_WEIGHT_DECAY = 5e-4


def _check_name(name: str) -> None:
    from detkit.errors import UsageError

    if name not in _ANCHORS:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


def num_anchors(name: str) -> int:
    """Anchors the model ``name`` expects (9 for yolov3, 6 for yolov3-tiny)."""
    _check_name(name)
    return _ANCHORS[name]


def check_input_size(input_size: int | None) -> None:
    """Raise ``UsageError`` unless ``input_size`` is None or a positive multiple of 32."""
    from detkit.errors import UsageError

    if input_size is not None and (int(input_size) != input_size or input_size <= 0
                                   or input_size % MAX_STRIDE):
        raise UsageError(f"input size must be a positive multiple of {MAX_STRIDE}, "
                         f"got {input_size!r}")


def build_model(name: str, num_classes: int, width: float = 1.0,
                input_size: int | None = None, *,
                weight_decay: float = DEFAULT_WEIGHT_DECAY):
    """Build an untrained detector.

    Args:
        name: ``"yolov3"`` or ``"yolov3-tiny"``.
        num_classes: classes ``C`` (at least 1).
        width: channel multiplier (channels rounded to multiples of 8, at least 8).
        input_size: fixed input side in pixels (multiple of 32); ``None`` builds the
            model for any multiple of 32.
        weight_decay: L2 factor on conv kernels (0 disables it).

    Returns:
        A ``keras.Model`` named ``name``.

    Raises:
        UsageError: unknown name, ``num_classes < 1``, ``width <= 0`` or a bad input size.
    """
    from detkit.errors import UsageError

    _check_name(name)
    if int(num_classes) != num_classes or num_classes < 1:
        raise UsageError(f"number of classes must be a positive integer, got {num_classes!r}")
    if not width > 0:
        raise UsageError(f"--width must be positive, got {width!r}")
    check_input_size(input_size)
    builder: Callable
    if name == "yolov3":
        from detkit.models.yolov3 import build_yolov3 as builder
    else:
        from detkit.models.yolov3_tiny import build_yolov3_tiny as builder
    return builder(int(num_classes), float(width),
                   None if input_size is None else int(input_size), float(weight_decay))
