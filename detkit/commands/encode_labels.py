"""``detkit encode-labels DATA``: YOLOv3 targets of every image of a dataset -> ``labels.npz``.

Every image's boxes are letterboxed to the input (:func:`detkit.data.letterbox.
letterbox_records`, no augmentation), assigned to scales, cells and anchors
(:func:`detkit.encode.assign_yolov3`) and written sparse (:mod:`detkit.labels`), with the
sidecar ``OUT.manifest.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detkit.anchors import anchor_masks, load_anchors, strides
from detkit.artifacts import write_manifest
from detkit.commands.groups import AnchorOptions, DatasetOptions, InputOptions, ModelOptions
from detkit.data.letterbox import LetterboxCounts, letterbox_records
from detkit.encode import EncodeStats, assign_yolov3
from detkit.errors import UsageError
from detkit.families import get_family
from detkit.labels import SCHEME_YOLOV3, save_labels
from detkit.options import as_config, flag_of, option
from detkit.progress import SILENT, Progress

COMMAND = "encode-labels"
#: Images encoded per vectorized call (bounds the padded ``(B, M, 4)`` arrays).
CHUNK_IMAGES = 512
#: The sparse target arrays of an assignment (one row per filled slot), as stored.
ROW_KEYS = ("image", "scale", "row", "col", "anchor", "xywh", "cls")

#: ``--model`` as :class:`ModelOptions` declares it (encode-labels builds no network, so
#: it takes the family without ``--width``).
_MODEL = next(field for field in dataclasses.fields(ModelOptions) if field.name == "model")


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


@dataclasses.dataclass(kw_only=True)
class Options(DatasetOptions, AnchorOptions, InputOptions):
    """The options of ``encode-labels``."""

    out: Path = option(Path("labels.npz"), "Labels file to write.")
    model: str = dataclasses.field(default=_MODEL.default, metadata=_MODEL.metadata)
    multi_anchor_iou: Optional[float] = option(
        None, "Also assign every anchor whose (w, h) IoU with the box exceeds this (0..1).")


def run(opts: Options, progress: Progress = SILENT) -> EncodeLabelsResult:
    """Encode the letterboxed boxes of every image of ``opts.data``; write ``labels.npz``.

    Raises:
        UsageError: an input size that is not a multiple of the coarsest stride, an IoU
            threshold outside (0, 1), an anchor count that is not 3 per scale.
        DataError: unreadable dataset or anchors, unknown image sizes, bad class ids.
    """
    from detkit.data.dataset import load_dataset

    iou = opts.multi_anchor_iou
    if iou is not None and not 0.0 < iou < 1.0:
        raise UsageError(f"{flag_of(opts, 'multi_anchor_iou')} must be between 0 and 1, "
                         f"got {iou}")
    # The anchors file sets the scales (6 anchors: two, 9: three); --model only picks
    # the default anchors, so the demo's 6 k-means anchors encode without --model.
    anchors_path = (opts.anchors if opts.anchors is not None
                    else get_family(opts.model).default_anchors_path())
    anchors = load_anchors(anchors_path)
    masks, scale_strides = anchor_masks(len(anchors)), strides(len(anchors))
    input_size = opts.input_size
    if input_size % max(scale_strides):
        raise UsageError(f"{flag_of(opts, 'input_size')} must be a positive multiple of "
                         f"{max(scale_strides)}, got {input_size}")
    dataset = load_dataset(opts.data, format=opts.format, classes=opts.classes)
    records, num_classes = dataset.records, len(dataset.class_names)

    counts = LetterboxCounts()
    stats = EncodeStats(per_anchor=np.zeros(len(anchors), np.int64))
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ROW_KEYS}
    progress.start("encoding labels", len(records))
    for start in range(0, len(records), CHUNK_IMAGES):
        chunk = records[start:start + CHUNK_IMAGES]
        boxes, labels, chunk_counts = letterbox_records(chunk, input_size, num_classes,
                                                        source=dataset.path)
        assignment = assign_yolov3(boxes, labels, anchors, input_size, iou, num_classes)
        counts, stats = counts + chunk_counts, stats + assignment.stats
        parts["image"].append(assignment.image + start)
        for key in ROW_KEYS[1:]:
            parts[key].append(getattr(assignment, key))
        progress.update(start + len(chunk))
    progress.finish()
    rows = {key: np.concatenate(value) if value else np.zeros(0) for key, value in parts.items()}
    num_rows = int(len(rows["image"]))

    out = save_labels(opts.out, rows, anchors=anchors, input_size=input_size,
                      class_names=dataset.class_names,
                      image_paths=[str(record.image_path) for record in records],
                      stats=stats, scheme=SCHEME_YOLOV3)
    inputs = [opts.data, anchors_path] + ([opts.classes] if opts.classes is not None else [])
    manifest = write_manifest(
        out, command=COMMAND, config={**as_config(opts), "anchors": str(anchors_path)},
        inputs=inputs,
        extra={"settings": {"anchors": anchors, "input_size": input_size,
                            "class_names": dataset.class_names, "scheme": SCHEME_YOLOV3},
               "stats": stats.to_dict(), "num_images": len(records), "num_rows": num_rows,
               "letterbox": dataclasses.asdict(counts)})
    return EncodeLabelsResult(
        out=out, manifest=manifest, num_images=len(records), num_boxes=dataset.num_boxes,
        num_rows=num_rows, stats=stats, letterbox=counts, anchors=anchors,
        masks=masks, strides=scale_strides, grid_sizes=[input_size // s for s in scale_strides],
        class_names=list(dataset.class_names), input_size=input_size,
        fixes_summary=dataset.fixes.summary())
