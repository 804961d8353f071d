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

from detkit.anchors import anchor_masks, load_anchors
from detkit.artifacts import manifest_path, write_manifest
from detkit.commands.groups import (INPUT_SIZE_OF_ANCHORS_HELP, OWN_ANCHORS_HELP,
                                    AnchorOptions, DatasetOptions, InputOptions, ModelOptions,
                                    load_data)
from detkit.data.dataset import Dataset
from detkit.data.letterbox import MIN_BOX_PIXELS, LetterboxCounts, letterbox_records
from detkit.data.records import annotations_sha256
from detkit.encode import EncodeStats, assign_yolov3
from detkit.errors import ArtifactMismatchError, DataError, UsageError
from detkit.families import FAMILIES, MODEL_NAMES, Family, get_family
from detkit.labels import SCHEME_BOXES, SCHEME_YOLOV3, save_box_labels, save_labels
from detkit.options import as_config, flag_of, option, retold
from detkit.progress import SILENT, Progress
from detkit.tables import TextTable, plural

COMMAND = "encode-labels"
#: Images encoded per vectorized call (bounds the padded ``(B, M, 4)`` arrays).
CHUNK_IMAGES = 512
#: The sparse target arrays of an assignment (one row per filled slot), as stored.
ROW_KEYS = ("image", "scale", "row", "col", "anchor", "xywh", "cls")

#: The family without ``--model`` and ``--anchors`` (``ModelOptions``' default model).
DEFAULT_MODEL = next(field.default for field in dataclasses.fields(ModelOptions)
                     if field.name == "model")


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
    scheme: str = SCHEME_YOLOV3
    model: Optional[str] = None

    def anchor_table(self) -> Optional[TextTable]:
        """Boxes per anchor by scale (the yolov3 scheme; ``None`` for the boxes scheme)."""
        if self.scheme != SCHEME_YOLOV3:
            return None
        table = TextTable(f"encode-labels: {self.num_images} images, input "
                          f"{self.input_size}", ("scale", "stride", "grid", "anchor",
                                                 "size (px)", "boxes"))
        for level, mask in enumerate(self.masks):
            grid = self.grid_sizes[level]
            for position, index in enumerate(mask):
                w, h = self.anchors[index]
                first = (str(level), str(self.strides[level]), f"{grid}x{grid}")
                table.rows.append((*(first if position == 0 else ("", "", "")),
                                   str(index), f"{w:g}x{h:g}",
                                   str(int(self.stats.per_anchor[index]))))
        return table

    def summary_lines(self) -> list[str]:
        """What was encoded, clipped and dropped, and what was written."""
        stats, letterbox = self.stats, self.letterbox
        if self.scheme != SCHEME_YOLOV3:
            counts = ", ".join(f"{name} {value}" for name, value in stats.to_dict().items()
                               if not isinstance(value, list))
            lines = [f"encode-labels: {self.num_images} images, input {self.input_size}: "
                     f"stored {self.num_rows} letterboxed boxes; --model {self.model} "
                     "assigns them per batch when training",
                     f"its assigner on these boxes: {counts}"]
        else:
            per_scale = stats.per_scale(self.masks)
            lines = [f"boxes: {stats.boxes} encoded into {self.num_rows} target slots "
                     f"({stats.assigned} boxes assigned)",
                     "per scale: " + ", ".join(f"stride {s}: {n}"
                                               for s, n in zip(self.strides, per_scale)),
                     f"collisions: {stats.collisions} (a larger-IoU box took the slot)"]
        if letterbox.clipped:
            lines.append(f"clipped to the input after letterbox: {letterbox.clipped}")
        dropped = dict(stats.dropped) if self.scheme == SCHEME_YOLOV3 else {}
        if letterbox.too_small:
            dropped[f"smaller than {MIN_BOX_PIXELS:g} px after letterbox"] = \
                letterbox.too_small
        if dropped:
            lines.append("dropped: " + ", ".join(f"{count} {why}"
                                                 for why, count in dropped.items()))
        elif self.scheme == SCHEME_YOLOV3:
            lines.append("dropped: none")
        lines.append(f"wrote {self.out} (+ {self.manifest.name})")
        return lines


@dataclasses.dataclass(kw_only=True)
class Options(DatasetOptions, AnchorOptions, InputOptions):
    """The options of ``encode-labels``."""

    out: Path = option(Path("labels.npz"), "Labels file to write.", role="output")
    input_size: int = retold(InputOptions, "input_size", INPUT_SIZE_OF_ANCHORS_HELP)
    anchors: Optional[Path] = retold(AnchorOptions, "anchors", OWN_ANCHORS_HELP)
    model: Optional[str] = option(
        None, f"Architecture the targets are for: {', '.join(MODEL_NAMES)} (default: the "
              f"one whose anchor count the --anchors file has; {DEFAULT_MODEL} without "
              f"--anchors). Its anchor count is checked against the file.",
        choices=MODEL_NAMES)
    multi_anchor_iou: Optional[float] = option(
        None, "Also assign every anchor whose (w, h) IoU with the box exceeds this (0..1).")


