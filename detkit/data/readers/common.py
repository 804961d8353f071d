"""Pieces every annotation reader shares: class-id checks, image lookup, record making."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from detkit.data.fixes import FixReport, fix_boxes
from detkit.data.records import ImageRecord
from detkit.errors import DataError

#: File extensions taken as images when a folder is scanned (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclasses.dataclass
class ReadResult:
    """What a reader returns.

    Attributes:
        records: one :class:`ImageRecord` per image, in file order.
        class_names: the names class ids index.
        category_ids: for COCO, the category id of each class index; else ``None``.
    """

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int] | None = None


def read_text(path: Path, what: str = "annotation file") -> str:
    """The UTF-8 text of ``path``.

    Raises:
        DataError: ``"<what> not found"``, a folder, or unreadable (naming the file).
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{what} not found", path=path) from None
    except IsADirectoryError:
        article = "an" if what[0] in "aeiou" else "a"
        raise DataError(f"expected {article} {what}, got a folder", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {what}: {err}", path=path) from None


def read_json(path: str | os.PathLike, what: str = "annotation file") -> Any:
    """Parse the json file ``path``; errors name the file (and the line).

    Raises:
        DataError: see :func:`read_text`, or invalid JSON.
    """
    path = Path(path)
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON: {err.msg}", path=path, line=err.lineno) from None


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one name a line (blank lines skipped).

    Raises:
        DataError: missing or unreadable file, no names, or a name given twice
            (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("class names file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read class names: {err}", path=path) from None
    names: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        name = raw.strip()
        if not name:
            continue
        if name in names:
            raise DataError(f"class name {name!r} is given twice", path=path, line=number)
        names.append(name)
    if not names:
        raise DataError("no class names in the file", path=path)
    return names


def check_class_id(class_id: int, num_classes: int | None, *, path: str | os.PathLike,
                   line: int | None = None) -> None:
    """Raise :class:`DataError` when ``class_id`` is negative or ``>= num_classes``."""
    if class_id < 0 or (num_classes is not None and class_id >= num_classes):
        valid = "a non-negative integer" if num_classes is None else \
            f"0..{num_classes - 1} ({num_classes} classes)"
        raise DataError(f"class id {class_id} out of range: expected {valid}",
                        path=path, line=line)


def index_names(max_class_id: int) -> list[str]:
    """Names ``"0", "1", ...`` for a dataset that stores class ids but no names."""
    return [str(i) for i in range(max_class_id + 1)]


def first_existing(candidates: Iterable[Path]) -> Path | None:
    """The first path of ``candidates`` that is a file, else ``None``."""
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def display_path(path: Path) -> str:
    """``path`` normalized (``a/./b/../c`` -> ``a/c``) as a string, relative kept relative."""
    return os.path.normpath(path)


def make_record(image_path: str | os.PathLike, width: int, height: int, boxes: np.ndarray,
                classes: Sequence[int], report: FixReport, *, where: str | None,
                difficult: Sequence[bool] | None = None,
                iscrowd: Sequence[bool] | None = None, image_id: int = 0,
                source_line: int | None = None) -> ImageRecord:
    """Repair the boxes (clip, drop empty; counted in ``report``) and build the record."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    boxes, keep = fix_boxes(boxes, width, height, report, where)
    classes = np.asarray(classes, dtype=np.int32).reshape(n)[keep]
    difficult = None if difficult is None else np.asarray(difficult, bool).reshape(n)[keep]
    iscrowd = None if iscrowd is None else np.asarray(iscrowd, bool).reshape(n)[keep]
    return ImageRecord(image_path=str(image_path), width=int(width), height=int(height),
                       boxes=boxes[keep], classes=classes, difficult=difficult,
                       iscrowd=iscrowd, image_id=int(image_id), source_line=source_line)


def parse_number(text: str, *, what: str, path: str | os.PathLike,
                 line: int | None = None) -> float:
    """A finite float from ``text``, else :class:`DataError` naming ``what``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DataError(f"malformed {what}: {text!r} is not a number",
                        path=path, line=line) from None
    if not np.isfinite(value):
        raise DataError(f"malformed {what}: {text!r} is not finite", path=path, line=line)
    return value


def parse_class_id(text: str, *, path: str | os.PathLike, line: int | None = None) -> int:
    """An integer class id from ``text`` (``"3"``; ``"3.0"`` is accepted too)."""
    value = parse_number(text, what="class id", path=path, line=line)
    if value != int(value):
        raise DataError(f"malformed class id: {text!r} is not an integer",
                        path=path, line=line)
    return int(value)
