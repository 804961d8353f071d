"""Pascal VOC xml folders: one ``<annotation>`` xml per image, with ``difficult`` flags.

The folder holds the xml files, or an ``Annotations/`` folder with them (the VOCdevkit
layout, images in ``JPEGImages/`` beside it). A split of the VOCdevkit layout is its list
file, ``VOC2007/ImageSets/Main/trainval.txt``: one image id a line (the first column;
a class's list such as ``dog_train.txt`` names the same images as ``train.txt``), read
from ``Annotations/ID.xml`` in list order. VOC corners are 1-based inclusive pixel
indices; they become 0-based continuous xyxy as ``x1 = xmin - 1, x2 = xmax`` (the
writer inverts this). Class names are the ``<name>`` of the objects; without a class
list they are every name seen, sorted. Images are opened only when the xml lacks a
``<size>``; the image is ``<path>`` when it exists, else ``<filename>`` looked up in
``JPEGImages/``, beside the xml, then in ``images/``.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from detkit.data.fixes import FixReport
from detkit.data.readers.common import (ReadResult, ancestor, display_path, first_existing,
                                        make_records, parse_number, read_text,
                                        unknown_class)
from detkit.data.readers.imagesize import image_size
from detkit.errors import DataError

ANNOTATIONS_DIR = "Annotations"
#: The VOCdevkit folder of split lists: ``ROOT/ImageSets/<task>/<split>.txt``.
SPLITS_DIR = "ImageSets"
#: Image folders looked in, relative to the VOC root (the parent of ``Annotations/``).
IMAGE_DIRS = ("JPEGImages", "images")
#: VOC pixel indices start at 1: ``x1 = xmin - VOC_ORIGIN``.
VOC_ORIGIN = 1.0
_OBJECT_TAG = re.compile(r"<object[\s>]")


def annotation_dir(path: Path) -> Path:
    """The folder holding the xml files of VOC dataset ``path``."""
    sub = path / ANNOTATIONS_DIR
    return sub if sub.is_dir() else path


def split_root(path: Path) -> Path:
    """``ROOT`` of a split list ``ROOT/ImageSets/Main/train.txt`` (relative when given so)."""
    return ancestor(path, 3)


def is_split_list(path: Path) -> bool:
    """Whether ``path`` is a VOCdevkit split list (``ROOT/ImageSets/Main/train.txt``
    with ``ROOT/Annotations/``)."""
    return (path.suffix.lower() == ".txt" and ancestor(path, 2).name == SPLITS_DIR
            and (split_root(path) / ANNOTATIONS_DIR).is_dir())


def split_xml_files(path: Path) -> list[Path]:
    """The annotation files of the ids listed in split list ``path``, in list order (an
    id listed again is read once).

    Raises:
        DataError: an unreadable list, no ids, or an id without its
            ``Annotations/ID.xml`` (naming the list and line).
    """
    xml_dir = split_root(path) / ANNOTATIONS_DIR
    files, seen = [], set()
    for number, line in enumerate(read_text(path, "split list").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] in seen:   # Action and Layout lists repeat ids
            continue
        image_id = fields[0]
        seen.add(image_id)
        xml_path = xml_dir / f"{image_id}.xml"
        if not xml_path.is_file():
            raise DataError(f"no annotation file for image id {image_id!r} (looked for "
                            f"{display_path(xml_path)})", path=path, line=number)
        files.append(xml_path)
    if not files:
        raise DataError("no image ids in the split list", path=path)
    return files


def _text(element: ET.Element | None, tag: str) -> str | None:
    found = None if element is None else element.find(tag)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _image_path(root: ET.Element, xml_path: Path, voc_root: Path) -> Path:
    """Best guess of the image file: the first that exists, else where the dataset keeps
    its images (``JPEGImages/`` or ``images/`` when it has one, else beside the xml), not
    ``<path>``, which is often the annotator's own machine."""
    candidates = []
    stored = _text(root, "path")
    if stored:
        stored_path = Path(stored)
        candidates.append(stored_path if stored_path.is_absolute()
                          else xml_path.parent / stored_path)
    filename = _text(root, "filename")
    if filename:
        usual = [voc_root / IMAGE_DIRS[0] / filename, xml_path.parent / filename,
                 voc_root / IMAGE_DIRS[1] / filename]
        candidates += usual
        fallback = next((place for place, folder in zip(usual, (
            voc_root / IMAGE_DIRS[0], xml_path.parent, voc_root / IMAGE_DIRS[1]))
            if folder.is_dir() and folder != xml_path.parent), usual[1])
    elif not candidates:
        raise DataError("no <filename> or <path> element", path=xml_path)
    else:
        fallback = candidates[0]
    return first_existing(candidates) or fallback


