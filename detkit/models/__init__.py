"""Detector architectures: ``build_model(name, num_classes, width, input_size)``.

Every model is ``heads(body(image))``: ``model.get_layer("body")`` maps the image
``(B, S, S, 3)`` float32 RGB in ``[0, 1]`` to a list of feature maps and
``model.get_layer("heads")`` maps those to a list of raw outputs
``(B, S/stride, S/stride, 3, 5 + C)`` (t_x, t_y, t_w, t_h, objectness logit, class
logits), coarsest stride first (the order of :func:`detkit.anchors.anchor_masks`).
"""

from __future__ import annotations

from detkit.errors import UsageError
from detkit.families import MODEL_NAMES, get_family

#: Input sides must be multiples of the coarsest stride.
MAX_STRIDE = 32
#: L2 factor on conv kernels, as in keras-yolo3.
DEFAULT_WEIGHT_DECAY = 5e-4

__all__ = ["MODEL_NAMES", "MAX_STRIDE", "DEFAULT_WEIGHT_DECAY", "num_anchors",
           "check_input_size", "build_model"]


def num_anchors(name: str) -> int:
    """Anchors the model ``name`` expects (9 for yolov3, 6 for yolov3-tiny)."""
    return get_family(name).num_anchors


def check_input_size(input_size: int | None) -> None:
    """Raise ``UsageError`` unless ``input_size`` is None or a positive multiple of 32."""
    if input_size is not None and (int(input_size) != input_size or input_size <= 0
                                   or input_size % MAX_STRIDE):
        raise UsageError(f"input size must be a positive multiple of {MAX_STRIDE}, "
                         f"got {input_size!r}")


def build_model(name: str, num_classes: int, width: float = 1.0,
                input_size: int | None = None, *,
                weight_decay: float = DEFAULT_WEIGHT_DECAY, backbone: str | None = None):
    """Build an untrained detector of the family ``name``.

    Args:
        name: a ``--model`` name (:data:`MODEL_NAMES`).
        num_classes: classes ``C`` (at least 1).
        width: channel multiplier (channels rounded to multiples of 8, at least 8).
        input_size: fixed input side in pixels (multiple of 32); ``None`` builds the
            model for any multiple of 32.
        weight_decay: L2 factor on conv kernels (0 disables it).
        backbone: the body (``--backbone``, :mod:`detkit.models.backbones`); ``None``:
            the family's own. Its initial weights are
            :func:`detkit.models.backbones.load_backbone_weights`'s business.

    Returns:
        A ``keras.Model`` named ``name``.

    Raises:
        UsageError: unknown name, ``num_classes < 1``, ``width <= 0``, a bad input size
            or a backbone the family does not take.
    """
    family = get_family(name)
    if int(num_classes) != num_classes or num_classes < 1:
        raise UsageError(f"number of classes must be a positive integer, got {num_classes!r}")
    if not width > 0:
        raise UsageError(f"width must be positive, got {width!r}")
    check_input_size(input_size)
    return family.build(int(num_classes), float(width),
                        None if input_size is None else int(input_size), float(weight_decay),
                        backbone=backbone)
