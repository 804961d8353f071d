"""What ``predict`` runs: a Keras model (compiled or eager) or an exported file.

A :class:`Detector` takes a ``(B, S, S, 3)`` uint8 batch of letterboxed images and
returns :class:`Found` detections in input pixels. It pads every batch to one fixed size,
so a compiled function sees one shape and is traced once.

* :class:`KerasDetector`: ``compile=True`` runs the network and then decoding + NMS
  through ``predict_on_batch``, each compiled once for the static batch (on TensorFlow the
  network as a graph, whose oneDNN convolutions beat XLA's on a CPU, and decoding + NMS
  with XLA; on JAX both jitted); otherwise the network plus decoding and NMS run eagerly
  as one :class:`~detkit.export.graph.InferenceModel`, op by op (the reference loop).
* :class:`ExportDetector`: an exported file through its runtime; raw outputs are decoded
  and NMS'd by a compiled :class:`~detkit.export.graph.Postprocessor`, an export with
  NMS is only filtered by ``conf`` and ``max_det``.
"""

from __future__ import annotations

import dataclasses
from typing import Collection

import numpy as np

from detkit.export.graph import (NETWORK_JIT, NMS_OUTPUTS, InferenceModel, Postprocessor,
                                 compiled)
from detkit.export.runtimes import Runtime


