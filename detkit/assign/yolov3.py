"""The YOLOv3 assigner: per-scale compact targets plus the boxes of the loss's ignore mask."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from detkit.encode import EMPTY_CLASS, Yolov3Encoder


def normalized_boxes(boxes: np.ndarray, classes: np.ndarray, input_size: int,
                     num_classes: int) -> np.ndarray:
    """``(B, M, 4)`` float32 xyxy boxes normalized to ``[0, 1]`` of the input, with zero
    rows where the row is padding or its class is out of range (for IoU-based ignores)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    classes = np.asarray(classes)
    valid = (classes != EMPTY_CLASS) & (classes >= 0) & (classes < num_classes)
    normalized = np.clip(boxes / np.float32(input_size), 0.0, 1.0)
    return np.where(valid[..., None], normalized, np.float32(0.0)).astype(np.float32)


class Yolov3Assigner:
    """``(boxes, classes) -> y_true`` of :class:`detkit.losses.YoloV3Loss`.

    Returns a dict: ``"targets"``, the tuple of per-scale compact targets
    ``(B, S/stride, S/stride, 3, 6)`` of :func:`detkit.encode.encode_yolov3`, and
    ``"boxes"``, ``(B, M, 4)`` float32 xyxy ground-truth boxes normalized to ``[0, 1]``
    of the input with zero rows for padding (for the loss's ignore mask).

    Args:
        anchors: ``(K, 2)`` anchors in input pixels.
        input_size: input side ``S`` in pixels.
        num_classes: classes ``C``; boxes of other class ids are dropped and counted.
        strides: the family's output strides (checked against the anchors' scales).
    """

    #: Training options this assigner reads (none).
    OPTIONS: tuple[str, ...] = ()

    def __init__(self, anchors: np.ndarray, input_size: int, num_classes: int, *,
                 strides: Optional[Sequence[int]] = None):
        self.encoder = Yolov3Encoder(anchors, input_size, num_classes=num_classes)
        self.input_size = int(input_size)
        self.num_classes = int(num_classes)
        if strides is not None and len(anchors) != 3 * len(strides):
            raise ValueError(f"{len(strides)} output strides need {3 * len(strides)} "
                             f"anchors, got {len(anchors)}")

    @property
    def stats(self):
        """What happened to the boxes so far (:class:`detkit.encode.EncodeStats`)."""
        return self.encoder.stats

    def __call__(self, boxes: np.ndarray, classes: np.ndarray) -> dict:
        """``boxes`` ``(B, M, 4)`` xyxy input pixels, ``classes`` ``(B, M)`` int (-1 pad)."""
        boxes = np.asarray(boxes, dtype=np.float32)
        classes = np.asarray(classes)
        targets = self.encoder(boxes, classes)
        return {"targets": tuple(targets),
                "boxes": normalized_boxes(boxes, classes, self.input_size, self.num_classes)}
