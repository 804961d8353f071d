"""CSV box tables: one box a row, as labelImg's ``xml_to_csv`` and the TF Object Detection
API tutorials write them (``filename,width,height,class,xmin,ymin,xmax,ymax``).

The header names the columns, in any order and case: ``filename`` (or ``image``), ``class``
(or ``label``), ``xmin``, ``ymin``, ``xmax``, ``ymax`` (pixels, as written), and
optionally ``width`` and ``height`` (else read from the image header). An image's rows
need not be adjacent; images keep the order of their first row, and a row whose box cells
are all empty lists an image without boxes. The image file is looked up beside the CSV,
then in ``images/`` beside it. Class names are the given list (a name outside it is an
error naming the row), else every name seen, sorted.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from detkit.data.fixes import FixReport
from detkit.data.readers.common import (ReadResult, display_path, first_existing,
                                        make_records, parse_number, read_text)
from detkit.data.readers.imagesize import image_size
from detkit.errors import DataError

#: Column names a table may use for each field (lower case).
COLUMNS = {"filename": ("filename", "image"), "class": ("class", "label"),
           "xmin": ("xmin",), "ymin": ("ymin",), "xmax": ("xmax",), "ymax": ("ymax",),
           "width": ("width",), "height": ("height",)}
#: Fields every table has.
REQUIRED = ("filename", "class", "xmin", "ymin", "xmax", "ymax")
BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
#: Folder beside the CSV where images are looked for when not beside it.
IMAGES_SUBDIR = "images"


def _columns(header: list[str], path: Path) -> dict[str, int]:
    """Field -> column index of a header row (raises naming the missing ones)."""
    names = [name.strip().lower() for name in header]
    found = {}
    for field, aliases in COLUMNS.items():
        index = next((names.index(a) for a in aliases if a in names), None)
        if index is not None:
            found[field] = index
    missing = [field for field in REQUIRED if field not in found]
    if missing:
        raise DataError(f"the header lacks {', '.join(missing)}: expected the columns "
                        f"filename, class, xmin, ymin, xmax, ymax (and width, height)",
                        path=path, line=1)
    return found


def _image(name: str, folder: Path) -> str:
    """The image file of a ``filename`` cell: beside the CSV, else in ``images/``."""
    candidates = [folder / name, folder / IMAGES_SUBDIR / name]
    return display_path(first_existing(candidates) or candidates[0])


def read_csv_boxes(path: str | os.PathLike, class_names: list[str] | None = None,
                   fixes: FixReport | None = None) -> ReadResult:
    """Read a CSV box table.

    Returns:
        Records in order of each image's first row (``image_id`` = position, the row
        of that first row as ``source_line``) and class names.

    Raises:
        DataError: no header or a column missing, a row of another width, a cell that is
            not a number, a box without a class or with one outside ``class_names``, a
            missing image (naming the file and row).
    """
    path = Path(path)
    fixes = FixReport() if fixes is None else fixes
    rows = list(csv.reader(io.StringIO(read_text(path))))
    if not rows:
        raise DataError("empty CSV: expected a header row", path=path)
    columns = _columns(rows[0], path)
    order: dict[str, int] = {}                    # filename -> first row number
    boxes: dict[str, list[tuple[list[float], str, int]]] = {}
    sizes: dict[str, tuple[str, str]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(rows[0]):
            raise DataError(f"{len(row)} cells, the header has {len(rows[0])}", path=path,
                            line=number)
        name = row[columns["filename"]].strip()
        order.setdefault(name, number)
        boxes.setdefault(name, [])
        if "width" in columns and "height" in columns:
            sizes.setdefault(name, (row[columns["width"]], row[columns["height"]]))
        cells = [row[columns[field]].strip() for field in BOX_FIELDS]
        if not any(cells):                        # an image without boxes
            continue
        corners = [parse_number(cell, what=field, path=path, line=number)
                   for cell, field in zip(cells, BOX_FIELDS)]
        label = row[columns["class"]].strip()
        if not label:
            raise DataError("a box without a class", path=path, line=number)
        boxes[name].append((corners, label, number))
    if class_names is None:
        class_names = sorted({label for found in boxes.values() for _, label, _ in found})
    index = {label: i for i, label in enumerate(class_names)}
    images, widths, heights, counts, corners, classes = [], [], [], [], [], []
    for name, first in order.items():
        image = _image(name, path.parent)
        width, height = (int(parse_number(value.strip() or "0", what=field, path=path,
                                          line=first))
                         for value, field in zip(sizes.get(name, ("0", "0")),
                                                 ("width", "height")))
        if width <= 0 or height <= 0:             # not in the table: the image header's
            width, height = image_size(image, source=path, line=first)
        images.append(image)
        widths.append(width)
        heights.append(height)
        counts.append(len(boxes[name]))
        for box, label, number in boxes[name]:
            if label not in index:
                raise DataError(f"unknown class name {label!r}; known classes: "
                                f"{', '.join(class_names)}", path=path, line=number)
            corners.append(box)
            classes.append(index[label])
    first_rows = list(order.values())
    records = make_records(
        images, widths, heights, np.array(counts, np.int64),
        np.array(corners, np.float32).reshape(-1, 4), np.array(classes, np.int64), fixes,
        lambda i: f"{path}:{first_rows[i]}", source_lines=first_rows)
    return ReadResult(records, list(class_names))
