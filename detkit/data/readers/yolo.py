"""YOLO txt folders (darknet / Ultralytics): ``images/`` beside ``labels/``.

Every image under ``images/`` (sub-folders too, e.g. ``images/train/``) has its labels in
``labels/`` at the same relative path with a ``.txt`` suffix, one box a line:
``class cx cy w h``, normalized to ``[0, 1]`` by the image size (a value above
:data:`PIXEL_HINT` is an error naming the line: the file holds pixels). An image without a
label file has no boxes (a negative); a label file without an image is an error. Image sizes
are read from the image headers. Class names: ``classes.txt`` (in the folder or in
``labels/``), else ``names`` of ``data.yaml`` / ``dataset.yaml``, else ``"0", "1", ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

from detkit.boxes import cxcywh_to_xyxy
from detkit.data.fixes import FixReport
from detkit.data.readers.common import (CLASS_ID_LIMIT, IMAGE_EXTENSIONS, TEXT_ENCODING,
                                        ReadResult, check_class_id, display_join, index_names,
                                        join_path, make_records, parse_class_id, parse_floats,
                                        parse_number, read_class_names, read_text)
from detkit.data.readers.imagesize import image_size
from detkit.errors import DataError

IMAGES_DIR, LABELS_DIR = "images", "labels"
LABEL_SUFFIX = ".txt"
CLASSES_FILE = "classes.txt"
YAML_FILES = ("data.yaml", "dataset.yaml")
#: Fields of one label line: ``class cx cy w h``.
LABEL_FIELDS = 5
#: Label values are fractions of the image size; a value above this cannot be one (a box
#: centred two image sides away, or twice the image's size): the file holds pixels.
PIXEL_HINT = 2.0
#: How a malformed line's fields are parsed (a bad row, checked again alone).
_BAD_ROW = ["nan"] * LABEL_FIELDS


def is_yolo_folder(path: Path) -> bool:
    """Whether ``path`` has the ``images/`` and ``labels/`` folders of this format."""
    return (path / IMAGES_DIR).is_dir() and (path / LABELS_DIR).is_dir()


def yaml_class_names(path: Path) -> list[str] | None:
    """``names`` of ``data.yaml`` (a list, or a mapping of index to name), if present."""
    for name in YAML_FILES:
        file = path / name
        if not file.is_file():
            continue
        try:
            data = yaml.safe_load(file.read_text(encoding=TEXT_ENCODING))
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


def _check_label_text(text: str, label_path: Path, num_classes: int | None) -> None:
    """Every check of one label file, line by line (raises naming the file and line)."""
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != LABEL_FIELDS:
            raise DataError(f"malformed label line {raw.strip()!r}: expected "
                            "'class cx cy w h'", path=label_path, line=number)
        class_id = parse_class_id(fields[0], path=label_path, line=number)
        check_class_id(class_id, num_classes, path=label_path, line=number)
        values = [parse_number(f, what="box", path=label_path, line=number)
                  for f in fields[1:]]
        if max(values) > PIXEL_HINT:
            raise DataError(
                f"label values {' '.join(fields[1:])} look like pixel coordinates: YOLO "
                "labels are 'class cx cy w h' divided by the image width and height "
                "(values in [0, 1])", path=label_path, line=number)


def _label_rows(texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The fields of every non-blank line of ``texts``, flat (``LABEL_FIELDS`` a line,
    a malformed line as NaNs), with each line's file index and field count."""
    fields, files, widths = [], [], []
    for index, text in enumerate(texts):
        for raw in text.splitlines():
            row = raw.split()
            if row:
                fields.extend(row if len(row) == LABEL_FIELDS else _BAD_ROW)
                files.append(index)
                widths.append(len(row))
    return fields, np.array(files, np.int64), np.array(widths, np.int64)


