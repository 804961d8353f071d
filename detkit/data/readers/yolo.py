"""YOLO txt folders (darknet / Ultralytics): ``images/`` beside ``labels/``.

Every image under ``images/`` (sub-folders too, e.g. ``images/train/``) has its labels in
``labels/`` at the same relative path with a ``.txt`` suffix; one split of such a folder
is read by naming it, ``ROOT/images/train`` (with ``ROOT/labels/train``), or by an
Ultralytics image list, ``ROOT/train2017.txt``: one image path a line (relative to the
list's folder), each labelled by the file at its path with the last ``images`` folder
turned into ``labels`` and a ``.txt`` suffix. One box a line:
``class cx cy w h``, normalized to ``[0, 1]`` by the image size (a value above
:data:`PIXEL_HINT` is an error naming the line: the file holds pixels). As Ultralytics
reads them, a line of a segmentation dataset, ``class x1 y1 x2 y2 x3 y3 ...`` (a polygon of
three or more normalized points), is the box enclosing its points, and with ``kpt_shape:
[K, D]`` in ``data.yaml`` (a pose dataset) each line is a box followed by ``K * D``
keypoint values, which are dropped. An image without a label file has no boxes (a
negative); a label file without an image is an error. Image sizes are read from the image
headers. Class names: ``classes.txt`` (in the folder or in ``labels/``), else ``names`` of
``data.yaml`` / ``dataset.yaml`` in the folder or above it (where Roboflow's exports keep
it, beside ``train/`` and ``valid/``), else ``"0", "1", ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from detkit.boxes import cxcywh_to_xyxy
from detkit.data.fixes import FixReport
from detkit.data.readers.common import (CLASS_ID_LIMIT, IMAGE_EXTENSIONS, TEXT_ENCODING,
                                        ReadResult, ancestor, check_class_id, display_path,
                                        index_names, join_path, make_records, parse_class_id,
                                        parse_floats, parse_number, read_class_names,
                                        read_text)
from detkit.data.readers.imagesize import image_size
from detkit.errors import DataError

IMAGES_DIR, LABELS_DIR = "images", "labels"
LABEL_SUFFIX = ".txt"
CLASSES_FILE = "classes.txt"
YAML_FILES = ("data.yaml", "dataset.yaml")
#: Fields of one label line: ``class cx cy w h``.
LABEL_FIELDS = 5
#: Fewest fields of a polygon line: ``class x1 y1 x2 y2 x3 y3``.
MIN_POLYGON_FIELDS = 7
#: Label values are fractions of the image size; a value above this cannot be one (a box
#: centred two image sides away, or twice the image's size): the file holds pixels.
PIXEL_HINT = 2.0
#: How a malformed line's fields are parsed (a bad row, checked again alone).
_BAD_ROW = ["nan"] * LABEL_FIELDS


def is_yolo_folder(path: Path) -> bool:
    """Whether ``path`` has the ``images/`` and ``labels/`` folders of this format."""
    return (path / IMAGES_DIR).is_dir() and (path / LABELS_DIR).is_dir()


def is_yolo_split(path: Path) -> bool:
    """Whether ``path`` is one split of a YOLO folder: ``ROOT/images/NAME`` beside
    ``ROOT/labels/NAME``."""
    return (path.is_dir() and ancestor(path).name == IMAGES_DIR
            and (ancestor(path, 2) / LABELS_DIR / _name(path)).is_dir())


def _name(path: Path) -> str:
    """The folder's own name, also for ``.`` or ``..``."""
    return os.path.basename(os.path.abspath(path))


def yolo_root(path: Path) -> Path:
    """The folder holding ``images/`` and ``labels/`` of a YOLO folder or split (for an
    image list, the list's folder)."""
    if is_yolo_split(path):
        return ancestor(path, 2)
    return path.parent if path.is_file() else path


def label_path(image: str) -> str:
    """The label file of image path ``image``: its last ``images`` folder turned into
    ``labels``, its suffix into ``.txt`` (Ultralytics' rule)."""
    head, sep, tail = image.rpartition(os.sep + IMAGES_DIR + os.sep)
    if not sep and image.startswith(IMAGES_DIR + os.sep):
        head, sep, tail = "", IMAGES_DIR + os.sep, image[len(IMAGES_DIR) + 1:]
    if not sep:
        return ""
    return _stem_path(head + sep.replace(IMAGES_DIR, LABELS_DIR) + tail, LABEL_SUFFIX)


def _list_entry(line: str, folder: Path) -> str:
    """The image path of one image-list line: ``./`` ones under the list's folder, other
    relative ones there or else under the working folder (as Ultralytics has them)."""
    token = line.strip()
    entry = os.path.normpath(token)
    if os.path.isabs(entry):
        return entry
    beside = join_path(str(folder), entry)
    if token.startswith("./") or os.path.exists(beside) or not os.path.exists(entry):
        return beside
    return entry


