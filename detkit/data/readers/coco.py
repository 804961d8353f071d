"""COCO json (``images``, ``annotations``, ``categories``): boxes ``[x, y, w, h]`` in pixels.

Category ids (any integers, e.g. COCO's sparse 1..90) map to contiguous class indices
sorted by id, or, when class names are given, to the index of the category's name.
A record keeps the COCO image id as ``image_id`` and the ``iscrowd`` flags. Image files
are not opened (sizes are in the json; a ground-truth file may come without images):
``file_name`` is looked up beside the json, then in ``images/`` beside it; give
``image_dir`` to say where the images are.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from detkit.data.fixes import FixReport
from detkit.data.readers.common import ReadResult, display_path, make_record, read_json
from detkit.errors import DataError

#: Keys a COCO dataset (not a results list) has at its top level.
REQUIRED_KEYS = ("images", "annotations", "categories")
#: Folder beside the json where images are looked for when not beside it.
IMAGES_SUBDIR = "images"


def _int_field(entry: dict, key: str, what: str, path: Path) -> int:
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise DataError(f"{what}: {key!r} must be an integer, got {value!r}", path=path)
    return int(value)


def _categories(data: dict, path: Path,
                class_names: list[str] | None) -> tuple[dict[int, int], list[str], list[int]]:
    """Map category id -> class index; return it with the class names and category ids."""
    by_id: dict[int, str] = {}
    for number, category in enumerate(data["categories"]):
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
            raise DataError(f"unknown class name {name!r} (category id {cat_id}); known "
                            f"classes: {', '.join(class_names)}", path=path)
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


def _image_base(images: list[dict], json_dir: Path, image_dir: Path | None) -> Path:
    """The folder ``file_name`` is relative to (decided once, from the first image)."""
    if image_dir is not None:
        return image_dir
    if images:
        name = str(images[0].get("file_name", ""))
        for base in (json_dir, json_dir / IMAGES_SUBDIR):
            if name and (base / name).is_file():
                return base
    return json_dir


def _bbox(annotation: dict, path: Path) -> list[float]:
    bbox = annotation.get("bbox")
    what = f"annotation id {annotation.get('id')}"
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise DataError(f"{what}: 'bbox' must be [x, y, width, height], got {bbox!r}",
                        path=path)
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"{what}: 'bbox' must hold numbers, got {bbox!r}", path=path) from None
    if not np.all(np.isfinite([x, y, w, h])):
        raise DataError(f"{what}: 'bbox' is not finite: {bbox!r}", path=path)
    return [x, y, x + w, y + h]


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
    data = read_json(path)
    if not isinstance(data, dict) or any(key not in data for key in REQUIRED_KEYS):
        raise DataError("not a COCO dataset: expected a json object with "
                        f"{', '.join(REQUIRED_KEYS)} (a detections list is not ground truth)",
                        path=path)
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise DataError(f"not a COCO dataset: {key!r} must be a list", path=path)
    mapping, names, category_ids = _categories(data, path, class_names)
    images = data["images"]
    seen: dict[int, dict] = {}
    for number, image in enumerate(images):
        image_id = _int_field(image, "id", f"image #{number}", path)
        if image_id in seen:
            raise DataError(f"image id {image_id} is given twice", path=path)
        for key in ("width", "height"):
            _int_field(image, key, f"image id {image_id}", path)
        if not image.get("file_name"):
            raise DataError(f"image id {image_id}: no 'file_name'", path=path)
        seen[image_id] = image
    boxes, classes, crowd = defaultdict(list), defaultdict(list), defaultdict(list)
    for annotation in data["annotations"]:
        what = f"annotation id {annotation.get('id') if isinstance(annotation, dict) else '?'}"
        image_id = _int_field(annotation, "image_id", what, path)
        if image_id not in seen:
            raise DataError(f"{what} refers to unknown image id {image_id}", path=path)
        cat_id = _int_field(annotation, "category_id", what, path)
        if cat_id not in mapping:
            raise DataError(f"{what} refers to unknown category id {cat_id}", path=path)
        boxes[image_id].append(_bbox(annotation, path))
        classes[image_id].append(mapping[cat_id])
        crowd[image_id].append(bool(annotation.get("iscrowd", 0)))
    base = _image_base(images, path.parent, None if image_dir is None else Path(image_dir))
    records = []
    for image_id, image in seen.items():
        file_name = Path(str(image["file_name"]))
        records.append(make_record(
            display_path(file_name if file_name.is_absolute() else base / file_name),
            int(image["width"]), int(image["height"]),
            np.asarray(boxes[image_id], np.float32), classes[image_id], fixes,
            where=f"{path} (image id {image_id})", iscrowd=crowd[image_id],
            image_id=image_id))
    return ReadResult(records, names, category_ids)