def family_for(opts: Options) -> Family:
    """The family of ``--model``; without it, the first whose anchor count the
    ``--anchors`` file has (the default model without ``--anchors``).

    Raises:
        DataError: an unreadable anchors file.
        ArtifactMismatchError: no family takes that many anchors (naming the file).
    """
    if opts.model is not None:
        return get_family(opts.model)
    if opts.anchors is None:
        return get_family(DEFAULT_MODEL)
    count = len(load_anchors(opts.anchors))
    fitting = [family for family in FAMILIES.values() if family.num_anchors == count]
    if not fitting:
        needs = ", ".join(f"{family.name} needs {family.num_anchors}"
                          for family in FAMILIES.values())
        raise ArtifactMismatchError(f"the anchors file has {count} anchors, which fit no "
                                    f"model ({needs})", path=opts.anchors)
    return fitting[0]


def require_boxes(dataset: Dataset) -> None:
    """Refuse a dataset without a single box: its labels would teach only background, so
    it is almost surely a wrong label folder or format.

    Raises:
        DataError: naming the dataset.
    """
    if dataset.num_boxes:
        return
    fixes = dataset.fixes
    if fixes.dropped:
        where = f", e.g. {fixes.examples[0]}" if fixes.examples else ""
        why = (f": the reader dropped {plural(fixes.dropped, 'box')}, all it had (zero "
               f"area or outside the image{where})")
    else:
        why = (f" ({plural(len(dataset.records), 'image')}, none with a box): a wrong "
               "label folder or --format?")
    raise DataError(f"the dataset has no boxes to encode{why}", path=dataset.path)