def _size(root: ET.Element, xml_path: Path, image: Path) -> tuple[int, int]:
    """``(width, height)`` from ``<size>``, or from the image header when absent or 0."""
    size = root.find("size")
    width, height = _text(size, "width"), _text(size, "height")
    if width and height:
        w = parse_number(width, what="<size><width>", path=xml_path)
        h = parse_number(height, what="<size><height>", path=xml_path)
        if w > 0 and h > 0:
            return int(w), int(h)
    return image_size(image, source=xml_path)


def _parse_objects(root: ET.Element, text: str, xml_path: Path) -> list[tuple]:
    """``(name, [x1, y1, x2, y2], difficult, line)`` of every ``<object>``."""
    lines = [text.count("\n", 0, m.start()) + 1 for m in _OBJECT_TAG.finditer(text)]
    objects = []
    for k, obj in enumerate(root.findall("object")):
        line = lines[k] if k < len(lines) else None
        name = _text(obj, "name")
        if not name:
            raise DataError("<object> without a <name>", path=xml_path, line=line)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataError(f"<object> {name!r} without a <bndbox>", path=xml_path, line=line)
        corners = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            value = _text(bndbox, tag)
            if value is None:
                raise DataError(f"<bndbox> of {name!r} lacks <{tag}>", path=xml_path,
                                line=line)
            corners.append(parse_number(value, what=f"<{tag}>", path=xml_path, line=line))
        box = [corners[0] - VOC_ORIGIN, corners[1] - VOC_ORIGIN, corners[2], corners[3]]
        difficult = _text(obj, "difficult") or "0"
        objects.append((name, box, difficult not in ("0", "false", "False"), line))
    return objects


def _parse_file(xml_path: Path) -> tuple[ET.Element, str]:
    try:
        raw = xml_path.read_bytes()
        root = ET.fromstring(raw)
    except ET.ParseError as err:
        raise DataError(f"invalid XML: {err.msg}", path=xml_path,
                        line=err.position[0]) from None
    except OSError as err:
        raise DataError(f"cannot read annotation file: {err}", path=xml_path) from None
    if root.tag != "annotation":
        raise DataError(f"expected an <annotation> root element, got <{root.tag}>",
                        path=xml_path)
    return root, raw.decode("utf-8", errors="replace")


def read_voc_folder(path: str | os.PathLike, class_names: list[str] | None = None,
                    fixes: FixReport | None = None) -> ReadResult:
    """Read a folder of VOC xml annotations.

    Args:
        path: the folder of xml files, a VOC root with ``Annotations/``, a split list
            of one (``ROOT/ImageSets/Main/train.txt``), or one image's ``.xml``.
        class_names: the class list; ``None`` takes every name seen, sorted.
        fixes: counts of repaired boxes to update.

    Returns:
        Records sorted by xml file name, or in the split list's order (``image_id`` =
        position), and class names.

    Raises:
        DataError: no xml files, invalid XML (with line), missing fields, unknown class
            name (naming the xml file and the ``<object>`` line); see
            :func:`split_xml_files` for a split list.
    """
    path = Path(path)
    fixes = FixReport() if fixes is None else fixes
    if path.is_file() and is_split_list(path):
        voc_root = split_root(path)
        xml_files = split_xml_files(path)
    elif path.is_file() and path.suffix.lower() == ".xml":    # one image's annotation
        voc_root = path.parent.parent if path.parent.name == ANNOTATIONS_DIR else path.parent
        xml_files = [path]
    elif path.is_dir():
        xml_dir = annotation_dir(path)
        voc_root = xml_dir.parent if xml_dir.name == ANNOTATIONS_DIR else xml_dir
        xml_files = sorted(xml_dir.glob("*.xml"))
        if not xml_files:
            raise DataError("no .xml annotation files", path=xml_dir)
    else:
        raise DataError("VOC dataset folder (or .xml file, or ImageSets/Main/ split list) "
                        "not found", path=path)
    parsed = []
    for xml_path in xml_files:
        root, text = _parse_file(xml_path)
        image = _image_path(root, xml_path, voc_root)
        parsed.append((xml_path, image, _size(root, xml_path, image),
                       _parse_objects(root, text, xml_path)))
    if class_names is None:
        class_names = sorted({obj[0] for *_, objects in parsed for obj in objects})
    index = {name: i for i, name in enumerate(class_names)}
    for xml_path, _, _, objects in parsed:
        for name, _, _, line in objects:
            if name not in index:
                raise DataError(unknown_class(name, class_names), path=xml_path, line=line)
    objects = [obj for *_, file_objects in parsed for obj in file_objects]
    records = make_records(
        [display_path(image) for _, image, _, _ in parsed],
        [size[0] for _, _, size, _ in parsed], [size[1] for _, _, size, _ in parsed],
        np.array([len(file_objects) for *_, file_objects in parsed], np.int64),
        np.array([obj[1] for obj in objects], np.float32).reshape(-1, 4),
        np.array([index[obj[0]] for obj in objects], np.int64), fixes,
        lambda i: str(parsed[i][0]), difficult=np.array([obj[2] for obj in objects], bool))
    return ReadResult(records, list(class_names), sources=[str(p) for p in xml_files])
