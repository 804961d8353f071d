"""COCO json (``images``, ``annotations``, ``categories``): boxes ``[x, y, w, h]`` in pixels.

Category ids (any integers, e.g. COCO's sparse 1..90) map to contiguous class indices
sorted by id, or, when class names are given, to the index of the category's name.
A record keeps the COCO image id as ``image_id`` and the ``iscrowd`` flags. Image files
are not opened (sizes are in the json; a ground-truth file may come without images):
``file_name`` is looked up beside the json, then in ``images/`` beside it, then where
the COCO 2017 layouts keep a split's images (``annotations/instances_val2017.json`` ->
``val2017/`` or ``images/val2017/`` beside ``annotations/``), then in ``images/`` beside
``annotations/`` (CVAT's export); give ``image_dir`` to say where the images are.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from detkit.data.fixes import FixReport
from detkit.data.records import ImageRecord
from detkit.data.readers.common import (ReadResult, ancestor, column, display_joins,
                                        float_rows, gc_paused, group_order, int_column,
                                        is_integer, lookup, make_records, raise_first_bad,
                                        read_json, unknown_class)
from detkit.errors import DataError

#: Keys a COCO dataset (not a results list) has at its top level.
REQUIRED_KEYS = ("images", "annotations", "categories")
#: Folder beside the json where images are looked for when not beside it.
IMAGES_SUBDIR = "images"
#: The folder of COCO's json files; its split's images are beside it (``val2017/``).
ANNOTATIONS_DIR = "annotations"


@dataclasses.dataclass
class _Images:
    """The checked ``images`` list: ``(M,)`` int64 ids, sizes in pixels, file names."""

    ids: np.ndarray
    widths: list[int]
    heights: list[int]
    file_names: list[str]


@dataclasses.dataclass
class _Annotations:
    """The checked ``annotations``: image position ``(N,)``, class ``(N,)``, boxes
    ``(N, 4)`` float64 xyxy pixels and crowd flags ``(N,)``, in file order."""

    image_pos: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray
    iscrowd: np.ndarray


class _TypedImage(msgspec.Struct, gc=False):
    """An ``images`` entry of a plain file (other keys are skipped unread)."""

    id: int
    file_name: str
    width: int
    height: int


class _TypedAnnotation(msgspec.Struct, gc=False):
    """An ``annotations`` entry of a plain file (``segmentation``, ``area``, ... skipped)."""

    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    iscrowd: int = 0


class _TypedCoco(msgspec.Struct, gc=False):
    """A plain COCO file: typed images and annotations, categories as parsed json."""

    images: list[_TypedImage]
    annotations: list[_TypedAnnotation]
    categories: list[Any]


#: Decodes a plain file about 4x faster than ``json.loads`` (no dict per entry).
_TYPED_DECODER = msgspec.json.Decoder(_TypedCoco)


def _int_field(entry: Any, key: str, what: str, path: Path) -> int:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not is_integer(value):
        raise DataError(f"{what}: {key!r} must be an integer, got {value!r}", path=path)
    return int(value)


def _check_top_level(data: Any, path: Path) -> None:
    if not isinstance(data, dict) or any(key not in data for key in REQUIRED_KEYS):
        raise DataError("not a COCO dataset: expected a json object with "
                        f"{', '.join(REQUIRED_KEYS)} (a detections list is not ground truth)",
                        path=path)
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise DataError(f"not a COCO dataset: {key!r} must be a list", path=path)


def _categories(categories: list, path: Path,
                class_names: list[str] | None) -> tuple[dict[int, int], list[str], list[int]]:
    """Map category id -> class index; return it with the class names and category ids."""
    by_id: dict[int, str] = {}
    for number, category in enumerate(categories):
        cat_id = _int_field(category, "id", f"category #{number}", path)
        if cat_id in by_id:
            raise DataError(f"category id {cat_id} is given twice", path=path)
        by_id[cat_id] = str(category.get("name", cat_id))
    ids = sorted(by_id)
    if class_names is None:
        return {cat_id: i for i, cat_id in enumerate(ids)}, [by_id[i] for i in ids], ids
    index = {name: i for i, name in enumerate(class_names)}
    mapping = {}
    for cat_id in ids:
        name = by_id[cat_id]
        if name not in index:
            raise DataError(unknown_class(name, class_names, f"category id {cat_id}"),
                            path=path)
        mapping[cat_id] = index[name]
    # Classes with no category get fresh ids above the file's, so results stay unique.
    category_ids, fresh = [], max(ids, default=0) + 1
    by_index = {i: cat_id for cat_id, i in mapping.items()}
    for i in range(len(class_names)):
        if i in by_index:
            category_ids.append(by_index[i])
        else:
            category_ids.append(fresh)
            fresh += 1
    return mapping, list(class_names), category_ids


def _check_image(image: Any, number: int, seen: set[int], path: Path) -> None:
    """The checks of one ``images`` entry, ``seen`` holding the ids before it."""
    image_id = _int_field(image, "id", f"image #{number}", path)
    if image_id in seen:
        raise DataError(f"image id {image_id} is given twice", path=path)
    for key in ("width", "height"):
        _int_field(image, key, f"image id {image_id}", path)
    if not image.get("file_name"):
        raise DataError(f"image id {image_id}: no 'file_name'", path=path)


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: True where a value has not appeared before."""
    first = np.zeros(len(values), bool)
    first[np.unique(values, return_index=True)[1]] = True
    return first