def run(opts: Options, progress: Progress = SILENT) -> EncodeLabelsResult:
    """Encode the letterboxed boxes of every image of ``opts.data``; write ``labels.npz``.

    Raises:
        UsageError: an input size that is not a multiple of the coarsest stride, an IoU
            threshold outside (0, 1).
        ArtifactMismatchError: an anchor count other than the model's (naming the file;
            the check of :meth:`detkit.families.Family.resolve_anchors`, as in train).
        DataError: unreadable dataset or anchors, unknown image sizes, bad class ids,
            no box at all (:func:`require_boxes`).
    """
    iou = opts.multi_anchor_iou
    if iou is not None and not 0.0 < iou < 1.0:
        raise UsageError(f"{flag_of(opts, 'multi_anchor_iou')} must be between 0 and 1, "
                         f"got {iou}")
    # One check of the anchor count, the family's (exit 1, the file named); without
    # --model the anchors file picks the family (6 anchors: yolov3-tiny's two scales).
    family = family_for(opts)
    anchors, anchors_path = family.resolve_anchors(opts.anchors)
    if family.label_scheme == SCHEME_BOXES:
        return _encode_boxes(opts, family, anchors, anchors_path, progress)
    masks, scale_strides = anchor_masks(len(anchors)), list(family.strides)
    input_size = opts.input_size
    if input_size % max(scale_strides):
        raise UsageError(f"{flag_of(opts, 'input_size')} must be a positive multiple of "
                         f"{max(scale_strides)}, got {input_size}")
    dataset = load_data(opts)
    require_boxes(dataset)
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

    inputs = [opts.data, anchors_path] + ([opts.classes] if opts.classes is not None else [])
    config = {**as_config(opts), "model": family.name, "anchors": str(anchors_path)}

    def manifest_of(tmp: Path) -> Path:  # before the labels file appears (see save_npz)
        return write_manifest(
            opts.out, command=COMMAND, config=config, inputs=inputs, data=tmp,
            extra={"settings": {"anchors": anchors, "input_size": input_size,
                                "class_names": dataset.class_names, "scheme": SCHEME_YOLOV3,
                                "model": family.name},
                   "stats": stats.to_dict(), "num_images": len(records),
                   "annotations_sha256": annotations_sha256(records, dataset.class_names),
                   "num_rows": num_rows, "letterbox": dataclasses.asdict(counts)})

    out = save_labels(opts.out, rows, anchors=anchors, input_size=input_size,
                      class_names=dataset.class_names,
                      image_paths=[str(record.image_path) for record in records],
                      stats=stats, scheme=SCHEME_YOLOV3, before_commit=manifest_of)
    manifest = manifest_path(out)
    return EncodeLabelsResult(
        out=out, manifest=manifest, num_images=len(records), num_boxes=dataset.num_boxes,
        num_rows=num_rows, stats=stats, letterbox=counts, anchors=anchors,
        masks=masks, strides=scale_strides, grid_sizes=[input_size // s for s in scale_strides],
        class_names=list(dataset.class_names), input_size=input_size,
        fixes_summary=dataset.fixes.summary())


#: Images per assigner call when a boxes-scheme family's statistics are gathered (bounds
#: the anchors x boxes IoU matrices).
STATS_CHUNK_IMAGES = 16


def _encode_boxes(opts: Options, family: Family, anchors: np.ndarray, anchors_path: Path,
                  progress: Progress) -> EncodeLabelsResult:
    """A boxes-scheme family (``Family.label_scheme == "boxes"``): store the letterboxed
    boxes (its assigner makes the targets of each training batch) and report how the
    assigner treats them (its ``stats``)."""
    if opts.multi_anchor_iou is not None:
        raise UsageError(f"{flag_of(opts, 'multi_anchor_iou')} applies to yolov3 targets, "
                         f"not to --model {family.name}")
    input_size = opts.input_size
    if input_size % family.max_stride:
        raise UsageError(f"{flag_of(opts, 'input_size')} must be a positive multiple of "
                         f"{family.max_stride}, got {input_size}")
    dataset = load_data(opts)
    require_boxes(dataset)
    records, num_classes = dataset.records, len(dataset.class_names)
    assigner = family.make_assigner(anchors, input_size, num_classes, seed=0)
    counts = LetterboxCounts()
    parts: dict[str, list[np.ndarray]] = {"image": [], "xyxy": [], "cls": []}
    progress.start("encoding labels", len(records))
    for start in range(0, len(records), CHUNK_IMAGES):
        chunk = records[start:start + CHUNK_IMAGES]
        boxes, labels, chunk_counts = letterbox_records(chunk, input_size, num_classes,
                                                        source=dataset.path)
        counts = counts + chunk_counts
        for first in range(0, len(chunk), STATS_CHUNK_IMAGES):
            assigner(boxes[first:first + STATS_CHUNK_IMAGES],
                     labels[first:first + STATS_CHUNK_IMAGES])
        image, row = np.nonzero(labels >= 0)
        parts["image"].append(image + start)
        parts["xyxy"].append(boxes[image, row])
        parts["cls"].append(labels[image, row])
        progress.update(start + len(chunk))
    progress.finish()
    image = np.concatenate(parts["image"]) if records else np.zeros(0, np.int64)
    xyxy = np.concatenate(parts["xyxy"]) if records else np.zeros((0, 4), np.float32)
    cls = np.concatenate(parts["cls"]) if records else np.zeros(0, np.int32)
    stats = assigner.stats
    recorded = {**stats.to_dict(), "num_boxes": int(len(image)),
                "letterbox": dataclasses.asdict(counts)}
    inputs = [opts.data, anchors_path] + ([opts.classes] if opts.classes is not None else [])
    config = {**as_config(opts), "model": family.name, "anchors": str(anchors_path)}

    def manifest_of(tmp: Path) -> Path:  # before the labels file appears (see save_npz)
        return write_manifest(
            opts.out, command=COMMAND, config=config, inputs=inputs, data=tmp,
            extra={"settings": {"input_size": input_size,
                                "class_names": dataset.class_names, "scheme": SCHEME_BOXES,
                                "model": family.name},
                   "stats": recorded, "num_images": len(records),
                   "annotations_sha256": annotations_sha256(records, dataset.class_names),
                   "num_rows": int(len(image)), "letterbox": dataclasses.asdict(counts)})

    out = save_box_labels(opts.out, image, xyxy, cls, input_size=input_size,
                          class_names=dataset.class_names,
                          image_paths=[str(record.image_path) for record in records],
                          stats=recorded, before_commit=manifest_of)
    per_level = len(anchors) // len(family.strides)
    levels = len(family.strides)
    masks = [list(range((levels - 1 - i) * per_level, (levels - i) * per_level))
             for i in range(levels)]
    return EncodeLabelsResult(
        out=out, manifest=manifest_path(out), num_images=len(records),
        num_boxes=dataset.num_boxes, num_rows=int(len(image)), stats=stats,
        letterbox=counts, anchors=anchors, masks=masks, strides=list(family.strides),
        grid_sizes=[input_size // s for s in family.strides],
        class_names=list(dataset.class_names), input_size=input_size,
        fixes_summary=dataset.fixes.summary(), scheme=SCHEME_BOXES, model=family.name)
