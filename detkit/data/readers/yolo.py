"""YOLO txt folders (darknet / Ultralytics): ``images/`` beside ``labels/``.

Every image under ``images/`` (sub-folders too, e.g. ``images/train/``) has its labels in
``labels/`` at the same relative path with a ``.txt`` suffix; one split of such a folder
is read by naming it, ``ROOT/images/train`` (with ``ROOT/labels/train``), or by an
Ultralytics image list, ``ROOT/train2017.txt``: one image path a line (relative to the
list's folder), each labelled by the file at its path with the last ``images`` folder
turned into ``labels`` and a ``.txt`` suffix. The lines of a label file are boxes,
polygons or pose lines (:mod:`detkit.data.readers.yolo_labels`). An image without a label
file has no boxes (a negative); a label file without an image is an error. Image sizes
are read from the image headers. Class names: ``classes.txt`` (in the folder or in
``labels/``), else ``names`` of ``data.yaml`` / ``dataset.yaml`` in the folder or above
it (where Roboflow's exports keep it, beside ``train/`` and ``valid/``), else ``"0", "1",
...``; ``kpt_shape`` there makes it a pose dataset.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import yaml

from detkit.artifacts import DetkitWarning
from detkit.data.fixes import FixReport
from detkit.data.readers.common import (IMAGE_EXTENSIONS, TEXT_ENCODING, ReadResult,
                                        ancestor, display_path, first_existing, index_names,
                                        join_path, make_records, read_class_names, read_text)
from detkit.data.readers.imagesize import image_size
from detkit.data.readers.yolo_labels import check_label_text, parse_labels, to_pixels
from detkit.errors import DataError, invalid_yaml

IMAGES_DIR, LABELS_DIR = "images", "labels"
LABEL_SUFFIX = ".txt"
CLASSES_FILE = "classes.txt"
YAML_FILES = ("data.yaml", "dataset.yaml")
#: Sub-folders of ``images/`` named so (``train``, ``val2017``, ``valid``, ``test``) are
#: splits.
SPLIT_PREFIXES = ("train", "val", "test")


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
    if token.startswith("./"):
        return beside
    return str(first_existing([beside, entry]) or beside)


def is_image_list(path: Path) -> bool:
    """Whether ``path`` is an Ultralytics image list: a ``.txt`` file of one image path a
    line (no line holds boxes), the first one's ``labels`` folder there (see
    :func:`label_path`)."""
    if path.suffix.lower() != LABEL_SUFFIX or not path.is_file():
        return False
    first = None
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for line in handle:        # stops at a line with boxes (a lines file's first)
                fields = line.split()
                if len(fields) > 1:
                    return False
                first = first or (fields[0] if fields else None)
    except (OSError, UnicodeDecodeError):
        return False
    if first is None or _suffix(first).lower() not in IMAGE_EXTENSIONS:
        return False
    label = label_path(_list_entry(first, path.parent))
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
                if isinstance(err, yaml.YAMLError):
                    raise invalid_yaml(err, DataError, file) from None
                raise DataError(f"cannot read the dataset yaml: {err}", path=file) from None
            if folder == path or (isinstance(content, dict) and "names" in content):
                return file, content
    return None


def folder_class_names(root: Path, *, placeholders: bool = True
                       ) -> tuple[list[str], Path] | None:
    """``(names, file)`` a YOLO folder gives its class ids: ``labels/classes.txt``, else
    the ``names`` of its ``data.yaml``; ``None`` without either (or, unless
    ``placeholders``, with a ``data.yaml`` that gives only a class count ``nc``)."""
    found = _names_file(root)
    return None if found is None else _names_in(*found, placeholders=placeholders)


def _names_file(root: Path) -> tuple[Path, object] | None:
    """``(file, content)`` YOLO folder ``root`` names its classes in:
    ``labels/classes.txt`` (content ``None``: unread), else its ``data.yaml``."""
    listed = root / LABELS_DIR / CLASSES_FILE
    return (listed, None) if listed.is_file() else _dataset_yaml(root)


def _names_in(file: Path, content: object, *, placeholders: bool = True
              ) -> tuple[list[str], Path] | None:
    """``(names, file)`` of a :func:`_names_file` answer (see :func:`folder_class_names`)."""
    if file.name == CLASSES_FILE:
        return read_class_names(file), file
    if not placeholders and not (isinstance(content, dict) and "names" in content):
        return None
    return names_of(file, content), file


def names_of(file: Path, data: object) -> list[str]:
    """The ``names`` of dataset yaml ``file`` holding ``data`` (without them, ``"0"`` ..
    ``nc - 1`` of its class count ``nc``, as Ultralytics)."""
    names = data.get("names") if isinstance(data, dict) else None
    count = data.get("nc") if isinstance(data, dict) else None
    if names is None and isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return [str(i) for i in range(count)]
    listed = _listed_names(file, names)
    if isinstance(count, int) and not isinstance(count, bool) and count != len(listed):
        raise DataError(f"'nc' is {count} but 'names' lists {len(listed)} classes: they "
                        f"must agree (as Ultralytics checks)", path=file)
    return listed


def _listed_names(file: Path, names: object) -> list[str]:
    """The class names of a dataset yaml's ``names``: a list, or a dict of indices."""
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
    return 0 if found is None else keypoint_values(*found)


def keypoint_values(file: Path, data: object) -> int:
    """``K * D`` of ``kpt_shape: [K, D]`` in dataset yaml ``file`` holding ``data`` (0
    without one)."""
    if not isinstance(data, dict) or "kpt_shape" not in data:
        return 0
    shape = data["kpt_shape"]
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                       for v in shape)):
        raise DataError(f"'kpt_shape' must be [keypoints, values per keypoint], got "
                        f"{shape!r}", path=file)
    return shape[0] * shape[1]


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


