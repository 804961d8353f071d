"""Darknet conv arrays -> detkit (Keras) variables, with Darknet's arithmetic kept exact.

- Kernels: Darknet ``(out, in, kh, kw)`` -> Keras ``(kh, kw, in, out)``; both are
  cross-correlations, and detkit's stride-2 DarknetConv pads top-left like Darknet.
- Batch norm: Darknet computes ``gamma * (x - mean) / (sqrt(var) + 1e-6) + beta``, Keras
  ``gamma' * (x - mean) / sqrt(var + eps) + beta``. Keeping ``mean``, ``var`` and
  ``beta`` and setting ``gamma' = gamma * sqrt(var + eps) / (sqrt(var) + 1e-6)`` makes
  the two equal for any ``var >= 0`` (a plain copy would differ by up to ``eps / 2var``
  relative per layer, and without bound for tiny variances).
- Output convs (bias, no batch norm): copied, their ``3 * (5 + C)`` output channels
  permuted per anchor when detkit lists a head's anchors in another order.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from detkit.darknet.layout import Layout
from detkit.darknet.weights import ConvWeights
from detkit.models.weights import PATH_SEP, model_layer_variables

#: Darknet adds this to the standard deviation (not to the variance) when normalizing.
DARKNET_BN_EPSILON = 1e-6
#: Sub-layer names of detkit's DarknetConv.
CONV_NAME, BN_NAME = "conv", "bn"


def keras_kernel(kernel: np.ndarray) -> np.ndarray:
    """``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``."""
    return np.ascontiguousarray(np.transpose(kernel, (2, 3, 1, 0)))


def fold_gamma(gamma: np.ndarray, variance: np.ndarray, keras_epsilon: float) -> np.ndarray:
    """Keras ``gamma`` giving Darknet's normalization with Keras' ``epsilon``.

    Shapes: ``(C,)`` -> ``(C,)`` float32 (computed in float64).
    """
    variance = np.asarray(variance, dtype=np.float64)
    scale = np.sqrt(variance + keras_epsilon) / (np.sqrt(variance) + DARKNET_BN_EPSILON)
    return (np.asarray(gamma, dtype=np.float64) * scale).astype(np.float32)


def darknet_conv_arrays(weights: ConvWeights, keras_epsilon: float) -> tuple[list, list]:
    """Arrays of a DarknetConv: ``([kernel], [gamma, beta, moving_mean, moving_var])``."""
    assert weights.gamma is not None and weights.variance is not None
    bn = [fold_gamma(weights.gamma, weights.variance, keras_epsilon), weights.bias,
          weights.mean, weights.variance]
    return [keras_kernel(weights.kernel)], bn


def output_conv_arrays(weights: ConvWeights, anchor_order: list[int]) -> list[np.ndarray]:
    """``[kernel (1, 1, in, A*V), bias (A*V,)]``, anchors reordered: detkit slot ``j``
    takes Darknet mask slot ``anchor_order[j]``."""
    kernel = keras_kernel(weights.kernel)
    anchors = len(anchor_order)
    values = kernel.shape[-1] // anchors
    kernel = kernel.reshape(*kernel.shape[:-1], anchors, values)[..., anchor_order, :]
    bias = weights.bias.reshape(anchors, values)[anchor_order]
    return [kernel.reshape(*kernel.shape[:-2], anchors * values), bias.reshape(-1)]


@dataclasses.dataclass
class FillReport:
    """What :func:`fill_model` did.

    Attributes:
        loaded: detkit layer paths given Darknet weights (``body/stem``, ...).
        left_at_init: detkit layer paths the file did not reach (kept as initialized).
        not_imported: Darknet convs read but not mapped (the classifier's).
    """

    loaded: list[str]
    left_at_init: list[str]
    not_imported: list[str]


def _sublayer(model: keras.Model, path: str) -> keras.Layer:
    layer = model
    for name in path.split(PATH_SEP):
        layer = layer.get_layer(name) if isinstance(layer, keras.Model) else getattr(
            layer, name)
    return layer


def _assign(variables: list, arrays: list[np.ndarray], path: str) -> None:
    if len(variables) != len(arrays):
        raise ValueError(f"{path}: {len(arrays)} arrays for {len(variables)} variables")
    for variable, array in zip(variables, arrays):
        if tuple(variable.shape) != tuple(array.shape):
            raise ValueError(f"{path}: Darknet shape {array.shape}, detkit "
                             f"{tuple(variable.shape)}")
        variable.assign(np.asarray(array, dtype=variable.dtype))


def fill_model(model: keras.Model, layout: Layout, convs: list[ConvWeights]) -> FillReport:
    """Copy the convs the weights file holds into ``model`` (built for ``layout.model``).

    Args:
        model: ``build_model(layout.model, C, 1.0)``.
        layout: the recognized cfg.
        convs: the file's convs, in cfg order (a prefix of ``layout.convs``).

    Raises:
        ValueError: a shape that does not fit (a bug: the layout fixes every shape).
    """
    variables = model_layer_variables(model)
    loaded, not_imported = [], []
    for mapping, weights in zip(layout.convs, convs):
        target = mapping.target
        if target is None:
            not_imported.append(mapping.shape.name)
            continue
        if mapping.head is not None:
            _assign(variables[target],
                    output_conv_arrays(weights, layout.anchor_orders[mapping.head]), target)
        else:
            epsilon = float(_sublayer(model, f"{target}{PATH_SEP}{BN_NAME}").epsilon)
            kernel, bn = darknet_conv_arrays(weights, epsilon)
            _assign(variables[f"{target}{PATH_SEP}{CONV_NAME}"], kernel, target)
            _assign(variables[f"{target}{PATH_SEP}{BN_NAME}"], bn, target)
        loaded.append(target)
    done = set(loaded)
    left = []
    for path in variables:
        layer = path.rsplit(PATH_SEP, 1)[0] if path.endswith(
            (PATH_SEP + CONV_NAME, PATH_SEP + BN_NAME)) else path
        if layer not in done and layer not in left:
            left.append(layer)
    return FillReport(loaded, left, not_imported)