def _image_table(images: list, path: Path) -> _Images:
    """Check every ``images`` entry (the first bad one raises, naming it)."""
    ids, ok = int_column(column(images, "id"))
    widths, ok_width = int_column(column(images, "width"))
    heights, ok_height = int_column(column(images, "height"))
    names = column(images, "file_name")
    ok &= ok_width & ok_height & _first_occurrences(ids)
    ok &= np.fromiter(map(bool, names), bool, len(names))
    raise_first_bad(ok, lambda i: _check_image(images[i], i, set(ids[:i].tolist()), path))
    return _Images(ids, widths.tolist(), heights.tolist(), [str(n) for n in names])


def _bbox(annotation: dict, path: Path) -> list[float]:
    """``[x1, y1, x2, y2]`` of one annotation's ``[x, y, w, h]`` (raises naming its id)."""
    bbox = annotation.get("bbox")
    what = f"annotation id {annotation.get('id')}"
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise DataError(f"{what}: 'bbox' must be [x, y, width, height], got {bbox!r}",
                        path=path)
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{what}: 'bbox' must hold numbers, got {bbox!r}", path=path) from None
    if not np.all(np.isfinite([x, y, w, h])):
        raise DataError(f"{what}: 'bbox' is not finite: {bbox!r}", path=path)
    return [x, y, x + w, y + h]


def _bbox_or_nan(bbox: Any) -> list[float]:
    """``[x, y, w, h]`` of a valid ``bbox`` value, else NaNs."""
    try:
        x1, y1, x2, y2 = _bbox({"bbox": bbox}, Path())
    except DataError:
        return [np.nan] * 4
    return [x1, y1, float(bbox[2]), float(bbox[3])]


def _bbox_column(values: list) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 4)`` float64 xyxy boxes of ``[x, y, w, h]`` values and ``(N,)`` ok mask."""
    xywh = float_rows(values, 4)
    if xywh is None:
        xywh = np.array([_bbox_or_nan(v) for v in values], np.float64).reshape(-1, 4)
    return _xyxy(xywh), np.isfinite(xywh).all(axis=1)


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``[x1, y1, x2, y2]`` of ``(N, 4)`` ``[x, y, w, h]``."""
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _class_column(mapping: dict[int, int], cat_keys: np.ndarray,
                  cat_pos: np.ndarray) -> np.ndarray:
    """``(N,)`` int64 class index of each annotation, from its category's position in
    the sorted ``cat_keys``."""
    if not len(cat_keys):
        return np.zeros(len(cat_pos), np.int64)
    return np.array([mapping[k] for k in cat_keys.tolist()], np.int64)[cat_pos]


