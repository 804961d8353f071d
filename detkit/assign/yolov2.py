"""The YOLOv2 assigner: detector mask and YAD2K targets on one grid."""

from __future__ import annotations

import threading
from typing import Optional, Sequence

import numpy as np

from detkit.assign.yolov3 import normalized_boxes
from detkit.encode import YOLOV2_STRIDE, EncodeStats, encode_yolov2


class Yolov2Assigner:
    """``(boxes, classes) -> y_true`` of :class:`detkit.losses.YoloV2Loss`.

    Each box goes to the cell of its center and to its best anchor by centered IoU
    (:func:`detkit.encode.encode_yolov2`). Returns a dict:

    * ``"mask"``: ``(B, G, G, K, 1)`` float32, 1 where a box is assigned;
    * ``"targets"``: ``(B, G, G, K, 5)`` float32 ``(x - j, y - i, log(w / a_w),
      log(h / a_h), class)`` in grid units (the log sizes are negative for boxes smaller
      than their anchor);
    * ``"boxes"``: ``(B, M, 4)`` float32 xyxy ground-truth boxes normalized to the input,
      zero rows for padding (for the loss's IoU-based ignore).

    Args:
        anchors: ``(K, 2)`` anchors in input pixels (divided by the stride here).
        input_size: input side ``S`` in pixels, a multiple of the stride.
        num_classes: classes ``C``; other class ids are dropped and counted.
        strides: the family's one output stride (default 32).
    """

    #: Training options this assigner reads (none).
    OPTIONS: tuple[str, ...] = ()

    def __init__(self, anchors: np.ndarray, input_size: int, num_classes: int, *,
                 strides: Optional[Sequence[int]] = None):
        strides = tuple(strides) if strides is not None else (YOLOV2_STRIDE,)
        if len(strides) != 1:
            raise ValueError(f"YOLOv2 has one output stride, got {strides}")
        self.stride = int(strides[0])
        self.anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
        self.grid_anchors = self.anchors / np.float32(self.stride)
        self.input_size = int(input_size)
        self.num_classes = int(num_classes)
        self.stats = EncodeStats(per_anchor=np.zeros(len(self.anchors), np.int64))
        self._lock = threading.Lock()

    def __call__(self, boxes: np.ndarray, classes: np.ndarray) -> dict:
        boxes = np.asarray(boxes, dtype=np.float32)
        classes = np.asarray(classes)
        encoded = encode_yolov2(boxes, classes, self.grid_anchors, self.input_size,
                                stride=self.stride, num_classes=self.num_classes)
        with self._lock:
            self.stats = self.stats + encoded.stats
        return {"mask": encoded.mask, "targets": encoded.targets,
                "boxes": normalized_boxes(boxes, classes, self.input_size, self.num_classes)}