def is_image_list(path: Path) -> bool:
    """Whether ``path`` is an Ultralytics image list: a ``.txt`` file of one image path a
    line (no line holds boxes), the first one's ``labels`` folder there (see
    :func:`label_path`)."""
    if path.suffix.lower() != LABEL_SUFFIX or not path.is_file():
        return False
    try:
        lines = [line.split() for line in read_text(path).splitlines()]
    except DataError:
        return False
    entries = [fields for fields in lines if fields]
    if not entries or any(len(fields) != 1 for fields in entries):
        return False
    if _suffix(entries[0][0]).lower() not in IMAGE_EXTENSIONS:
        return False
    label = label_path(_list_entry(entries[0][0], path.parent))
    return bool(label) and os.path.isdir(os.path.dirname(label))


def _dataset_yaml(path: Path) -> tuple[Path, object] | None:
    """``(file, content)`` of the ``data.yaml`` / ``dataset.yaml`` of YOLO folder ``path``:
    in it, else one in its parent that reads as a mapping with ``names``."""
    for folder in (path, ancestor(path)):
        for file in (folder / name for name in YAML_FILES):
            if not file.is_file():
                continue
            try:
                content = yaml.safe_load(file.read_text(encoding=TEXT_ENCODING))
            except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
                if folder != path:
                    continue
                raise DataError(f"cannot read the dataset yaml: {err}", path=file) from None
            if folder == path or (isinstance(content, dict) and "names" in content):
                return file, content
    return None


def yaml_splits(path: Path) -> dict[str, str]:
    """The datasets an Ultralytics dataset file (``data.yaml``) names, by split (``train``,
    ``val``, ``test``), as detkit takes them: its ``path`` (relative to the file) joined
    with each split, a ``../`` one also tried under ``path`` itself (Ultralytics' rule
    for Roboflow's ``../train/images``), an ``images`` folder given as the folder holding
    it. ``{}`` when the file is no such yaml."""
    try:
        data = yaml.safe_load(path.read_text(encoding=TEXT_ENCODING))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("train"), str):
        return {}
    root = path.parent / str(data.get("path") or "")
    splits = {}
    for split in ("train", "val", "test"):
        value = data.get(split)
        if not isinstance(value, str):
            continue
        found = root / value
        if not found.exists() and value.startswith("../"):
            found = root / value[3:]
        if found.name == IMAGES_DIR and is_yolo_folder(found.parent):
            found = found.parent
        splits[split] = display_path(found)
    return splits


def yaml_class_names(path: Path) -> list[str] | None:
    """``names`` of ``data.yaml`` (a list, or a mapping of index to name), if present."""
    found = _dataset_yaml(path)
    if found is None:
        return None
    file, data = found
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


def yaml_keypoint_values(path: Path) -> int:
    """Values after the box on each line of a pose dataset: ``K * D`` of ``kpt_shape: [K,
    D]`` in ``data.yaml`` (0 without one)."""
    found = _dataset_yaml(path)
    if found is None or not isinstance(found[1], dict) or "kpt_shape" not in found[1]:
        return 0
    file, shape = found[0], found[1]["kpt_shape"]
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                       for v in shape)):
        raise DataError(f"'kpt_shape' must be [keypoints, values per keypoint], got "
                        f"{shape!r}", path=file)
    return shape[0] * shape[1]


def is_polygon(count: int, keypoints: int) -> bool:
    """Whether a line of ``count`` fields is a polygon ``class x1 y1 ... xn yn`` (n >= 3;
    never in a pose dataset, whose lines hold ``keypoints`` values after the box)."""
    return not keypoints and count >= MIN_POLYGON_FIELDS and count % 2 == 1


def _line_shape(keypoints: int) -> str:
    if keypoints:
        return f"'class cx cy w h' and {keypoints} keypoint values (kpt_shape of data.yaml)"
    return "'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...'"


def _check_label_text(text: str, label_file: Path, num_classes: int | None,
                      keypoints: int) -> None:
    """Every check of one label file, line by line (raises naming the file and line)."""
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        polygon = is_polygon(len(fields), keypoints)
        if len(fields) != LABEL_FIELDS + keypoints and not polygon:
            raise DataError(f"malformed label line {raw.strip()!r}: expected "
                            f"{_line_shape(keypoints)}", path=label_file, line=number)
        class_id = parse_class_id(fields[0], path=label_file, line=number)
        check_class_id(class_id, num_classes, path=label_file, line=number)
        values = fields[1:] if polygon else fields[1:LABEL_FIELDS]
        numbers = [parse_number(f, what="box", path=label_file, line=number) for f in values]
        if max(map(abs, numbers) if polygon else numbers) > PIXEL_HINT:
            what = "polygon" if polygon else "label"
            raise DataError(
                f"{what} values {' '.join(values)} look like pixel coordinates: YOLO "
                "labels are 'class cx cy w h' divided by the image width and height "
                "(values in [0, 1])", path=label_file, line=number)


