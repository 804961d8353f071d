"""One entry point for every annotation format: :func:`load_dataset` -> :class:`Dataset`.

Formats (``--format``): ``yolo3`` (keras-yolo3 lines, a ``.txt`` file), ``coco`` (a
``.json`` file), ``csv`` (a ``.csv`` box table), ``voc`` (a folder of xml files, or with
``Annotations/``, or its split list ``ImageSets/Main/NAME.txt``), ``yolo`` (a folder with
``images/`` and ``labels/``, or its split ``images/NAME``, or an Ultralytics image list
``NAME.txt`` of image paths under ``images/``); ``auto`` (or ``None``) detects them in
that way. Class names come from ``classes`` (a file, one name a line, or a list of
names), else ``classes.txt`` beside the dataset (in it, for a folder; in the dataset's
root, for a split), else the dataset itself (COCO categories, VOC and CSV names seen,
YOLO ``classes.txt`` / ``data.yaml``, or ``"0", ...``). An Ultralytics dataset file
(``data.yaml`` naming its splits) stands for one of its splits, in any of these formats,
read with its ``names``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from detkit.data.fixes import MAX_EXAMPLES, FixReport
from detkit.data.readers import READERS, read_class_names
from detkit.data.readers.common import check_given_names
from detkit.data.readers.dataset_file import read_dataset_file
from detkit.data.readers.voc import ANNOTATIONS_DIR, is_split_list, split_root
from detkit.data.readers.yolo import (export_hint, folder_class_names, is_image_list,
                                      is_yolo_folder, is_yolo_split, yolo_root)
from detkit.data.records import ImageRecord, drop_crowds
from detkit.errors import DataError, UsageError

__all__ = ["Dataset", "FORMATS", "detect_format", "load_dataset", "read_class_names"]

#: Format names, and the other spellings accepted for them.
FORMATS = tuple(READERS)
#: Formats whose labels are class indices (names come from beside, or from --classes).
INDEXED_FORMATS = ("yolo3", "yolo")
FORMAT_ALIASES = {"keras-yolo3": "yolo3", "lines": "yolo3", "txt": "yolo3",
                  "json": "coco", "pascal-voc": "voc", "xml": "voc", "darknet": "yolo",
                  "ultralytics": "yolo"}
AUTO = "auto"
#: Images larger than this (pixels) whose every box fits in one pixel have normalized boxes.
NORMALIZED_HINT_SIDE = 4
#: The class names file looked for beside a dataset.
CLASSES_FILE = "classes.txt"


@dataclasses.dataclass
class Dataset:
    """A loaded dataset.

    Attributes:
        path: the dataset path as given.
        format: the format it was read as (one of :data:`FORMATS`; for a dataset file's
            list of datasets in several formats, theirs joined with ``+``).
        records: one :class:`ImageRecord` per image.
        class_names: the names class ids index.
        fixes: the boxes repaired while reading (print ``fixes.summary()`` once).
        category_ids: COCO category id of each class (COCO datasets only, else ``None``).
        sources: the other files read (annotation, label and class names files).
    """

    path: Path
    format: str
    records: list[ImageRecord]
    class_names: list[str]
    fixes: FixReport = dataclasses.field(default_factory=FixReport)
    category_ids: list[int] | None = None
    sources: list[str] = dataclasses.field(default_factory=list)

    def for_training(self) -> tuple["Dataset", Optional[str]]:
        """The dataset as training sees it: without COCO crowd regions
        (:func:`~detkit.data.records.drop_crowds`), and a note saying how many were left
        out (``None`` when none)."""
        records, dropped = drop_crowds(self.records)
        if not dropped:
            return self, None
        noun = "region" if dropped == 1 else "regions"
        return (dataclasses.replace(self, records=records),
                f"{dropped} crowd {noun} (COCO iscrowd) left out of training: COCO "
                f"evaluation ignores them")

    def files(self) -> list[str]:
        """Every file the dataset is made of, as read: its images, annotation files and
        class names files (not the dataset path itself)."""
        return [*(record.image_path for record in self.records), *self.sources]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_boxes(self) -> int:
        """Boxes in all images."""
        return sum(record.num_boxes for record in self.records)

    def class_counts(self) -> np.ndarray:
        """``(C,)`` int64 number of boxes of each class."""
        counts = np.zeros(self.num_classes, np.int64)
        for record in self.records:
            np.add.at(counts, record.classes, 1)
        return counts

    def all_boxes(self) -> np.ndarray:
        """``(N, 4)`` float32 xyxy pixel boxes of all images concatenated."""
        boxes = [record.boxes for record in self.records]
        return np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)


def normalize_format(name: str | None) -> str:
    """``None``/``"auto"``/an alias -> a format name or ``"auto"``; else UsageError."""
    if name is None:
        return AUTO
    key = str(name).strip().lower()
    key = FORMAT_ALIASES.get(key, key)
    if key != AUTO and key not in READERS:
        raise UsageError(f"unknown dataset format {name!r}; expected one of: "
                         f"{', '.join((AUTO, *FORMATS))}")
    return key


def detect_format(path: str | os.PathLike) -> str:
    """The format of dataset ``path`` from its shape on disk.

    Raises:
        DataError: the path does not exist.
        UsageError: the format cannot be told (use ``--format``), or the folder is the
            root of a Roboflow/Ultralytics export (saying which ``data.yaml`` to give).
    """
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if is_split_list(path):
            return "voc"
        if is_image_list(path):
            return "yolo"
        if suffix == ".txt":
            return "yolo3"
        if suffix == ".json":
            return "coco"
        if suffix == ".csv":
            return "csv"
        if suffix == ".xml":
            return "voc"
    elif path.is_dir():
        if is_yolo_folder(path) or is_yolo_split(path):
            return "yolo"
        if (path / ANNOTATIONS_DIR).is_dir() or any(path.glob("*.xml")):
            return "voc"
        hint = export_hint(path)
        if hint:
            raise UsageError(f"{path} {hint}")
    else:
        raise DataError("dataset not found", path=path)
    raise UsageError(f"cannot tell the dataset format of {path}: expected a .txt lines "
                     "file, a COCO .json, a .csv box table, a VOC folder of .xml files (or "
                     "one .xml, or its ImageSets/Main/ split list) or a YOLO folder with "
                     "images/ and labels/ (or its images/ split); set --format")


def _beside(path: Path) -> Path | None:
    """The ``classes.txt`` of dataset ``path`` (of a split, its root's), if there is one
    and it is not ``path`` itself."""
    if is_split_list(path):   # a split: the dataset root's, as for the whole dataset
        beside = split_root(path) / CLASSES_FILE
    elif is_yolo_split(path):
        beside = yolo_root(path) / CLASSES_FILE
    else:
        beside = (path if path.is_dir() else path.parent) / CLASSES_FILE
    return beside if beside.is_file() and beside != path else None


def own_class_names(path: Path, fmt: str, beside: Path | None
                    ) -> tuple[list[str], Path] | None:
    """``(names, file)`` a dataset of class indices gives them without ``--classes``, in
    the readers' order: ``classes.txt`` beside, else a YOLO folder's (``labels/classes.txt``,
    else the ``names`` of its ``data.yaml``; a class count ``nc`` alone names nothing)."""
    if beside is not None:
        return read_class_names(beside), beside
    return folder_class_names(yolo_root(path), placeholders=False) if fmt == "yolo" else None


def resolve_class_names(path: Path,
                        classes: str | os.PathLike | Sequence[str] | None) -> list[str] | None:
    """The class names given (file or list), else ``classes.txt`` beside, else ``None``."""
    if classes is None:
        beside = _beside(path)
        return read_class_names(beside) if beside is not None else None
    if isinstance(classes, (str, os.PathLike)):
        return read_class_names(classes)
    names = [str(name) for name in classes]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"class names must be non-empty and unique, got {names}")
    return names


def names_split(path: str | os.PathLike, split: str) -> bool:
    """Whether ``path`` is an Ultralytics dataset file that names ``split``."""
    described = read_dataset_file(path)
    return described is not None and described.has(split)


def load_dataset(path: str | os.PathLike, format: str | None = None,
                 classes: str | os.PathLike | Sequence[str] | None = None, *,
                 image_dir: str | os.PathLike | None = None,
                 check_images: bool = False, split: str = "train",
                 check_units: bool = True) -> Dataset:
    """Read a dataset in any supported format.

    Args:
        path: a lines file, COCO json, VOC folder or YOLO folder; or an Ultralytics
            dataset file (``data.yaml``), which stands for its ``split``, read with its
            ``names`` unless ``classes`` are given.
        format: one of :data:`FORMATS`, ``"auto"`` or ``None`` (detect).
        classes: a class names file or a list of names (default: see module doc).
        image_dir: COCO only: the folder ``file_name`` is relative to.
        check_images: also check that every image file exists (readers otherwise open
            images only when they need their size).
        split: ``train`` (what a dataset file stands for when training or fitting
            anchors) or ``val`` (for ground truth and validation).
        check_units: refuse boxes that look normalized in a format of pixels
            (``doctor`` reports them instead).

    Returns:
        The :class:`Dataset`; its ``fixes`` counts the boxes dropped or clipped.

    Raises:
        DataError: unreadable or invalid data, naming the file and line.
        UsageError: unknown format name, or a format that cannot be detected.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("dataset not found", path=path)
    described = read_dataset_file(path)
    if described is None:
        return _load(path, format, classes, image_dir, check_images, check_units)
    if classes is not None and described.named:
        check_given_names(resolve_class_names(path, classes), described.names, path)
    names = classes if classes is not None else described.names
    split_paths = described.split(split)
    # names the dataset file gives (or given and checked against them) are its parts' own
    given = classes is not None and not described.named
    parts = [_load(part, format, names, image_dir, check_images, check_units,
                   described.keypoints, given=given) for part in split_paths]
    joined = parts[0] if len(parts) == 1 else _joined(path, parts, split)
    return dataclasses.replace(joined, sources=[*map(str, split_paths), *joined.sources])


def _joined(path: Path, parts: list[Dataset], split: str) -> Dataset:
    """The datasets of a list split as one (at ``path``, the dataset file): records in
    order with image ids renumbered ``0..N-1``, the class names of the one naming most
    (the others' must be its first ones: their class ids agree), the repairs added up,
    one format if all share it (else their names joined with ``+``).

    Raises:
        DataError: two parts whose class ids name different classes.
    """
    names = max((part.class_names for part in parts), key=len)
    for part in parts:
        if list(part.class_names) != list(names[:len(part.class_names)]):
            raise DataError(
                f"the datasets of '{split}' name their classes differently ({parts[0].path}: "
                f"{', '.join(parts[0].class_names)}; {part.path}: "
                f"{', '.join(part.class_names)}): give 'names' in the dataset file",
                path=path)
    category_ids = parts[0].category_ids
    if any(part.category_ids != category_ids for part in parts):
        category_ids = None
    records = [dataclasses.replace(record, image_id=index) for index, record in
               enumerate(record for part in parts for record in part.records)]
    fixes = FixReport(
        dropped_degenerate=sum(part.fixes.dropped_degenerate for part in parts),
        dropped_outside=sum(part.fixes.dropped_outside for part in parts),
        clipped=sum(part.fixes.clipped for part in parts),
        examples=[example for part in parts for example in part.fixes.examples][
            :MAX_EXAMPLES])
    formats = list(dict.fromkeys(part.format for part in parts))
    return Dataset(path=path, format="+".join(formats), records=records,
                   class_names=list(names), fixes=fixes, category_ids=category_ids,
                   sources=[source for part in parts for source in part.sources])


def _load(path: Path, format: str | None,
          classes: str | os.PathLike | Sequence[str] | None,
          image_dir: str | os.PathLike | None, check_images: bool, check_units: bool,
          keypoints: int | None = None, given: bool = True) -> Dataset:
    """:func:`load_dataset` of a dataset (not a dataset file); ``keypoints``: a pose
    dataset file's values per line for a YOLO split; ``given``: ``classes`` come from the
    caller (checked against the names the dataset gives its class indices), not from a
    dataset file."""
    if not path.exists():
        raise DataError("dataset not found", path=path)
    fmt = normalize_format(format)
    if fmt == AUTO:
        fmt = detect_format(path)
    class_names = resolve_class_names(path, classes)
    beside = _beside(path)
    sources = [str(beside)] if beside is not None else []
    if given and classes is not None and fmt in INDEXED_FORMATS:
        own = own_class_names(path, fmt, beside)
        if own is not None:
            check_given_names(class_names, *own)
    fixes = FixReport()
    options = {"image_dir": image_dir} if fmt == "coco" else {}
    if fmt == "yolo" and keypoints is not None:
        options["keypoints"] = keypoints
    if image_dir is not None and fmt != "coco":
        raise UsageError("image_dir applies to COCO datasets only")
    result = READERS[fmt](path, class_names, fixes, **options)
    if not result.records:
        raise DataError("no images in the dataset", path=path)
    if check_units and fmt != "yolo":
        _check_pixels(result.records, path)
    if check_images:
        _check_images(result.records, path)
    return Dataset(path=path, format=fmt, records=result.records,
                   class_names=result.class_names, fixes=fixes,
                   category_ids=result.category_ids,
                   sources=[*sources, *result.sources])


def _check_pixels(records: list[ImageRecord], path: Path) -> None:
    """Refuse boxes in fractions of the image size where the format takes pixels: every
    box within ``[0, 1]`` of images larger than :data:`NORMALIZED_HINT_SIDE` (they would
    all be dropped as under a pixel, leaving nothing to train on)."""
    boxed = [record for record in records if record.num_boxes]
    if not boxed or any(np.abs(record.boxes).max() > 1.0 for record in boxed):
        return                       # (stops at the first: at once for pixel boxes)
    if max(max(record.width or 0, record.height or 0) for record in boxed) > \
            NORMALIZED_HINT_SIDE:
        raise DataError("every box lies within [0, 1] pixels of its image: the coordinates "
                        "look normalized (fractions of the image size); this format takes "
                        "pixels", path=path)


def _check_images(records: list[ImageRecord], path: Path) -> None:
    for record in records:
        if not Path(record.image_path).is_file():
            where = f" (image id {record.image_id})" if record.source_line is None else ""
            raise DataError(f"image file not found: {record.image_path}{where}",
                            path=path, line=record.source_line)
