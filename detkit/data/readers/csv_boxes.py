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
from typing import Iterator

import numpy as np

from detkit.data.fixes import FixReport
from detkit.data.readers.common import (ReadResult, first_existing, make_records,
                                        parse_floats, parse_number, read_text,
                                        unknown_class)
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


#: The largest width or height taken from a table (pixels).
MAX_SIDE = 1 << 20


def _image(name: str, folder: str) -> str:
    """The image file of a ``filename`` cell: beside the CSV, else in ``images/``."""
    beside = os.path.normpath(os.path.join(folder, name))
    inside = os.path.normpath(os.path.join(folder, IMAGES_SUBDIR, name))
    return first_existing([beside, inside]) or beside


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, cells)`` of every row (``line``: where the row ends in the file)."""
    reader = csv.reader(io.StringIO(read_text(path)))
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as err:
        raise DataError(f"malformed CSV: {err}", path=path, line=reader.line_num) from None


def _side(value: str, what: str, path: Path, line: int) -> int:
    """A width or height cell: a whole number of pixels, 0 when empty (unknown)."""
    number = parse_number(value.strip() or "0", what=what, path=path, line=line)
    if number != int(number) or not 0 <= number <= MAX_SIDE:
        raise DataError(f"{what} {value.strip()!r} is not a whole number of pixels in "
                        f"[0, {MAX_SIDE}]", path=path, line=line)
    return int(number)


def _sorted_names(names: set[str]) -> list[str]:
    """Class names in order: numbers by value (``2`` before ``10``), then the rest."""
    return sorted(names, key=lambda name: (0, int(name), "") if name.isdigit()
                  else (1, 0, name))


def read_csv_boxes(path: str | os.PathLike, class_names: list[str] | None = None,
                   fixes: FixReport | None = None) -> ReadResult:
    """Read a CSV box table.

    Returns:
        Records in order of each image's first row (``image_id`` = position, the line
        of that first row as ``source_line``) and class names.

    Raises:
        DataError: no header or a column missing, malformed CSV, a row of another width,
            a row without a filename or naming a folder, a cell that is not a number, a
            size that is no whole number of pixels or disagrees with the image's first
            row, a box without a class or with one outside ``class_names``, a missing
            image (naming the file and line).
    """
    path = Path(path)
    fixes = FixReport() if fixes is None else fixes
    rows = _rows(path)
    header = next(rows, (1, None))[1]
    if not header:
        raise DataError("empty CSV: expected a header row", path=path)
    columns = _columns(header, path)
    folder = str(path.parent)
    order: dict[str, int] = {}                    # image -> line of its first row
    found: dict[str, str] = {}                    # filename cell -> image path
    sizes: dict[str, tuple[int, int]] = {}
    cells, labels, owners, lines = [], [], [], []
    for number, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header) or any(cell.strip() for cell in row[len(header):]):
            raise DataError(f"{len(row)} cells, the header has {len(header)}", path=path,
                            line=number)
        name = row[columns["filename"]].strip()
        if not name:
            raise DataError("a row without a filename", path=path, line=number)
        image = found.get(name) or found.setdefault(name, _image(name, folder))
        if os.path.isdir(image):
            raise DataError(f"filename {name!r} names a folder", path=path, line=number)
        order.setdefault(image, number)
        if "width" in columns and "height" in columns:
            size = (_side(row[columns["width"]], "width", path, number),
                    _side(row[columns["height"]], "height", path, number))
            if sizes.setdefault(image, size) != size:
                raise DataError(f"{name} is {size[0]}x{size[1]} here, "
                                f"{sizes[image][0]}x{sizes[image][1]} on line "
                                f"{order[image]}", path=path, line=number)
        box = [row[columns[field]].strip() for field in BOX_FIELDS]
        if not any(box):                          # an image without boxes
            continue
        label = row[columns["class"]].strip()
        if not label:
            raise DataError("a box without a class", path=path, line=number)
        cells += box
        labels.append(label)
        owners.append(image)
        lines.append(number)
    corners, finite = parse_floats(cells)
    if not finite.all():                          # name the first bad cell
        first = int(np.argmin(finite))
        parse_number(cells[first], what=BOX_FIELDS[first % 4], path=path,
                     line=lines[first // 4])
    if class_names is None:
        class_names = _sorted_names(set(labels))
    index = {label: i for i, label in enumerate(class_names)}
    for label, number in zip(labels, lines):
        if label not in index:
            raise DataError(unknown_class(label, class_names), path=path, line=number)
    position = {image: i for i, image in enumerate(order)}
    owner = np.array([position[image] for image in owners], np.int64)
    by_image = np.argsort(owner, kind="stable")
    widths, heights = [], []
    for image, first in order.items():
        width, height = sizes.get(image, (0, 0))
        if width <= 0 or height <= 0:             # not in the table: the image header's
            width, height = image_size(image, source=path, line=first)
        widths.append(width)
        heights.append(height)
    first_rows = list(order.values())
    records = make_records(
        list(order), widths, heights, np.bincount(owner, minlength=len(order)),
        corners.reshape(-1, 4)[by_image], np.array([index[label] for label in labels],
                                                    np.int64)[by_image], fixes,
        lambda i: f"{path}:{first_rows[i]}", source_lines=first_rows)
    return ReadResult(records, list(class_names))
