"""YOLO txt folders (darknet / Ultralytics): ``images/`` beside ``labels/``.

Every image under ``images/`` (sub-folders too, e.g. ``images/train/``) has its labels in
``labels/`` at the same relative path with a ``.txt`` suffix, one box a line:
``class cx cy w h``, normalized to ``[0, 1]`` by the image size. An image without a label
file has no boxes (a negative); a label file without an image is an error. Image sizes
are read from the image headers. Class names: ``classes.txt`` (in the folder or in
``labels/``), else ``names`` of ``data.yaml`` / ``dataset.yaml``, else ``"0", "1", ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detkit.boxes import cxcywh_to_xyxy
from detkit.data.fixes import FixReport
from detkit.data.readers.common import (IMAGE_EXTENSIONS, ReadResult, check_class_id,
                                        display_path, index_names, make_record,
                                        parse_class_id, parse_number, read_class_names)
from detkit.data.readers.imagesize import image_size
from detkit.errors import DataError

IMAGES_DIR, LABELS_DIR = "images", "labels"
LABEL_SUFFIX = ".txt"
CLASSES_FILE = "classes.txt"
YAML_FILES = ("data.yaml", "dataset.yaml")
#: Fields of one label line: ``class cx cy w h``.
LABEL_FIELDS = 5


def is_yolo_folder(path: Path) -> bool:
    """Whether ``path`` has the ``images/`` and ``labels/`` folders of this format."""
    return (path / IMAGES_DIR).is_dir() and (path / LABELS_DIR).is_dir()


def yaml_class_names(path: Path) -> list[str] | None:
    """``names`` of ``data.yaml`` (a list, or a mapping of index to name), if present."""
    import yaml

    for name in YAML_FILES:
        file = path / name
        if not file.is_file():
            continue
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read class names: {err}", path=file) from None
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, list):
            return [str(n) for n in names]
        if isinstance(names, dict):
            try:
                order = sorted(int(k) for k in names)
            except (TypeError, ValueError):
                raise DataError("'names' keys must be class indices", path=file) from None
            if order != list(range(len(order))):
                raise DataError("'names' indices must be 0..N-1", path=file)
            return [str(names[k] if k in names else names[str(k)]) for k in order]
        raise DataError("no 'names' list in the dataset yaml", path=file)
    return None


def _read_labels(label_path: Path, width: int, height: int,
                 num_classes: int | None) -> tuple[np.ndarray, list[int]]:
    """Boxes ``(N, 4)`` xyxy pixels and class ids of one label file."""
    try:
        text = label_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read label file: {err}", path=label_path) from None
    rows, classes = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != LABEL_FIELDS:
            raise DataError(f"malformed label line {raw.strip()!r}: expected "
                            "'class cx cy w h'", path=label_path, line=number)
        class_id = parse_class_id(fields[0], path=label_path, line=number)
        check_class_id(class_id, num_classes, path=label_path, line=number)
        rows.append([parse_number(f, what="box", path=label_path, line=number)
                     for f in fields[1:]])
        classes.append(class_id)
    norm = np.asarray(rows, np.float32).reshape(-1, 4)
    boxes = cxcywh_to_xyxy(norm) * np.float32([width, height, width, height])
    return boxes, classes


def read_yolo_folder(path: str | os.PathLike, class_names: list[str] | None = None,
                     fixes: FixReport | None = None) -> ReadResult:
    """Read a YOLO txt folder.

    Args:
        path: the folder holding ``images/`` and ``labels/``.
        class_names: the class list; ``None`` reads it from the folder (see module doc).
        fixes: counts of repaired boxes to update.

    Returns:
        Records sorted by image path (``image_id`` = position) and class names.

    Raises:
        DataError: missing folders, no images, a label file without an image, a
            malformed label line or class id out of range (naming file and line),
            unreadable images.
    """
    path = Path(path)
    fixes = FixReport() if fixes is None else fixes
    if not is_yolo_folder(path):
        raise DataError(f"expected {IMAGES_DIR}/ and {LABELS_DIR}/ folders", path=path)
    images_dir, labels_dir = path / IMAGES_DIR, path / LABELS_DIR
    if class_names is None and (labels_dir / CLASSES_FILE).is_file():
        class_names = read_class_names(labels_dir / CLASSES_FILE)
    if class_names is None:
        class_names = yaml_class_names(path)
    num_classes = None if class_names is None else len(class_names)
    images = sorted(p.relative_to(images_dir) for p in images_dir.rglob("*")
                    if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise DataError("no image files", path=images_dir)
    stems = {rel.with_suffix(LABEL_SUFFIX) for rel in images}
    for label in sorted(labels_dir.rglob("*" + LABEL_SUFFIX)):
        rel = label.relative_to(labels_dir)
        if rel.name != CLASSES_FILE and rel not in stems:
            raise DataError(f"label file without an image in {images_dir}", path=label)
    records, max_class = [], -1
    for rel in images:
        image = images_dir / rel
        label = labels_dir / rel.with_suffix(LABEL_SUFFIX)
        width, height = image_size(image, source=label if label.exists() else None)
        boxes, classes = (_read_labels(label, width, height, num_classes)
                          if label.is_file() else (np.zeros((0, 4), np.float32), []))
        max_class = max([max_class, *classes])
        records.append(make_record(display_path(image), width, height, boxes, classes,
                                   fixes, where=str(label), image_id=len(records)))
    if class_names is None:
        class_names = index_names(max_class)
    return ReadResult(records, list(class_names))
