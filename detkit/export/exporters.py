"""Writing an :class:`~detkit.export.graph.InferenceModel` as SavedModel, TF Lite or ONNX.

The ecosystem's exporters do the work: Keras ``model.export`` writes the SavedModel and
the ONNX file (through tf2onnx on TensorFlow), the TF Lite converter turns the
SavedModel into a ``.tflite`` (float32, float16 or int8, see
:mod:`detkit.export.quantize`). Every target appears atomically: a temporary file or
folder beside it, renamed on success, removed on failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterator

from detkit.artifacts import atomic_path
from detkit.export import quantize as quantization
from detkit.export.deps import require


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the converters' Python warnings (deprecations inside tf2onnx and TF Lite
    that say nothing about the user's model)."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    old = path.with_name(f".old-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def write_saved_model(model, path: Path) -> Path:
    """``model.export(format="tf_saved_model")`` with a uint8 ``(None, S, S, 3)`` input."""
    require("tensorflow", "--format saved_model")
    model.ensure_built()
    with atomic_dir(path) as tmp, quiet():
        model.export(str(tmp), format="tf_saved_model",
                     input_signature=model.input_spec_for_export(), verbose=False)
    return Path(path)


def write_onnx(model, path: Path, opset: int | None = None) -> Path:
    """``model.export(format="onnx")`` (tf2onnx on TensorFlow), checked by onnxruntime's
    loader afterwards."""
    require("onnx", "--format onnx")
    require("onnxruntime", "--format onnx")
    if _backend() == "tensorflow":
        require("tf2onnx", "--format onnx")
        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    model.ensure_built()
    with atomic_path(path) as tmp, quiet():
        model.export(str(tmp), format="onnx", input_signature=model.input_spec_for_export(),
                     verbose=False, opset_version=opset)
    return Path(path)


def write_tflite(model, path: Path, *, quantize: str | None = None,
                 representative: Callable | None = None) -> Path:
    """SavedModel -> TF Lite converter -> ``path`` (float32, float16 or int8)."""
    require("tensorflow", "--format tflite")
    model.ensure_built()
    with tempfile.TemporaryDirectory(prefix="detkit-export-") as folder, quiet():
        saved = Path(folder) / "saved_model"
        model.export(str(saved), format="tf_saved_model",
                     input_signature=model.input_spec_for_export(), verbose=False)
        data = quantization.convert(saved, quantize, network_name=model.network.name,
                                    representative=representative)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _backend() -> str:
    import keras

    return keras.backend.backend()