class _LabelRows(NamedTuple):
    """Every non-blank label line, as fields to parse at once."""

    #: ``LABEL_FIELDS`` a line: a box line's, a polygon's class and NaNs, or NaNs.
    fields: list[str]
    #: ``(N,)`` the file index of each line.
    files: np.ndarray
    #: ``(N,)`` whether the line has the fields of a box (or box and keypoints) or polygon.
    shaped: np.ndarray
    #: ``(P,)`` line index of each polygon line.
    polygon_lines: np.ndarray
    #: the coordinates of every polygon line, one after the other.
    polygon_fields: list[str]
    #: ``(P,)`` coordinates of each polygon line (even).
    polygon_sizes: np.ndarray


def _label_rows(texts: list[str], keypoints: int) -> _LabelRows:
    """Split the lines of ``texts`` (``keypoints`` values after each box: a pose dataset)."""
    fields, files, shaped = [], [], []
    polygon_lines, polygon_fields, polygon_sizes = [], [], []
    for index, text in enumerate(texts):
        for raw in text.splitlines():
            row = raw.split()
            if not row:
                continue
            polygon = is_polygon(len(row), keypoints)
            if polygon:
                polygon_lines.append(len(files))
                polygon_fields.extend(row[1:])
                polygon_sizes.append(len(row) - 1)
                fields.extend(row[:1] + _BAD_ROW[1:])
            elif len(row) == LABEL_FIELDS + keypoints:
                fields.extend(row[:LABEL_FIELDS])
            else:
                fields.extend(_BAD_ROW)
            shaped.append(polygon or len(row) == LABEL_FIELDS + keypoints)
            files.append(index)
    return _LabelRows(fields, np.array(files, np.int64), np.array(shaped, bool),
                      np.array(polygon_lines, np.int64), polygon_fields,
                      np.array(polygon_sizes, np.int64))


