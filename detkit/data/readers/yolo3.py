"""keras-yolo3 lines: ``image_path x1,y1,x2,y2,class x1,y1,x2,y2,class ...``, one image a line.

Coordinates are pixels of the image (xyxy, 0-based, ``x2`` exclusive), class ids index the
class names. Blank lines and lines starting with ``#`` are skipped. Image paths are split
on whitespace like keras-yolo3 does, so they cannot contain spaces.

A relative image path is looked up first beside the lines file, then relative to the
working directory (keras-yolo3's convention), so a dataset folder can be moved as a whole.
Image sizes are read from the image headers. A record's ``image_id`` is its 0-based
position among the file's records, its ``source_line`` the 1-based line number.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detkit.data.fixes import FixReport
from detkit.data.readers.common import (ReadResult, check_class_id, display_path,
                                        first_existing, index_names, make_record,
                                        parse_class_id, parse_number, read_text)
from detkit.data.readers.imagesize import image_size
from detkit.data.records import ImageRecord
from detkit.errors import DataError

#: Fields of one box: ``x1,y1,x2,y2,class``.
BOX_FIELDS = 5
COMMENT = "#"


def resolve_image(token: str, lines_dir: Path, *, path: Path, line: int) -> Path:
    """Where the image named ``token`` on line ``line`` of ``path`` is.

    Raises:
        DataError: neither beside the lines file nor relative to the working directory.
    """
    image = Path(token)
    if image.is_absolute():
        candidates = [image]
    else:
        candidates = [lines_dir / image, image]
    found = first_existing(candidates)
    if found is None:
        looked = " or ".join(dict.fromkeys(display_path(c) for c in candidates))
        raise DataError(f"image file not found: {token} (looked for {looked})",
                        path=path, line=line)
    return found


def parse_box(token: str, *, path: Path, line: int) -> tuple[list[float], int]:
    """``"x1,y1,x2,y2,class"`` -> ``([x1, y1, x2, y2], class)``."""
    fields = token.split(",")
    if len(fields) != BOX_FIELDS:
        raise DataError(f"malformed box {token!r}: expected x1,y1,x2,y2,class",
                        path=path, line=line)
    coords = [parse_number(f, what=f"box {token!r}", path=path, line=line)
              for f in fields[:4]]
    return coords, parse_class_id(fields[4], path=path, line=line)


def read_yolo3_lines(path: str | os.PathLike, class_names: list[str] | None = None,
                     fixes: FixReport | None = None) -> ReadResult:
    """Read a keras-yolo3 lines file.

    Args:
        path: the lines file.
        class_names: the names class ids index; ``None`` names them ``"0", "1", ...``.
        fixes: counts of repaired boxes to update.

    Returns:
        The records (``image_id`` = position, ``source_line`` = line) and class names.

    Raises:
        DataError: missing file, malformed line, class id out of range, missing or
            unreadable image (naming the file and line).
    """
    path = Path(path)
    fixes = FixReport() if fixes is None else fixes
    num_classes = None if class_names is None else len(class_names)
    text = read_text(path)
    lines_dir = path.parent
    sizes: dict[Path, tuple[int, int]] = {}
    records: list[ImageRecord] = []
    max_class = -1
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if not tokens or tokens[0].startswith(COMMENT):
            continue
        boxes, classes = [], []
        for token in tokens[1:]:
            coords, class_id = parse_box(token, path=path, line=number)
            check_class_id(class_id, num_classes, path=path, line=number)
            boxes.append(coords)
            classes.append(class_id)
            max_class = max(max_class, class_id)
        image = resolve_image(tokens[0], lines_dir, path=path, line=number)
        if image not in sizes:
            sizes[image] = image_size(image, source=path, line=number)
        width, height = sizes[image]
        records.append(make_record(
            display_path(image), width, height, np.asarray(boxes, np.float32), classes,
            fixes, where=f"{path}:{number}", image_id=len(records), source_line=number))
    if class_names is None:
        class_names = index_names(max_class)
    return ReadResult(records, list(class_names))
