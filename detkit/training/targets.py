"""The YOLOv3 on-the-fly target encoder, under its training-stage name.

The label assigners of every family live in :mod:`detkit.assign` and the registry names
them (``Family.make_assigner``); the training phases ask the family. This name stays for
code that builds YOLOv3 batches directly.
"""

from __future__ import annotations

from detkit.assign.yolov3 import Yolov3Assigner


class YoloTrainingTargets(Yolov3Assigner):
    """``(boxes, classes) -> y_true`` of :class:`detkit.losses.YoloV3Loss`; see
    :class:`detkit.assign.yolov3.Yolov3Assigner`."""
