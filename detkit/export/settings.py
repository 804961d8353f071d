"""The settings an export carries in its manifest, and how a consumer reads them back.

``detkit export`` records an ``export`` block in ``NAME.manifest.json``; ``predict`` and
``eval-map`` read it to run the file with the same anchors, classes and input size,
and to know whether the file returns raw outputs or final detections.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detkit.artifacts import manifest_path, read_manifest
from detkit.errors import ArtifactError

#: Export formats and the file name ending each one gets.
FORMATS = ("saved_model", "tflite", "onnx")
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
#: Quantization modes (TF Lite only).
QUANTIZATIONS = ("float16", "int8")
#: Key of the block in the manifest.
MANIFEST_KEY = "export"
#: File that marks a SavedModel directory.
SAVED_MODEL_FILE = "saved_model.pb"


@dataclasses.dataclass
class ExportSettings:
    """What an exported file is and what its input and outputs mean.

    Attributes:
        format: ``saved_model``, ``tflite`` or ``onnx``.
        model: the ``--model`` family name.
        width: the channel multiplier.
        input_size: the fixed square input side ``S``.
        anchors: ``(K, 2)`` anchors in input pixels (as lists).
        class_names: one name per class index.
        quantize: ``None``, ``float16`` or ``int8``.
        nms: the file returns detections (``boxes, scores, classes, valid``) instead of
            raw outputs.
        conf, iou, max_det: the NMS settings baked in (with ``nms``).
        outputs: output names in order.
        weights_sha256: sha256 of the source ``.weights.h5``.
        backbone: the ``--backbone`` it was built with (``None``: the family's own).
    """

    format: str
    model: str
    width: float
    input_size: int
    anchors: list[list[float]]
    class_names: list[str]
    quantize: Optional[str]
    nms: bool
    conf: Optional[float]
    iou: Optional[float]
    max_det: Optional[int]
    outputs: list[str]
    weights_sha256: str
    backbone: Optional[str] = None

    @property
    def anchor_array(self) -> np.ndarray:
        """The anchors as a ``(K, 2)`` float32 array."""
        return np.asarray(self.anchors, np.float32).reshape(-1, 2)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest block, with the input contract spelled out."""
        block = dataclasses.asdict(self)
        block["input"] = {"dtype": "uint8", "layout": "NHWC",
                          "shape": [None, self.input_size, self.input_size, 3],
                          "pixels": "RGB 0-255, letterboxed (aspect kept, centered, "
                                    "gray padding) to the input side"}
        return block


def detect_format(path: str | os.PathLike) -> Optional[str]:
    """``tflite``, ``onnx`` or ``saved_model`` from the path, ``None`` for anything else
    (e.g. a ``.weights.h5`` file)."""
    path = Path(path)
    if path.is_dir():
        return "saved_model" if (path / SAVED_MODEL_FILE).is_file() else None
    for name, suffix in SUFFIXES.items():
        if path.suffix.lower() == suffix:
            return name
    return None


def read_settings(path: str | os.PathLike) -> Optional[ExportSettings]:
    """The export block of ``path``'s manifest (``None`` without a manifest or block).

    Raises:
        ArtifactError: a manifest whose export block is incomplete.
    """
    block = read_manifest(path).get(MANIFEST_KEY)
    if not block:
        return None
    fields = dataclasses.fields(ExportSettings)
    names = {field.name for field in fields}
    required = {field.name for field in fields if field.default is dataclasses.MISSING}
    missing = sorted(required - set(block))
    if missing:
        raise ArtifactError(f"the manifest's export block lacks {', '.join(missing)}",
                            path=manifest_path(path))
    return ExportSettings(**{name: block[name] for name in names if name in block})
