"""Freeze parts of a detector for transfer learning (keras-yolo3's ``freeze_body``).

Frozen layers are non-trainable, and Keras 3 runs a non-trainable ``BatchNormalization``
in inference mode (moving statistics, no updates) even when the model is called with
``training=True``: stage 1 never drifts the pretrained body's statistics. Recompile the
model after changing what is frozen.
"""

from __future__ import annotations

import keras

from detkit.choices import FREEZE_MODES  # noqa: F401 (re-exported)
from detkit.errors import UsageError
from detkit.keras_compat import direct_sublayers
from detkit.models.detector import BODY_NAME, HEADS_NAME, sub_model
from detkit.models.layers import HEAD_OUT_PREFIX


def freeze(model: keras.Model, mode: str) -> int:
    """Set which layers of ``model`` train, in place.

    Args:
        model: a detector from :func:`detkit.models.build_model` (``heads(body(x))``).
        mode: one of :data:`FREEZE_MODES`.

    Returns:
        The number of weight-holding layers left frozen (top-level layers of the body
        and heads models).

    Raises:
        UsageError: unknown ``mode``.
        ValueError: ``model`` lacks the ``body``/``heads`` sub-models.
    """
    if mode not in FREEZE_MODES:
        raise UsageError(f"unknown freeze mode {mode!r}; choose one of: "
                         f"{', '.join(FREEZE_MODES)}")
    body, heads = sub_model(model, BODY_NAME), sub_model(model, HEADS_NAME)
    set_trainable(model, True)
    if mode == "body":
        set_trainable(body, False)
    elif mode == "all-but-heads":
        set_trainable(body, False)
        for layer in heads.layers:
            set_trainable(layer, layer.name.startswith(HEAD_OUT_PREFIX))
    return sum(1 for part in (body, heads) for layer in part.layers
               if layer.weights and not (part.trainable and layer.trainable))


def set_trainable(layer: keras.Layer, value: bool) -> None:
    """Set ``trainable`` on ``layer`` and every layer nested in it.

    Each layer is set explicitly: on the TensorFlow backend Keras skips the setter when
    the new value equals the current one, so ``model.trainable = True`` would not reach
    sub-layers frozen individually.
    """
    layer.trainable = value
    for sub in direct_sublayers(layer):
        set_trainable(sub, value)