def _parse_labels(texts: list[str], num_classes: int | None) -> tuple[np.ndarray, ...]:
    """Parse the label files' lines at once.

    Returns:
        ``(cxcywh (N, 4) float32, classes (N,) int64, file index (N,), first bad file
        index or -1)``: a bad line only marks its file, checked again alone.
    """
    fields, files, widths = _label_rows(texts)
    values, finite = parse_floats(fields)
    values = values.reshape(-1, LABEL_FIELDS)
    classes = values[:, 0]
    limit = CLASS_ID_LIMIT if num_classes is None else num_classes
    ok = (widths == LABEL_FIELDS) & finite.reshape(-1, LABEL_FIELDS).all(axis=1)
    ok &= (classes == np.floor(classes)) & (classes >= 0) & (classes < limit)
    ok &= values[:, 1:].max(axis=1, initial=-np.inf) <= PIXEL_HINT
    bad = files[~ok]
    return (values[:, 1:].astype(np.float32), np.where(ok, classes, 0).astype(np.int64),
            files, int(bad[0]) if len(bad) else -1)


def _to_pixels(cxcywh: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """``(N, 4)`` normalized cx, cy, w, h -> ``(N, 4)`` float32 xyxy pixels of the images
    (``(N,)`` sizes)."""
    scale = np.stack([widths, heights, widths, heights], axis=1).astype(np.float32)
    return cxcywh_to_xyxy(cxcywh) * scale


def _walk(folder: Path) -> list[str]:
    """Relative paths of the files and folders under ``folder`` (symlinked folders
    listed, not entered, as ``Path.rglob`` does), sorted as paths (part by part)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        prefix = "" if rel_dir == os.curdir else rel_dir + os.sep
        found += [prefix + name for name in dirnames + filenames]
    return sorted(found, key=lambda rel: rel.split(os.sep))


def _suffix(rel: str) -> str:
    """``PurePath(rel).suffix``: from the last dot of the name, unless it leads or ends."""
    name = os.path.basename(rel)
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def _stem_path(rel: str, suffix: str) -> str:
    """``str(PurePath(rel).with_suffix(suffix))``."""
    return rel[:len(rel) - len(_suffix(rel))] + suffix


def _check_pairs(images_dir: Path, labels_dir: Path) -> list[str]:
    """The images under ``images_dir`` (relative, sorted); a label without one raises."""
    root = str(images_dir)
    images = [rel for rel in _walk(images_dir)
              if _suffix(rel).lower() in IMAGE_EXTENSIONS
              and os.path.isfile(join_path(root, rel))]
    if not images:
        raise DataError("no image files", path=images_dir)
    stems = {_stem_path(rel, LABEL_SUFFIX) for rel in images}
    for rel in _walk(labels_dir):
        if (rel.endswith(LABEL_SUFFIX) and os.path.basename(rel) != CLASSES_FILE
                and rel not in stems):
            raise DataError(f"label file without an image in {images_dir}",
                            path=labels_dir / rel)
    return images


def _sizes_and_texts(images: list[str], images_dir: Path, labels_dir: Path
                     ) -> tuple[list[tuple[int, int]], list[str], list[str], DataError | None]:
    """Each image's size and label text (``""`` without a label file), in order, up to
    the first image whose size or labels cannot be read (that error is returned)."""
    sizes, texts, labels = [], [], []
    image_root, label_root = str(images_dir), str(labels_dir)
    for rel in images:
        label = join_path(label_root, _stem_path(rel, LABEL_SUFFIX))
        try:
            size = image_size(join_path(image_root, rel),
                              source=label if os.path.exists(label) else None)
            text = read_text(label, "label file") if os.path.isfile(label) else ""
        except DataError as err:
            return sizes, texts, labels, err
        sizes.append(size)
        texts.append(text)
        labels.append(label)
    return sizes, texts, labels, None


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
            malformed label line, class id out of range or values that look like
            pixels (naming file and line), unreadable images.
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
    images = _check_pairs(images_dir, labels_dir)
    sizes, texts, labels, error = _sizes_and_texts(images, images_dir, labels_dir)
    cxcywh, classes, files, bad = _parse_labels(texts, num_classes)
    if bad >= 0:
        _check_label_text(texts[bad], labels[bad], num_classes)
        raise AssertionError(f"{labels[bad]} failed a column check only")
    if error is not None:
        raise error
    widths, heights = np.array(sizes, np.int64).reshape(-1, 2).T
    records = make_records(
        [display_join(str(images_dir), rel) for rel in images], widths.tolist(),
        heights.tolist(), np.bincount(files, minlength=len(images)),
        _to_pixels(cxcywh, widths[files], heights[files]), classes, fixes,
        lambda i: labels[i])
    if class_names is None:
        class_names = index_names(int(classes.max(initial=-1)))
    return ReadResult(records, list(class_names))
