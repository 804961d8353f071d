"""Annotation writers: keras-yolo3 lines, COCO json, VOC xml folders, YOLO txt folders.

Every file is written atomically. Coordinates are written with the shortest decimal that
reads back as the same float32, so write-then-read returns the same boxes. Image paths
are written relative to the annotation file's folder when they can be (a dataset folder
stays relocatable), else absolute.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence
from xml.sax.saxutils import escape

import numpy as np

from detkit.artifacts import write_json, write_text
from detkit.boxes import xyxy_to_cxcywh
from detkit.data.readers.voc import ANNOTATIONS_DIR, VOC_ORIGIN
from detkit.data.readers.yolo import IMAGES_DIR, LABEL_SUFFIX, LABELS_DIR
from detkit.data.records import ImageRecord
from detkit.errors import DataError

__all__ = ["format_number", "write_class_names", "write_coco_json", "write_voc_folder",
           "write_yolo3_lines", "write_yolo_folder"]


def format_number(value: float) -> str:
    """Shortest text that reads back as the same float32 (``12.0`` -> ``"12"``)."""
    return np.format_float_positional(np.float32(value), trim="-")


def _records_and_names(data, class_names: Sequence[str] | None
                       ) -> tuple[list[ImageRecord], list[str] | None, list[int] | None]:
    """Accept a :class:`~detkit.data.dataset.Dataset` or a list of records."""
    records = getattr(data, "records", data)
    names = class_names if class_names is not None else getattr(data, "class_names", None)
    return list(records), None if names is None else list(names), \
        getattr(data, "category_ids", None)


def _relative(image_path: str, folder: Path) -> str:
    """``image_path`` relative to ``folder`` (POSIX separators), else absolute."""
    image = Path(image_path)
    try:
        return Path(os.path.relpath(image.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(image.resolve())


def write_class_names(path: str | os.PathLike, class_names: Iterable[str]) -> Path:
    """Write ``classes.txt``: one name a line."""
    return write_text(path, "".join(f"{name}\n" for name in class_names))


def write_yolo3_lines(path: str | os.PathLike, records: Iterable[ImageRecord], *,
                      relative_to: str | os.PathLike | None = None) -> Path:
    """Write a keras-yolo3 lines file: ``image x1,y1,x2,y2,class ...`` per record.

    Args:
        path: the lines file.
        records: the images (``records`` of a Dataset, or any list of records).
        relative_to: the folder image paths are written relative to (default: the
            lines file's folder, which the reader looks in first).

    Raises:
        DataError: an image path contains whitespace (the format splits on it).
    """
    path = Path(path)
    folder = path.parent if relative_to is None else Path(relative_to)
    lines = []
    for record in getattr(records, "records", records):
        image = _relative(record.image_path, folder)
        if any(ch.isspace() for ch in image):
            raise DataError(f"image path {image!r} contains whitespace, which the "
                            "keras-yolo3 lines format cannot hold", path=path)
        boxes = [",".join([*(format_number(v) for v in box), str(int(c))])
                 for box, c in zip(record.boxes, record.classes)]
        lines.append(" ".join([image, *boxes]) + "\n")
    return write_text(path, "".join(lines))


def write_coco_json(path: str | os.PathLike, dataset_or_records,
                    class_names: Sequence[str] | None = None, *,
                    category_ids: Sequence[int] | None = None,
                    relative_to: str | os.PathLike | None = None) -> Path:
    """Write COCO ground truth: ``images``, ``annotations``, ``categories``.

    Image ids are the records' ``image_id``; annotation ids count from 1; ``bbox`` is
    ``[x, y, w, h]``; ``area`` is the box area (there are no masks); ``iscrowd`` is kept.

    Args:
        path: the json file.
        dataset_or_records: a Dataset, or a list of records (then give ``class_names``).
        class_names: the category names in class-index order (default: the dataset's).
        category_ids: the category id of each class (default: the dataset's COCO ids,
            else ``1..C``).
        relative_to: the folder ``file_name`` is relative to (default: the json's).

    Raises:
        DataError: no class names, a record without a size, duplicate image ids.
    """
    path = Path(path)
    records, names, dataset_ids = _records_and_names(dataset_or_records, class_names)
    if names is None:
        raise DataError("write_coco_json needs class names", path=path)
    if category_ids is None:
        category_ids = dataset_ids if dataset_ids is not None and \
            len(dataset_ids) == len(names) else range(1, len(names) + 1)
    category_ids = [int(i) for i in category_ids]
    folder = path.parent if relative_to is None else Path(relative_to)
    images, annotations, seen = [], [], set()
    for record in records:
        if record.width is None or record.height is None:
            raise DataError(f"image {record.image_path} has no known size", path=path)
        if record.image_id in seen:
            raise DataError(f"image id {record.image_id} is used twice", path=path)
        seen.add(record.image_id)
        images.append({"id": int(record.image_id),
                       "file_name": _relative(record.image_path, folder),
                       "width": int(record.width), "height": int(record.height)})
        for box, class_id, crowd in zip(record.boxes, record.classes, record.iscrowd):
            x, y = float(format_number(box[0])), float(format_number(box[1]))
            w = float(format_number(box[2] - box[0]))
            h = float(format_number(box[3] - box[1]))
            annotations.append({"id": len(annotations) + 1, "image_id": int(record.image_id),
                                "category_id": category_ids[int(class_id)],
                                "bbox": [x, y, w, h],
                                "area": float(format_number(w * h)),
                                "iscrowd": int(bool(crowd))})
    categories = [{"id": cat_id, "name": name, "supercategory": "object"}
                  for cat_id, name in zip(category_ids, names)]
    return write_json(path, {"info": {"description": "written by detkit"},
                             "images": images, "annotations": annotations,
                             "categories": categories})


def _unique_stems(records: list[ImageRecord], path: Path) -> list[str]:
    stems = [Path(r.image_path).stem for r in records]
    if len(set(stems)) != len(stems):
        raise DataError("two images share a file name; VOC and YOLO folders need unique "
                        "names", path=path)
    return stems


def write_voc_folder(folder: str | os.PathLike, dataset_or_records,
                     class_names: Sequence[str] | None = None) -> Path:
    """Write ``folder/Annotations/<image stem>.xml`` per record (VOC 1-based corners).

    ``<filename>`` is the image's name and ``<path>`` its path relative to the xml
    folder, so the reader finds the image without copying it.
    """
    folder = Path(folder)
    records, names, _ = _records_and_names(dataset_or_records, class_names)
    if names is None:
        raise DataError("write_voc_folder needs class names", path=folder)
    xml_dir = folder / ANNOTATIONS_DIR
    for record, stem in zip(records, _unique_stems(records, folder)):
        objects = []
        for box, class_id, difficult in zip(record.boxes, record.classes, record.difficult):
            corners = [box[0] + VOC_ORIGIN, box[1] + VOC_ORIGIN, box[2], box[3]]
            xmin, ymin, xmax, ymax = (format_number(v) for v in corners)
            objects.append(
                f"  <object>\n    <name>{escape(names[int(class_id)])}</name>\n"
                f"    <difficult>{int(bool(difficult))}</difficult>\n"
                f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>\n  </object>\n")
        text = (f"<annotation>\n  <filename>{escape(Path(record.image_path).name)}"
                f"</filename>\n  <path>{escape(_relative(record.image_path, xml_dir))}"
                f"</path>\n  <size><width>{int(record.width)}</width><height>"
                f"{int(record.height)}</height><depth>3</depth></size>\n"
                + "".join(objects) + "</annotation>\n")
        write_text(xml_dir / f"{stem}.xml", text)
    return xml_dir


def write_yolo_folder(folder: str | os.PathLike, dataset_or_records,
                      class_names: Sequence[str] | None = None) -> Path:
    """Write a YOLO txt folder: images copied (hard-linked when possible) into
    ``folder/images/``, normalized ``class cx cy w h`` labels in ``folder/labels/``,
    and ``folder/classes.txt``. Images without boxes get no label file.
    """
    folder = Path(folder)
    records, names, _ = _records_and_names(dataset_or_records, class_names)
    if names is None:
        raise DataError("write_yolo_folder needs class names", path=folder)
    (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    for record, stem in zip(records, _unique_stems(records, folder)):
        source = Path(record.image_path)
        target = folder / IMAGES_DIR / source.name
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        if not record.num_boxes:
            continue
        size = np.float32([record.width, record.height, record.width, record.height])
        norm = xyxy_to_cxcywh(record.boxes) / size
        lines = [" ".join([str(int(c)), *(format_number(v) for v in row)]) + "\n"
                 for row, c in zip(norm, record.classes)]
        write_text(folder / LABELS_DIR / f"{stem}{LABEL_SUFFIX}", "".join(lines))
    (folder / LABELS_DIR).mkdir(parents=True, exist_ok=True)
    write_class_names(folder / "classes.txt", names)
    return folder