def folder_splits(path: Path) -> list[str]:
    """The split sub-folders of YOLO folder ``path``'s ``images/`` (``train``, ``val``,
    ...), sorted; empty unless there are two or more."""
    try:
        names = sorted(entry.name for entry in os.scandir(path / IMAGES_DIR)
                       if entry.is_dir() and entry.name.lower().startswith(SPLIT_PREFIXES))
    except OSError:
        return []
    return names if len(names) > 1 else []


def _train_split(splits: list[str]) -> str:
    """The split of (non-empty) ``splits`` to train on: the first named ``train...``,
    else the first."""
    return next((s for s in splits if s.lower().startswith("train")), splits[0])


def _warn_splits(path: Path, splits: list[str]) -> None:
    """Warn that YOLO folder ``path`` is read with all its ``splits``, saying what to give
    to train on one."""
    train = _train_split(splits)
    val = next((s for s in splits if s.lower().startswith("val") and s != train), None)
    images = path / IMAGES_DIR
    give = f"{images / train}" + (f" (with --val {images / val})" if val else "")
    yaml_file = first_existing([path / name for name in YAML_FILES])
    if yaml_file:
        give += f" or {yaml_file}"
    warnings.warn(f"{path} holds the splits {', '.join(splits)} and reads them all: for "
                  f"training give {give}", DetkitWarning, stacklevel=2)


def export_hint(path: Path) -> str | None:
    """What to give instead of folder ``path`` when it is the root of a Roboflow or
    Ultralytics export (a ``data.yaml`` in it, or splits such as ``train/images``), e.g.
    ``"looks like a Roboflow/Ultralytics export: give ROOT/data.yaml (or ROOT/train)"``;
    ``None`` for any other folder."""
    yaml_file = first_existing([path / name for name in YAML_FILES])
    try:
        splits = sorted(entry.name for entry in os.scandir(path)
                        if entry.is_dir() and is_yolo_folder(Path(entry.path)))
    except OSError:
        splits = []
    if yaml_file is None and not splits:
        return None
    split = _train_split(splits) if splits else None
    give = [str(name) for name in (yaml_file, split and path / split) if name]
    alternative = f" (or {give[1]})" if len(give) > 1 else ""
    return f"looks like a Roboflow/Ultralytics export: give {give[0]}{alternative}"


def _image_label_pairs(path: Path, root: Path) -> tuple[list[str], list[str]]:
    """``(image paths, label paths)`` of a YOLO folder, split or image list ``path``."""
    if path.is_file():
        return _list_pairs(path)
    if is_yolo_split(path):
        images_dir, labels_dir = path, root / LABELS_DIR / _name(path)
    elif is_yolo_folder(path):
        images_dir, labels_dir = path / IMAGES_DIR, path / LABELS_DIR
    else:
        hint = export_hint(path) if path.is_dir() else None
        raise DataError(f"expected {IMAGES_DIR}/ and {LABELS_DIR}/ folders"
                        + (f"; it {hint}" if hint else ""), path=path)
    return _folder_pairs(_check_pairs(images_dir, labels_dir), images_dir, labels_dir)


def read_yolo_folder(path: str | os.PathLike, class_names: list[str] | None = None,
                     fixes: FixReport | None = None,
                     keypoints: int | None = None) -> ReadResult:
    """Read a YOLO txt folder.

    Args:
        path: the folder holding ``images/`` and ``labels/``, a split of it
            (``ROOT/images/train``), or an Ultralytics image list (``ROOT/train.txt``).
        class_names: the class list; ``None`` reads it from the folder (see module doc).
        fixes: counts of repaired boxes to update.
        keypoints: values after each box (a pose dataset); ``None`` reads ``kpt_shape``
            from the folder's ``data.yaml``.

    Returns:
        Records sorted by image path, or in the list's order (``image_id`` = position),
        and class names.

    Raises:
        DataError: missing folders, no images, a label file without an image, a
            malformed label line, class id out of range or values that look like
            pixels (naming file and line), unreadable images; see :func:`_list_pairs`.

    Warns (:class:`detkit.artifacts.DetkitWarning`) when a whole folder holding two or
    more splits (``images/train``, ``images/val``) is read: they are merged.
    """
    path = Path(path)
    fixes = FixReport() if fixes is None else fixes
    root = yolo_root(path)
    images, labels = _image_label_pairs(path, root)
    sources = list(labels)
    found = _names_file(root)
    if found is not None:
        sources.append(str(found[0]))
    if class_names is None and found is not None:
        class_names = _names_in(*found)[0]
    num_classes = None if class_names is None else len(class_names)
    sizes, texts, error = _sizes_and_texts(images, labels)
    labels = labels[:len(texts)]
    if keypoints is None:
        keypoints = yaml_keypoint_values(root)
    cxcywh, classes, files, bad = parse_labels(texts, num_classes, keypoints)
    if bad >= 0:
        check_label_text(texts[bad], labels[bad], num_classes, keypoints)
        raise AssertionError(f"{labels[bad]} failed a column check only")
    if error is not None:
        raise error
    widths, heights = np.array(sizes, np.int64).reshape(-1, 2).T
    records = make_records(
        [display_path(image) if ".." in image else image for image in images],
        widths.tolist(),
        heights.tolist(), np.bincount(files, minlength=len(images)),
        to_pixels(cxcywh, widths[files], heights[files]), classes, fixes,
        lambda i: labels[i])
    if class_names is None:
        class_names = index_names(int(classes.max(initial=-1)))
    splits = [] if path.is_file() or is_yolo_split(path) else folder_splits(path)
    if splits:
        _warn_splits(path, splits)
    return ReadResult(records, list(class_names), sources=sources)