@dataclasses.dataclass
class Found:
    """Detections of a batch as NumPy arrays (see :class:`detkit.postprocess.Detections`).

    Attributes:
        boxes: ``(B, M, 4)`` float32 xyxy input pixels.
        scores: ``(B, M)`` float32, descending.
        classes: ``(B, M)`` int32.
        valid: ``(B,)`` int32 real detections per image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    valid: np.ndarray

    @classmethod
    def from_outputs(cls, outputs) -> "Found":
        """From ``{boxes, scores, classes, valid}`` (arrays or backend tensors)."""
        from keras import ops

        return cls(*(np.asarray(ops.convert_to_numpy(outputs[name])) for name in NMS_OUTPUTS))

    def limited(self, conf: float, max_det: int) -> "Found":
        """Keep detections scoring at least ``conf``, at most ``max_det`` per image."""
        above = (self.scores >= conf) & (np.arange(self.scores.shape[1])[None]
                                         < self.valid[:, None])
        valid = np.minimum(above.sum(axis=1), max_det).astype(np.int32)
        cut = min(int(max_det), self.scores.shape[1])
        return Found(self.boxes[:, :cut], self.scores[:, :cut], self.classes[:, :cut], valid)


def pad_batch(images: np.ndarray, size: int) -> np.ndarray:
    """``images`` padded with zero images to ``size`` along the batch axis."""
    if len(images) >= size:
        return images
    pad = np.zeros((size - len(images), *images.shape[1:]), images.dtype)
    return np.concatenate([images, pad])


class Detector:
    """uint8 letterboxed batches -> :class:`Found` (see the module docstring).

    Attributes:
        input_size: the square input side ``S`` the images must have.
        batch_size: every call is padded to this many images.
        description: what runs, for reports (``keras compiled``, ``tflite int8``...).
        notes: things the user should know about how the detections were made.
    """

    input_size: int
    batch_size: int
    description: str
    notes: list[str]

    def warm_up(self) -> None:
        """Run once on a blank batch: compiles (or loads) everything before timing starts."""
        self(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))

    def __call__(self, images: np.ndarray) -> Found:
        count = len(images)
        found = self._run(pad_batch(np.asarray(images, np.uint8), self.batch_size))
        return Found(found.boxes[:count], found.scores[:count], found.classes[:count],
                     found.valid[:count])

    def _run(self, images: np.ndarray) -> Found:
        raise NotImplementedError


class KerasDetector(Detector):
    """A Keras detector with decoding and NMS, compiled (jit, static batch) or eager.

    Args:
        network: the detector, built for ``input_size``, weights loaded.
        family: its registry entry.
        anchors: ``(K, 2)`` anchors in input pixels.
        input_size: input side ``S``.
        conf, iou, max_det: NMS settings.
        batch_size: images per call.
        compile: compiled (``predict_on_batch`` with jit) instead of eager.
    """

    def __init__(self, network, family, anchors, input_size: int, *, conf: float,
                 iou: float, max_det: int, batch_size: int, compile: bool = True):
        self.input_size, self.batch_size = int(input_size), int(batch_size)
        self.compile = bool(compile)
        self.model = InferenceModel(network, family, anchors, input_size,
                                    nms=not self.compile, conf=conf, iou=iou,
                                    max_det=max_det)
        if self.compile:
            # two compiled steps: the network (graph or jit, see NETWORK_JIT) and the
            # decoding + NMS (jit), each traced once for the static batch
            compiled(self.model, NETWORK_JIT)
            shapes = [tuple(output.shape) for output in network.outputs]
            self.post = compiled(Postprocessor(family, anchors, input_size, shapes,
                                               conf=conf, iou=iou, max_det=max_det))
        self.description = "keras " + ("compiled" if self.compile else "eager")
        self.notes = []

    def _run(self, images):
        if self.compile:
            raw = self.model.predict_on_batch(images)
            outputs = [raw[name] for name in self.model.output_names_raw]
            return Found.from_outputs(self.post.predict_on_batch(outputs))
        return Found.from_outputs(self.model(images))


class ExportDetector(Detector):
    """An exported model (:class:`~detkit.export.runtimes.Runtime`) with ``predict``'s
    postprocessing.

    Args:
        runtime: the loaded export.
        settings: its :class:`~detkit.export.settings.ExportSettings`.
        family: the registry entry of ``settings.model`` (decodes raw outputs).
        anchors: anchors for decoding raw outputs.
        conf, iou, max_det: NMS settings of raw exports; an NMS export applies its own
            IoU and is filtered by ``conf`` and ``max_det``.
        batch_size: images per call.
        compile: compile the postprocessing of raw outputs.
        given: which of ``conf``, ``iou``, ``max_det`` the user set: only those get a note
            when an NMS export cannot honour them.
    """

    def __init__(self, runtime: Runtime, settings, family, anchors, *, conf: float,
                 iou: float, max_det: int, batch_size: int, compile: bool = True,
                 given: Collection[str] = ("conf", "iou", "max_det")):
        self.runtime, self.settings, self.family = runtime, settings, family
        self.anchors = np.asarray(anchors, np.float32)
        self.input_size, self.batch_size = int(settings.input_size), int(batch_size)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.compile = bool(compile)
        self._post = None
        kind = settings.format + (f" {settings.quantize}" if settings.quantize else "")
        self.description = f"{kind} ({runtime.engine})" + (" + nms" if settings.nms else "")
        self.notes = self._nms_notes(given) if settings.nms else []

    def _nms_notes(self, given: Collection[str]) -> list[str]:
        notes = []
        baked = self.settings
        if "iou" in given and abs(self.iou - baked.iou) > 1e-9:
            notes.append(f"the export applies its own NMS (IoU {baked.iou:g}); --iou "
                         f"{self.iou:g} is not used")
        if "conf" in given and self.conf < baked.conf:
            notes.append(f"the export keeps scores >= {baked.conf:g}; --conf {self.conf:g} "
                         f"cannot bring back lower ones")
        if "max_det" in given and self.max_det > baked.max_det:
            notes.append(f"the export returns at most {baked.max_det} detections per image")
        return notes

    def _run(self, images):
        outputs = self.runtime(images)
        if self.settings.nms:
            return Found.from_outputs(outputs).limited(self.conf, self.max_det)
        raw = [outputs[name] for name in self.settings.outputs]
        if self._post is None:
            self._post = Postprocessor(self.family, self.anchors, self.input_size,
                                       [r.shape for r in raw], conf=self.conf,
                                       iou=self.iou, max_det=self.max_det)
            if self.compile:
                compiled(self._post)
        if self.compile:
            return Found.from_outputs(self._post.predict_on_batch(raw))
        return Found.from_outputs(self._post(raw))
