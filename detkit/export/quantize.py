"""TF Lite conversion settings: float32, float16 weights, or int8 with a calibration set.

int8 is full-integer quantization of the network (weights and activations, calibrated on
a representative set of letterboxed images, uint8 input). Box decoding and NMS stay in
float32: their divisions, exponentials and score sorting lose too much at 8 bits (a
quantized IoU division even fails at run time), so every operator outside the network is
excluded from quantization through the TF Lite quantization debugger's deny lists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from detkit.errors import DataError
from detkit.export.runtimes import tflite_interpreter

#: Images drawn from ``--calibration`` when there are more.
DEFAULT_CALIBRATION_IMAGES = 100


def calibration_items(data: str | Path, count: int, *, format: str | None = None,
                      classes: str | Path | None = None) -> list:
    """Up to ``count`` images of ``data`` (an image folder or a dataset), evenly spread.

    Raises:
        DataError: no images (naming the path).
    """
    from detkit.predict import collect_images

    items = collect_images(data, format=format, classes=classes).items
    if not items:
        raise DataError("no calibration images", path=Path(data))
    if len(items) > count:
        picks = np.linspace(0, len(items) - 1, count).round().astype(int)
        items = [items[i] for i in picks]
    return items


def representative_dataset(items: Sequence, input_size: int
                           ) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's representative dataset: each image letterboxed as ``predict`` does,
    one ``(1, S, S, 3)`` uint8 batch at a time."""
    from detkit.predict import load_images

    def generate():
        for item in items:
            batch, _ = load_images([item], input_size)
            yield [batch]

    return generate


def network_scope(name: str) -> re.Pattern:
    """Matches converted tensor names that lie inside the sub-model ``name``."""
    return re.compile(rf"/{re.escape(name)}(_\d+)?/")


def postprocess_deny_lists(float_model: bytes, network_name: str
                           ) -> tuple[list[str], list[str]]:
    """Nodes and operator types of a float TF Lite model that lie outside the network.

    Returns:
        ``(nodes, op_types)``: output tensor names of every operator outside the network,
        and the operator types used only outside it.
    """
    interpreter = tflite_interpreter(model_content=float_model)
    inside = network_scope(network_name)
    nodes, outside_ops, inside_ops = [], set(), set()
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the documented debug view
        names = [interpreter._get_tensor_details(i, 0)["name"]  # noqa: SLF001
                 for i in op["outputs"]]
        if any(inside.search(name) for name in names):
            inside_ops.add(op["op_name"])
        else:
            outside_ops.add(op["op_name"])
            nodes += names
    return nodes, sorted(outside_ops - inside_ops)


def convert(saved_model: Path, quantize: str | None, *, network_name: str,
            representative: Callable | None = None) -> bytes:
    """Convert a SavedModel to TF Lite bytes.

    Args:
        saved_model: the SavedModel directory (its serving signature is kept, so the
            interpreter's signature runner sees the output names).
        quantize: ``None`` (float32), ``float16`` (float16 weights) or ``int8``.
        network_name: the network sub-model's name (int8 quantizes only inside it).
        representative: the representative dataset (int8).
    """
    import tensorflow as tf

    def converter():
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        if quantize is not None:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        return conv

    if quantize is None:
        return converter().convert()
    if quantize == "float16":
        conv = converter()
        conv.target_spec.supported_types = [tf.float16]
        return conv.convert()
    nodes, op_types = postprocess_deny_lists(converter_float(saved_model), network_name)
    conv = converter()
    conv.representative_dataset = representative
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=nodes, denylisted_ops=op_types)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=representative, debug_options=options)
    return debugger.get_nondebug_quantized_model()


def converter_float(saved_model: Path) -> bytes:
    """The float32 TF Lite bytes of a SavedModel (the map the int8 deny lists read)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()