def _enclosing_boxes(fields: list[str], sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """The polygons' enclosing boxes: ``(cxcywh (P, 4), parsed (P,), largest (P,))`` with
    ``largest`` the largest absolute coordinate of each polygon (``sizes``: coordinates of
    each)."""
    values, finite = parse_floats(fields)
    if not len(sizes):
        return np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    xs, ys = values[0::2], values[1::2]        # each polygon starts at an even field
    x1, x2 = np.minimum.reduceat(xs, starts // 2), np.maximum.reduceat(xs, starts // 2)
    y1, y2 = np.minimum.reduceat(ys, starts // 2), np.maximum.reduceat(ys, starts // 2)
    cxcywh = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
    return (cxcywh, np.logical_and.reduceat(finite, starts),
            np.maximum.reduceat(np.abs(values), starts))


def _parse_labels(texts: list[str], num_classes: int | None,
                  keypoints: int) -> tuple[np.ndarray, ...]:
    """Parse the label files' lines at once.

    Returns:
        ``(cxcywh (N, 4) float32, classes (N,) int64, file index (N,), first bad file
        index or -1)``: a bad line only marks its file, checked again alone.
    """
    rows = _label_rows(texts, keypoints)
    values, finite = parse_floats(rows.fields)
    values = values.reshape(-1, LABEL_FIELDS)
    finite = finite.reshape(-1, LABEL_FIELDS)
    largest = values[:, 1:].max(axis=1, initial=-np.inf)
    boxes, parsed, polygon_largest = _enclosing_boxes(rows.polygon_fields,
                                                      rows.polygon_sizes)
    values[rows.polygon_lines, 1:] = boxes
    finite[rows.polygon_lines, 1:] = parsed[:, None]
    largest[rows.polygon_lines] = polygon_largest
    classes = values[:, 0]
    limit = CLASS_ID_LIMIT if num_classes is None else num_classes
    ok = rows.shaped & finite.all(axis=1)
    ok &= (classes == np.floor(classes)) & (classes >= 0) & (classes < limit)
    ok &= largest <= PIXEL_HINT
    bad = rows.files[~ok]
    return (np.where(ok[:, None], values[:, 1:], 0).astype(np.float32),
            np.where(ok, classes, 0).astype(np.int64),
            rows.files, int(bad[0]) if len(bad) else -1)


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


def _folder_pairs(images: list[str], images_dir: Path,
                  labels_dir: Path) -> tuple[list[str], list[str]]:
    """``(image paths, label paths)`` of the images under ``images_dir`` (relative)."""
    image_root, label_root = str(images_dir), str(labels_dir)
    return ([join_path(image_root, rel) for rel in images],
            [join_path(label_root, _stem_path(rel, LABEL_SUFFIX)) for rel in images])


def _list_pairs(path: Path) -> tuple[list[str], list[str]]:
    """``(image paths, label paths)`` of image list ``path``, in list order.

    Raises:
        DataError: a line that is not one image path, an image without a ``labels``
            folder on its path, or no image (naming the list and line).
    """
    images, labels = [], []
    for number, line in enumerate(read_text(path, "image list").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise DataError(f"expected one image path a line (an Ultralytics image list), "
                            f"got {line.strip()!r}; for keras-yolo3 lines set --format "
                            "yolo3", path=path, line=number)
        image = _list_entry(fields[0], path.parent)
        label = label_path(image)
        if not label:
            raise DataError(f"image {fields[0]!r} is not under an '{IMAGES_DIR}' folder, "
                            f"so it has no '{LABELS_DIR}' folder", path=path, line=number)
        images.append(image)
        labels.append(label)
    if not images:
        raise DataError("no image paths in the image list", path=path)
    return images, labels


def _sizes_and_texts(images: list[str], labels: list[str]
                     ) -> tuple[list[tuple[int, int]], list[str], DataError | None]:
    """Each image's size and label text (``""`` without a label file), in order, up to
    the first image whose size or labels cannot be read (that error is returned)."""
    sizes, texts = [], []
    for image, label in zip(images, labels):
        try:
            size = image_size(image, source=label if os.path.exists(label) else None)
            text = read_text(label, "label file") if os.path.isfile(label) else ""
        except DataError as err:
            return sizes, texts, err
        sizes.append(size)
        texts.append(text)
    return sizes, texts, None


def _image_label_pairs(path: Path, root: Path) -> tuple[list[str], list[str]]:
    """``(image paths, label paths)`` of a YOLO folder, split or image list ``path``."""
    if path.is_file():
        return _list_pairs(path)
    if is_yolo_split(path):
        images_dir, labels_dir = path, root / LABELS_DIR / _name(path)
    elif is_yolo_folder(path):
        images_dir, labels_dir = path / IMAGES_DIR, path / LABELS_DIR
    else:
        raise DataError(f"expected {IMAGES_DIR}/ and {LABELS_DIR}/ folders", path=path)
    return _folder_pairs(_check_pairs(images_dir, labels_dir), images_dir, labels_dir)


def read_yolo_folder(path: str | os.PathLike, class_names: list[str] | None = None,
                     fixes: FixReport | None = None) -> ReadResult:
    """Read a YOLO txt folder.

    Args:
        path: the folder holding ``images/`` and ``labels/``, a split of it
            (``ROOT/images/train``), or an Ultralytics image list (``ROOT/train.txt``).
        class_names: the class list; ``None`` reads it from the folder (see module doc).
        fixes: counts of repaired boxes to update.

    Returns:
        Records sorted by image path, or in the list's order (``image_id`` = position),
        and class names.

    Raises:
        DataError: missing folders, no images, a label file without an image, a
            malformed label line, class id out of range or values that look like
            pixels (naming file and line), unreadable images; see :func:`_list_pairs`.
    """
    path = Path(path)
    fixes = FixReport() if fixes is None else fixes
    root = yolo_root(path)
    images, labels = _image_label_pairs(path, root)
    if class_names is None and (root / LABELS_DIR / CLASSES_FILE).is_file():
        class_names = read_class_names(root / LABELS_DIR / CLASSES_FILE)
    if class_names is None:
        class_names = yaml_class_names(root)
    num_classes = None if class_names is None else len(class_names)
    sizes, texts, error = _sizes_and_texts(images, labels)
    labels = labels[:len(texts)]
    keypoints = yaml_keypoint_values(root)
    cxcywh, classes, files, bad = _parse_labels(texts, num_classes, keypoints)
    if bad >= 0:
        _check_label_text(texts[bad], labels[bad], num_classes, keypoints)
        raise AssertionError(f"{labels[bad]} failed a column check only")
    if error is not None:
        raise error
    widths, heights = np.array(sizes, np.int64).reshape(-1, 2).T
    records = make_records(
        [display_path(image) if ".." in image else image for image in images],
        widths.tolist(),
        heights.tolist(), np.bincount(files, minlength=len(images)),
        _to_pixels(cxcywh, widths[files], heights[files]), classes, fixes,
        lambda i: labels[i])
    if class_names is None:
        class_names = index_names(int(classes.max(initial=-1)))
    return ReadResult(records, list(class_names))