def _check_annotation(annotation: Any, image_ids: set[int], mapping: dict[int, int],
                      path: Path) -> None:
    """The checks of one ``annotations`` entry (raise naming its id)."""
    what = f"annotation id {annotation.get('id') if isinstance(annotation, dict) else '?'}"
    image_id = _int_field(annotation, "image_id", what, path)
    if image_id not in image_ids:
        raise DataError(f"{what} refers to unknown image id {image_id}", path=path)
    cat_id = _int_field(annotation, "category_id", what, path)
    if cat_id not in mapping:
        raise DataError(f"{what} refers to unknown category id {cat_id}", path=path)
    _bbox(annotation, path)


def _annotation_table(annotations: list, images: _Images, mapping: dict[int, int],
                      path: Path) -> _Annotations:
    """Check every annotation (the first bad one raises, naming its id) and convert."""
    image_ids, ok = int_column(column(annotations, "image_id"))
    image_pos, known_image = lookup(images.ids, image_ids)
    cat_ids, ok_cat = int_column(column(annotations, "category_id"))
    cat_keys = np.array(sorted(mapping), np.int64)
    cat_pos, known_cat = lookup(cat_keys, cat_ids)
    boxes, ok_box = _bbox_column(column(annotations, "bbox"))
    ok &= known_image & ok_cat & known_cat & ok_box
    raise_first_bad(ok, lambda i: _check_annotation(
        annotations[i], set(images.ids.tolist()), mapping, path))
    iscrowd = np.fromiter(map(bool, column(annotations, "iscrowd")), bool,
                          len(annotations))
    return _Annotations(image_pos, _class_column(mapping, cat_keys, cat_pos), boxes,
                        iscrowd)


def _decode_typed(path: Path) -> _TypedCoco | None:
    """The file decoded into typed entries, or ``None`` when it is not plain: unreadable,
    another shape, or a value of another type (a float id, a bool ``iscrowd``, NaN).
    The json path then reads it with every check and message."""
    try:
        return _TYPED_DECODER.decode(path.read_bytes())
    except (OSError, msgspec.MsgspecError):
        return None


def _typed_tables(coco: _TypedCoco,
                  mapping: dict[int, int]) -> tuple[_Images, _Annotations] | None:
    """The tables of a typed file when every entry passes the reader's checks, else
    ``None`` (the json path then raises the message naming the first bad entry)."""
    images, annotations = coco.images, coco.annotations
    m, n = len(images), len(annotations)
    try:
        ids = np.fromiter(map(attrgetter("id"), images), np.int64, m)
        widths = np.fromiter(map(attrgetter("width"), images), np.int64, m)
        heights = np.fromiter(map(attrgetter("height"), images), np.int64, m)
        image_ids = np.fromiter(map(attrgetter("image_id"), annotations), np.int64, n)
        cat_ids = np.fromiter(map(attrgetter("category_id"), annotations), np.int64, n)
    except OverflowError:  # beyond int64: the json path names the entry
        return None
    names = list(map(attrgetter("file_name"), images))
    cat_keys = np.array(sorted(mapping), np.int64)
    image_pos, known_image = lookup(ids, image_ids)
    cat_pos, known_cat = lookup(cat_keys, cat_ids)
    xywh = np.fromiter(itertools.chain.from_iterable(map(attrgetter("bbox"), annotations)),
                       np.float64, 4 * n).reshape(n, 4)
    if not (_first_occurrences(ids).all() and all(names) and known_image.all()
            and known_cat.all() and np.isfinite(xywh).all()):
        return None
    iscrowd = np.fromiter(map(attrgetter("iscrowd"), annotations), np.int64, n) != 0
    return (_Images(ids, widths.tolist(), heights.tolist(), names),
            _Annotations(image_pos, _class_column(mapping, cat_keys, cat_pos), _xyxy(xywh),
                         iscrowd))


