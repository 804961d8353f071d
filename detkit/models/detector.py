"""Assemble a detector as ``heads(body(image))`` with the body and heads as named models."""

from __future__ import annotations

import keras

#: Names of the two sub-models every detkit detector is made of.
BODY_NAME = "body"
HEADS_NAME = "heads"
#: Name of the image input.
IMAGE_INPUT_NAME = "image"


def image_input(input_size: int | None) -> keras.KerasTensor:
    """``(B, S, S, 3)`` float32 RGB in ``[0, 1]``; ``S`` is ``None`` when not fixed."""
    return keras.Input((input_size, input_size, 3), name=IMAGE_INPUT_NAME)


def feature_inputs(body: keras.Model) -> list[keras.KerasTensor]:
    """One symbolic input per body output (spatial size left free), for the heads model."""
    return [keras.Input((None, None, out.shape[-1]), name=f"feature_{i}")
            for i, out in enumerate(body.outputs)]


def assemble(body: keras.Model, heads: keras.Model, name: str) -> keras.Model:
    """``image -> heads(body(image))`` named ``name`` (the architecture name).

    Args:
        body: image ``(B, S, S, 3)`` -> list of feature maps, coarsest stride first.
        heads: that list -> list of raw outputs ``(B, S/stride, S/stride, A, 5 + C)``.
        name: the model's name.
    """
    image = image_input(body.inputs[0].shape[1])
    outputs = heads(body(image))
    return keras.Model(image, list(outputs), name=name)


def sub_model(model: keras.Model, name: str) -> keras.Model:
    """The nested model ``name`` (``body``, ``heads``, a backbone) of ``model``.

    Raises:
        ValueError: ``model`` has none (not built by :func:`detkit.models.build_model`).
    """
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no {name!r} sub-model; build it with "
                         "detkit.models.build_model") from None


def at_input_size(model: keras.Model, input_size: int) -> keras.Model:
    """``model`` with a fixed ``input_size`` input: itself when it has that side, else a
    model calling it on ``(B, S, S, 3)`` (same layers and weights, static output shapes).

    A model built for any side (multi-scale training) is evaluated this way at
    ``--input-size``.
    """
    side = model.inputs[0].shape[1]
    if side == input_size:
        return model
    image = keras.Input((input_size, input_size, 3), name=IMAGE_INPUT_NAME)
    return keras.Model(image, model(image), name=model.name)
