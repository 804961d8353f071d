"""Every use of private Keras API in detkit, each behind one named function.

Keras has no public way to do these; each function says why it is needed, and
``tests/test_keras_compat.py`` fails loudly, naming the Keras version, when an upgrade
removes or renames what it relies on.
"""

from __future__ import annotations

from typing import Any

import keras


def symbolic_build_without_data(model: Any) -> None:
    """Finish building an already built ``model`` before ``fit`` without a batch.

    Keras' TensorFlow trainer (``TensorFlowTrainer._maybe_symbolic_build``) draws a
    batch from the training iterator and averages it with ``strategy.reduce`` to learn
    its shapes, which ``MultiWorkerMirroredStrategy`` refuses (it cannot reduce a
    nested batch), and which would consume a generator's first element. A model whose
    layers and optimizer are built needs no batch: ``_symbolic_build`` then only
    builds what is left (metrics), if anything.

    Raises:
        ValueError: ``model`` is not built yet.
    """
    if not model.built:
        raise ValueError(f"build {model.name} before fitting it under a multi-worker "
                         f"strategy")
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=None)


def keras_version() -> str:
    """The installed Keras version (for the compat tests' messages)."""
    return keras.__version__


def ema_variable_pairs(optimizer: Any) -> list[tuple[Any, Any]] | None:
    """``(variable, moving average)`` of each variable an EMA optimizer updates.

    ``None`` until the optimizer is built (no step taken yet). Keras keeps the averages in
    ``optimizer._model_variables_moving_average``, aligned with the variables the
    optimizer was built on (``optimizer._trainable_variables``). The public
    ``keras.callbacks.SwapEMAWeights`` reads the same attributes but swaps with
    ``a + b - b`` arithmetic on TensorFlow, which does not restore the raw weights bit
    for bit; :func:`detkit.training.callbacks.ema_weights` copies them instead.
    """
    if not hasattr(optimizer, "_model_variables_moving_average"):
        return None
    return list(zip(optimizer._trainable_variables, optimizer._model_variables_moving_average))


def declare_built(layer: Any, built: bool = True) -> None:
    """Mark ``layer`` built (or not) without calling its ``build``.

    For a model that owns no weights and wraps an already-built network (the training
    model): ``load_weights`` refuses an unbuilt model, and Keras sets ``built`` only from
    ``build``, which for a subclassed model means a call on real inputs.
    """
    layer.built = built


def direct_sublayers(layer: Any) -> list:
    """The layers ``layer`` tracks directly (one level down, in creation order).

    A ``keras.Model`` lists them as ``layers``; a plain ``keras.Layer`` holding others (a
    conv + batch-norm block) has no public list, so this asks Keras' layer tracker.
    """
    return list(layer._flatten_layers(include_self=False, recursive=False))