def _json_tables(data: dict, mapping: dict[int, int],
                 path: Path) -> tuple[_Images, _Annotations]:
    """The tables of parsed json, every entry checked (the first bad one raises)."""
    images = _image_table(data["images"], path)
    return images, _annotation_table(data["annotations"], images, mapping, path)


def image_folders(path: Path) -> tuple[Path, ...]:
    """Where the images of COCO json ``path`` are looked for, in order: beside it, in
    ``images/`` beside it, then for ``ROOT/annotations/instances_val2017.json`` (the
    split is the stem's last ``_`` part) ``ROOT/val2017``, ``ROOT/images/val2017`` and
    ``ROOT/images``."""
    beside = (path.parent, path.parent / IMAGES_SUBDIR)
    if ancestor(path).name != ANNOTATIONS_DIR:
        return beside
    split, root = path.stem.rsplit("_", 1)[-1], ancestor(path, 2)
    return (*beside, root / split, root / IMAGES_SUBDIR / split, root / IMAGES_SUBDIR)


def _image_base(first_name: str | None, path: Path, image_dir: Path | None) -> Path:
    """The folder ``file_name`` is relative to (decided once, from the first image's)."""
    if image_dir is not None:
        return image_dir
    if first_name is not None:
        name = str(first_name)
        for base in image_folders(path):
            if name and (base / name).is_file():
                return base
    return path.parent


def _image_paths(file_names: list[str], base: Path) -> list[str]:
    """Normalized image paths: absolute names as given, relative ones under ``base``."""
    return display_joins(str(base), file_names)


def read_coco_json(path: str | os.PathLike, class_names: list[str] | None = None,
                   fixes: FixReport | None = None, *,
                   image_dir: str | os.PathLike | None = None) -> ReadResult:
    """Read a COCO-format ground-truth json.

    Args:
        path: the json file.
        class_names: names to map categories onto (by name); ``None`` takes the
            categories' names sorted by id.
        fixes: counts of repaired boxes to update.
        image_dir: the folder ``file_name`` is relative to (default: found beside).

    Returns:
        Records in the json's image order, class names, and each class's category id.

    Raises:
        DataError: invalid JSON (with line), not a COCO dataset, an entry lacking a
            field, unknown image or category id, unknown class name, malformed bbox.
    """
    path = Path(path)
    fixes = FixReport() if fixes is None else fixes
    with gc_paused():
        typed = _decode_typed(path)
        tables = None
        if typed is not None:
            mapping, names, category_ids = _categories(typed.categories, path,
                                                       class_names)
            tables = _typed_tables(typed, mapping)
        if tables is None:  # not plain, or a check failed: read it again, checking all
            data = read_json(path)
            _check_top_level(data, path)
            mapping, names, category_ids = _categories(data["categories"], path,
                                                       class_names)
            tables = _json_tables(data, mapping, path)
        images, annotations = tables
        first_name = images.file_names[0] if images.file_names else None
        base = _image_base(first_name, path, None if image_dir is None else Path(image_dir))
        return ReadResult(_records(images, annotations, base, path, fixes), names,
                          category_ids)


def _records(images: _Images, annotations: _Annotations, base: Path, path: Path,
             fixes: FixReport) -> list[ImageRecord]:
    """One record per image, its annotations in file order, boxes repaired."""
    order = group_order(annotations.image_pos, len(images.ids))
    counts = np.bincount(annotations.image_pos, minlength=len(images.ids))
    ids = images.ids.tolist()
    return make_records(
        _image_paths(images.file_names, base), images.widths, images.heights, counts,
        annotations.boxes[order], annotations.classes[order], fixes,
        lambda i: f"{path} (image id {ids[i]})", iscrowd=annotations.iscrowd[order],
        image_ids=ids)
