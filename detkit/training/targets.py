"""The on-the-fly target encoder that :class:`detkit.data.loader.DetectionBatches` calls."""

from __future__ import annotations

import numpy as np

from detkit.encode import EMPTY_CLASS, Yolov3Encoder


class YoloTrainingTargets:
    """``(boxes, classes) -> y_true`` of :class:`detkit.losses.YoloV3Loss`.

    Returns a dict: ``"targets"``, the tuple of per-scale compact targets
    ``(B, S/stride, S/stride, 3, 6)`` of :func:`detkit.encode.encode_yolov3`, and
    ``"boxes"``, ``(B, M, 4)`` float32 xyxy ground-truth boxes normalized to ``[0, 1]``
    of the input with zero rows for padding (for the loss's ignore mask).

    Args:
        anchors: ``(K, 2)`` anchors in input pixels.
        input_size: input side ``S`` in pixels.
        num_classes: classes ``C``; boxes of other class ids are dropped and counted.
    """

    def __init__(self, anchors: np.ndarray, input_size: int, num_classes: int):
        self.encoder = Yolov3Encoder(anchors, input_size, num_classes=num_classes)
        self.input_size = int(input_size)
        self.num_classes = int(num_classes)

    @property
    def stats(self):
        """What happened to the boxes so far (:class:`detkit.encode.EncodeStats`)."""
        return self.encoder.stats

    def __call__(self, boxes: np.ndarray, classes: np.ndarray) -> dict:
        """``boxes`` ``(B, M, 4)`` xyxy input pixels, ``classes`` ``(B, M)`` int (-1 pad)."""
        boxes = np.asarray(boxes, dtype=np.float32)
        classes = np.asarray(classes)
        targets = self.encoder(boxes, classes)
        valid = (classes != EMPTY_CLASS) & (classes >= 0) & (classes < self.num_classes)
        normalized = np.clip(boxes / np.float32(self.input_size), 0.0, 1.0)
        normalized = np.where(valid[..., None], normalized, np.float32(0.0))
        return {"targets": tuple(targets), "boxes": normalized.astype(np.float32)}
