"""The one record type every annotation reader produces."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Optional, Sequence

import numpy as np

#: Boxes kept per image in padded batches (``--max-boxes``): the most by area win.
DEFAULT_MAX_BOXES = 100


@dataclasses.dataclass
class ImageRecord:
    """One image and its boxes.

    Attributes:
        image_path: path of the image file (absolute, or relative to the working dir).
        width, height: image size in pixels (``None`` until known).
        boxes: ``(N, 4)`` float32 xyxy in pixels.
        classes: ``(N,)`` int32 class ids (indices into the dataset's class names).
        difficult: ``(N,)`` bool, VOC ``difficult`` flags (all False elsewhere).
        iscrowd: ``(N,)`` bool, COCO crowd regions (all False elsewhere).
        image_id: a stable integer id (COCO ``id``, else the record's index).
        source_line: where the record came from (line number of a lines file), if any.
    """

    image_path: str
    width: Optional[int]
    height: Optional[int]
    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray = None
    iscrowd: np.ndarray = None
    image_id: int = 0
    source_line: Optional[int] = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.classes = np.asarray(self.classes, dtype=np.int32).reshape(n)
        self.difficult = (np.zeros(n, bool) if self.difficult is None
                          else np.asarray(self.difficult, dtype=bool).reshape(n))
        self.iscrowd = (np.zeros(n, bool) if self.iscrowd is None
                        else np.asarray(self.iscrowd, dtype=bool).reshape(n))

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)


def drop_crowds(records: Sequence[ImageRecord]) -> tuple[list[ImageRecord], int]:
    """``records`` without their COCO crowd regions, and how many were dropped.

    A crowd region (``iscrowd``) marks many objects under one box: COCO evaluation
    ignores detections on it, so training on it as one object (a box target) would teach
    what the evaluation never asks; detectron2 and torchvision drop them too. The images
    stay (an image of crowds only trains as background).
    """
    kept, dropped = [], 0
    for record in records:
        if record.iscrowd.any():
            keep = ~record.iscrowd
            dropped += int(record.iscrowd.sum())
            record = dataclasses.replace(record, boxes=record.boxes[keep],
                                         classes=record.classes[keep],
                                         difficult=record.difficult[keep],
                                         iscrowd=record.iscrowd[keep])
        kept.append(record)
    return kept, dropped


def annotations_sha256(records: Sequence[ImageRecord], class_names: Sequence[str]) -> str:
    """Hex sha256 of what ``records`` annotate, in order: box counts, boxes (float32 xyxy)
    and their class names; any edit of a box or its class changes it (the image paths and
    the class order are compared on their own, with their own messages)."""
    digest = hashlib.sha256()
    digest.update(np.array([r.num_boxes for r in records], np.int64).tobytes())
    if records:
        digest.update(np.concatenate([r.boxes for r in records]).astype(np.float32).tobytes())
        classes = np.concatenate([r.classes for r in records])
        digest.update("\n".join(np.asarray(class_names, str)[classes]).encode("utf-8"))
    return digest.hexdigest()


def _path_parts(path: str) -> list[str]:
    """The names of ``path`` after ``normpath``, without a root or leading ``..``/``.``."""
    parts = os.path.normpath(path).replace("\\", "/").split("/")
    while parts and parts[0] in ("", ".", ".."):
        parts = parts[1:]
    return parts


def same_image_paths(recorded: Sequence[str], current: Sequence[str]) -> int | None:
    """``None`` when two image lists name the same files in the same order, spelled as
    typed from another folder (``data/a.jpg``, ``../data/a.jpg``, ``/w/data/a.jpg``: one
    path's names end the other's); else the index of the first pair that differs (the
    shorter length when only the lengths differ)."""
    for index, (a, b) in enumerate(zip(recorded, current)):
        if a == b:
            continue
        pa, pb = _path_parts(a), _path_parts(b)
        count = min(len(pa), len(pb))
        if not count or pa[len(pa) - count:] != pb[len(pb) - count:]:
            return index
    return None if len(recorded) == len(current) else min(len(recorded), len(current))
