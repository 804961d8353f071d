"""``encode-labels``: YOLOv3 targets of every image of a dataset -> ``labels.npz``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

#: Images encoded per vectorized call (bounds the padded ``(B, M, 4)`` arrays).
CHUNK_IMAGES = 512
#: Letterboxed boxes narrower or shorter than this (input pixels) are dropped.
MIN_BOX_PIXELS = 1.0


@dataclasses.dataclass
class LetterboxCounts:
    """Boxes changed by the letterbox step (before encoding)."""

    clipped: int = 0
    too_small: int = 0


@dataclasses.dataclass
class EncodeLabelsResult:
    """What ``encode-labels`` wrote and how the boxes were assigned.

    Attributes:
        out: the labels file; manifest: its sidecar manifest.
        num_images, num_boxes: dataset size (boxes after the reader's repairs).
        num_rows: target rows written.
        stats: the encoder's counts (:class:`detkit.encode.EncodeStats`).
        letterbox: boxes clipped / dropped as too small after letterboxing.
        anchors: ``(K, 2)``; masks: anchor indices per scale; strides, grid_sizes: per scale.
        class_names: the class names; input_size: input side.
        fixes_summary: the dataset reader's repairs (one line) or None.
    """

    out: Path
    manifest: Path
    num_images: int
    num_boxes: int
    num_rows: int
    stats: Any
    letterbox: LetterboxCounts
    anchors: np.ndarray
    masks: list[list[int]]
    strides: list[int]
    grid_sizes: list[int]
    class_names: list[str]
    input_size: int
    fixes_summary: Optional[str]


def _letterboxed(records: Sequence, input_size: int, num_classes: int,
                 counts: LetterboxCounts, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox the records' boxes into padded ``(B, M, 4)`` boxes and ``(B, M)`` classes."""
    from detkit.data.letterbox import Letterbox
    from detkit.errors import DataError

    per_image = []
    for record in records:
        if record.width is None or record.height is None:
            raise DataError(f"image size unknown for {record.image_path}",
                            path=source, line=record.source_line)
        if len(record.classes) and (record.classes.min() < 0 or
                                    record.classes.max() >= num_classes):
            bad = int(record.classes[(record.classes < 0) |
                                     (record.classes >= num_classes)][0])
            raise DataError(f"class id {bad} out of range for {num_classes} classes "
                            f"(image {record.image_path})", path=source,
                            line=record.source_line)
        boxes = Letterbox(record.width, record.height, input_size).to_input(record.boxes)
        clipped = np.clip(boxes, 0, input_size)
        changed = np.any(clipped != boxes, axis=1)
        big = np.all(clipped[:, 2:] - clipped[:, :2] >= MIN_BOX_PIXELS, axis=1)
        counts.clipped += int((changed & big).sum())
        counts.too_small += int((~big).sum())
        per_image.append((clipped[big], record.classes[big]))
    width = max([len(c) for _, c in per_image], default=0)
    boxes = np.zeros((len(records), width, 4), np.float32)
    classes = np.full((len(records), width), -1, np.int32)
    for i, (b, c) in enumerate(per_image):
        boxes[i, :len(c)] = b
        classes[i, :len(c)] = c
    return boxes, classes


def encode_labels(data: str | os.PathLike, *, out: str | os.PathLike,
                  anchors: str | os.PathLike | None = None,
                  classes: str | os.PathLike | Sequence[str] | None = None,
                  input_size: int = 416, model: str = "yolov3",
                  format: Optional[str] = None,
                  multi_anchor_iou: Optional[float] = None,
                  config: Optional[Mapping[str, Any]] = None) -> EncodeLabelsResult:
    """Encode the letterboxed boxes of every image of ``data`` and write ``labels.npz``.

    Args:
        data: the dataset (any format :func:`detkit.data.dataset.load_dataset` reads).
        out: the labels file to write (plus ``out.manifest.json``).
        anchors: anchors file (default: the COCO anchors of ``model``).
        classes: class names file or list (default: from the dataset).
        input_size: network input side, a multiple of 32.
        model: picks the default anchors (``yolov3``: 9, ``yolov3-tiny``: 6).
        format: dataset format (default: detected).
        multi_anchor_iou: also assign every anchor with IoU above this (0 < v < 1).
        config: the resolved command configuration, for the manifest.

    Raises:
        UsageError: bad input size, anchor count or IoU threshold.
        DataError: unreadable dataset or anchors.
    """
    from detkit.anchors import anchor_masks, default_anchors_path, load_anchors, strides
    from detkit.artifacts import write_manifest
    from detkit.data.dataset import load_dataset
    from detkit.encode import EncodeStats, assign_yolov3
    from detkit.errors import UsageError
    from detkit.labels import SCHEME_YOLOV3, save_labels

    if multi_anchor_iou is not None and not 0.0 < multi_anchor_iou < 1.0:
        raise UsageError(f"--multi-anchor-iou must be between 0 and 1, got {multi_anchor_iou}")
    anchors_path = Path(anchors) if anchors is not None else default_anchors_path(model)
    anchor_sizes = load_anchors(anchors_path)
    masks = anchor_masks(len(anchor_sizes))
    scale_strides = strides(len(anchor_sizes))
    if input_size <= 0 or input_size % max(scale_strides):
        raise UsageError(f"--input-size must be a positive multiple of {max(scale_strides)}, "
                         f"got {input_size}")
    dataset = load_dataset(data, format=format, classes=classes)
    records = dataset.records
    num_classes = len(dataset.class_names)

    counts = LetterboxCounts()
    stats = EncodeStats(per_anchor=np.zeros(len(anchor_sizes), np.int64))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("image", "scale", "row", "col", "anchor",
                                           "xywh", "cls")}
    for start in range(0, len(records), CHUNK_IMAGES):
        chunk = records[start:start + CHUNK_IMAGES]
        boxes, labels = _letterboxed(chunk, input_size, num_classes, counts,
                                      dataset.path)
        assignment = assign_yolov3(boxes, labels, anchor_sizes, input_size,
                                   multi_anchor_iou, num_classes)
        stats = stats + assignment.stats
        parts["image"].append(assignment.image + start)
        for key in ("scale", "row", "col", "anchor", "xywh", "cls"):
            parts[key].append(getattr(assignment, key))
    rows = {key: np.concatenate(value) if value else np.zeros(0) for key, value in parts.items()}

    image_paths = [str(record.image_path) for record in records]
    out = save_labels(out, rows, anchors=anchor_sizes, input_size=input_size,
                      class_names=dataset.class_names, image_paths=image_paths, stats=stats,
                      scheme=SCHEME_YOLOV3)
    inputs = [Path(data), anchors_path]
    if isinstance(classes, (str, os.PathLike)):
        inputs.append(Path(classes))
    resolved = dict(config or {})
    resolved.update(data=str(data), anchors=str(anchors_path), input_size=input_size,
                    multi_anchor_iou=multi_anchor_iou, model=model)
    manifest = write_manifest(
        out, command="encode-labels", config=resolved, inputs=inputs,
        extra={"settings": {"anchors": anchor_sizes, "input_size": input_size,
                            "class_names": dataset.class_names, "scheme": SCHEME_YOLOV3},
               "stats": stats.to_dict(), "num_images": len(records),
               "num_rows": int(len(rows["image"])),
               "letterbox": dataclasses.asdict(counts)})
    return EncodeLabelsResult(
        out=out, manifest=manifest, num_images=len(records), num_boxes=dataset.num_boxes,
        num_rows=int(len(rows["image"])), stats=stats, letterbox=counts,
        anchors=anchor_sizes, masks=masks, strides=scale_strides,
        grid_sizes=[input_size // s for s in scale_strides],
        class_names=list(dataset.class_names), input_size=input_size,
        fixes_summary=dataset.fixes.summary())
