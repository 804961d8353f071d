"""Running an exported file: TensorFlow (SavedModel), LiteRT / TF Lite, onnxruntime.

Every runtime is called with a ``(B, S, S, 3)`` uint8 batch (see
:mod:`detkit.export.graph`) and returns ``{output name: NumPy array}``, the same names
whatever the format (``raw_0...`` or ``boxes, scores, classes, valid``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from detkit.errors import ArtifactError
from detkit.export.deps import first_available, require

#: LiteRT's interpreter first; TensorFlow's (deprecated there) when LiteRT is absent.
TFLITE_MODULES = ("ai_edge_litert.interpreter", "tensorflow.lite")
#: Name of the signature the exporters write.
SERVING_SIGNATURE = "serving_default"


def tflite_interpreter(model_path: str | None = None, model_content: bytes | None = None):
    """A LiteRT (or TF Lite) interpreter of a file or of model bytes."""
    module = first_available(TFLITE_MODULES, "running a .tflite model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # tf.lite.Interpreter's deprecation notice
        interpreter = module.Interpreter(model_path=model_path, model_content=model_content)
    return interpreter


class Runtime:
    """An exported model, callable on uint8 image batches.

    Attributes:
        path: the file (or SavedModel directory).
        format: ``saved_model``, ``tflite`` or ``onnx``.
        engine: what runs it (for reports): ``tensorflow``, ``litert``, ``onnxruntime``.
    """

    path: Path
    format: str
    engine: str

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


#: Characters TensorFlow reads as a glob pattern in a SavedModel's variables path.
GLOB_CHARACTERS = "[]*?"


@contextlib.contextmanager
def glob_free(path: Path) -> Iterator[Path]:
    """``path``, or a temporary link to it when its full path holds a glob character:
    TensorFlow finds a SavedModel's variables by pattern, so ``sm[1]/variables`` would
    match nothing (the variables are read while loading; the link can go after)."""
    full = Path(path).resolve()
    if not any(char in str(full) for char in GLOB_CHARACTERS):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="detkit-") as folder:
        link = Path(folder) / "saved_model"
        os.symlink(full, link, target_is_directory=True)
        yield link


class SavedModelRuntime(Runtime):
    """A SavedModel's serving signature, run by TensorFlow."""

    format = "saved_model"
    engine = "tensorflow"

    def __init__(self, path: Path):
        import tensorflow as tf

        self.path = Path(path)
        self._tf = tf
        try:
            with glob_free(self.path) as readable:
                self._loaded = tf.saved_model.load(str(readable))
            self._fn = self._loaded.signatures[SERVING_SIGNATURE]
        except (OSError, KeyError, ValueError) as err:
            raise ArtifactError(f"cannot load the SavedModel ({err})", path=path) from None
        self._input = next(iter(self._fn.structured_input_signature[1]))

    def __call__(self, images):
        outputs = self._fn(**{self._input: self._tf.constant(images)})
        return {name: value.numpy() for name, value in outputs.items()}


class TFLiteRuntime(Runtime):
    """A ``.tflite`` file, run by the LiteRT interpreter through its signature runner."""

    format = "tflite"

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            interpreter = tflite_interpreter(model_path=str(path))
        except ValueError as err:
            raise ArtifactError(f"cannot load the TF Lite model ({err})", path=path) from None
        self.engine = "litert" if "litert" in type(interpreter).__module__ else "tflite"
        signatures = interpreter.get_signature_list()
        if SERVING_SIGNATURE not in signatures:
            raise ArtifactError(f"no {SERVING_SIGNATURE!r} signature (export it with "
                                f"detkit export)", path=path)
        self._runner = interpreter.get_signature_runner(SERVING_SIGNATURE)
        self._input = signatures[SERVING_SIGNATURE]["inputs"][0]

    def __call__(self, images):
        return dict(self._runner(**{self._input: np.ascontiguousarray(images)}))


class OnnxRuntime(Runtime):
    """A ``.onnx`` file, run by onnxruntime (the best available execution provider)."""

    format = "onnx"
    engine = "onnxruntime"

    def __init__(self, path: Path):
        ort = require("onnxruntime", "running a .onnx model")
        self.path = Path(path)
        try:
            self._session = ort.InferenceSession(str(path),
                                                 providers=ort.get_available_providers())
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            raise ArtifactError(f"cannot load the ONNX model ({err})", path=path) from None
        self._input = self._session.get_inputs()[0].name
        self._names = [output.name for output in self._session.get_outputs()]

    def __call__(self, images):
        values = self._session.run(None, {self._input: images})
        return dict(zip(self._names, values))


RUNTIMES = {"saved_model": SavedModelRuntime, "tflite": TFLiteRuntime, "onnx": OnnxRuntime}


def open_runtime(path: str | os.PathLike, format: str) -> Runtime:
    """Load the exported model at ``path`` (``format`` from
    :func:`detkit.export.settings.detect_format`).

    Raises:
        ArtifactError: a missing or unreadable file.
        UsageError: the runtime is not installed (the ``export`` extra).
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError("exported model not found", path=path)
    return RUNTIMES[format](path)


def disk_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
