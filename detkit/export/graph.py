"""The inference graph: letterboxed uint8 images -> raw outputs or final detections.

:class:`InferenceModel` wraps a detector so that what is exported (and what ``predict``
compiles) takes the images a camera or a decoder gives, and does the rest in
``keras.ops`` (any backend): scale to ``[0, 1]``, the network, and with ``nms`` the
family's decoder and :func:`detkit.postprocess.select_detections`.

Input: ``(B, S, S, 3)`` uint8 RGB, letterboxed to the square input side ``S`` (aspect
kept, centered on a gray canvas, see :func:`detkit.data.augment.letterbox_image`).
Outputs (a dict):

* raw: ``raw_0 ... raw_{n-1}`` the network's outputs, coarsest stride first, each
  ``(B, H, W, A, 5 + C)`` float32 (decode them with the family's decoder and anchors);
* with NMS: ``boxes (B, M, 4)`` float32 xyxy in input pixels, ``scores (B, M)`` float32
  descending, ``classes (B, M)`` int32 (``-1`` past ``valid``), ``valid (B,)`` int32,
  ``M`` = ``max_det``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from detkit.postprocess import select_detections

#: uint8 pixels -> the network's ``[0, 1]`` input.
PIXEL_SCALE = 1.0 / 255.0
#: Name prefix of raw outputs (``raw_0`` is the coarsest scale).
RAW_PREFIX = "raw_"
#: Output names of an NMS graph, in the order :class:`Detections` holds them.
NMS_OUTPUTS = ("boxes", "scores", "classes", "valid")
#: dtype and layout of the exported input.
INPUT_DTYPE = "uint8"
#: Name of the exported input (ONNX input name, TF Lite and SavedModel signature key).
INPUT_NAME = "images"
INPUT_LAYOUT = "NHWC"


def raw_names(count: int) -> list[str]:
    """``raw_0 ... raw_{count-1}``."""
    return [f"{RAW_PREFIX}{i}" for i in range(count)]


def decoded_sizes(family, output_shapes: Sequence[Sequence[int]], anchors: np.ndarray,
                  input_size: int) -> tuple[int, int]:
    """``(N, C)``: boxes and classes the family's decoder makes of outputs of these shapes.

    The decoder is run once on zeros of batch 1, so that the graph can restore the
    static sizes ``select_detections`` needs when the batch dimension is dynamic.
    """
    zeros = [np.zeros((1, *shape[1:]), np.float32) for shape in output_shapes]
    boxes, scores = family.decode(zeros, anchors, input_size)
    return int(boxes.shape[1]), int(scores.shape[2])


class Postprocessor(keras.Model):
    """Raw outputs -> detections (the family's decoder, then per-class NMS).

    Args:
        family: the :class:`detkit.families.Family` whose decoder reads the outputs.
        anchors: ``(K, 2)`` anchors in input pixels.
        input_size: input side ``S``.
        output_shapes: shapes of the raw outputs (batch dimension ignored).
        conf, iou, max_det: see :func:`detkit.postprocess.select_detections`.
    """

    def __init__(self, family, anchors: np.ndarray, input_size: int,
                 output_shapes: Sequence[Sequence[int]], *, conf: float, iou: float,
                 max_det: int, **kwargs):
        super().__init__(**kwargs)
        self.family = family
        self.anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
        self.input_size = int(input_size)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.num_boxes, self.num_classes = decoded_sizes(family, output_shapes,
                                                         self.anchors, self.input_size)

    def call(self, outputs):
        boxes, scores = self.family.decode(list(outputs), self.anchors, self.input_size)
        boxes = ops.reshape(boxes, (-1, self.num_boxes, 4))
        scores = ops.reshape(scores, (-1, self.num_boxes, self.num_classes))
        found = select_detections(boxes, scores, conf=self.conf, iou=self.iou,
                                  max_det=self.max_det)
        return dict(zip(NMS_OUTPUTS, found))


class InferenceModel(keras.Model):
    """uint8 letterboxed images -> raw outputs, or detections when ``nms`` is set.

    Args:
        network: the detector (``heads(body(image))``), built for ``input_size``.
        family: its registry entry (the decoder).
        anchors: ``(K, 2)`` anchors in input pixels.
        input_size: input side ``S``.
        nms: append decoding and per-class NMS.
        conf, iou, max_det: NMS settings (used only with ``nms``; ``None``: the family's,
            :meth:`detkit.families.Family.nms`).
    """

    def __init__(self, network, family, anchors: np.ndarray, input_size: int, *,
                 nms: bool, conf: float = 0.001, iou: float | None = None,
                 max_det: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.nms = bool(nms)
        self.input_size = int(input_size)
        shapes = [tuple(output.shape) for output in network.outputs]
        self.output_names_raw = raw_names(len(shapes))
        iou, max_det = family.nms(iou, max_det)
        self.postprocessor = (Postprocessor(family, anchors, input_size, shapes, conf=conf,
                                            iou=iou, max_det=max_det) if nms else None)

    def input_spec_for_export(self):
        """The exported input ``images``: ``(None, S, S, 3)`` uint8 (dynamic batch)."""
        return [keras.InputSpec(shape=(None, self.input_size, self.input_size, 3),
                                dtype=INPUT_DTYPE, name=INPUT_NAME)]

    def ensure_built(self) -> "InferenceModel":
        """Run once on a blank image (Keras exports need a model that has been called)."""
        if not self.built:
            self(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))
        return self

    def call(self, images):
        pixels = ops.cast(images, "float32") * PIXEL_SCALE
        outputs = self.network(pixels, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        if self.postprocessor is None:
            return dict(zip(self.output_names_raw, outputs))
        return self.postprocessor(list(outputs))


#: ``jit_compile`` of the network and of decoding + NMS, by backend. On TensorFlow the
#: convolutions run faster as a plain graph (oneDNN kernels) than through XLA on a CPU,
#: while the NMS loop gains most from XLA; JAX always compiles. Other backends: Keras'
#: choice ("auto").
NETWORK_JIT = {"tensorflow": False, "jax": True}
POSTPROCESS_JIT = {"tensorflow": True, "jax": True}


def compiled(model: keras.Model, jit_table: dict | None = None) -> keras.Model:
    """``model`` compiled for :meth:`keras.Model.predict_on_batch` (no optimizer), with
    ``jit_compile`` from ``jit_table`` (default :data:`POSTPROCESS_JIT`) for the backend."""
    table = POSTPROCESS_JIT if jit_table is None else jit_table
    model.compile(jit_compile=table.get(keras.backend.backend(), "auto"))
    return model
