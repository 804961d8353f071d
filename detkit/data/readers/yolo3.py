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

import dataclasses
import os
from pathlib import Path

import numpy as np

from detkit.data.fixes import FixReport
from detkit.data.readers.common import (CLASS_ID_LIMIT, ReadResult, check_class_id,
                                        display_join, display_path, first_existing,
                                        index_names, join_path, make_records,
                                        parse_class_id, parse_floats, parse_number,
                                        read_text)
from detkit.data.readers.imagesize import image_size
from detkit.errors import DataError

#: Fields of one box: ``x1,y1,x2,y2,class``.
BOX_FIELDS = 5
COMMENT = "#"
#: What a box token of the wrong shape is parsed as (a bad box, checked again alone).
_BAD_TOKEN = ",".join(["nan"] * BOX_FIELDS)


@dataclasses.dataclass
class _Line:
    """One image line: its 1-based number, image token and box tokens."""

    number: int
    image: str
    boxes: list[str]


@dataclasses.dataclass
class _Boxes:
    """Boxes of all lines: ``(N, 4)`` float64 xyxy, ``(N,)`` class ids, ``(L,)`` boxes per
    line, and the index of the first line with a bad box (``None`` if none)."""

    boxes: np.ndarray
    classes: np.ndarray
    counts: np.ndarray
    first_bad_line: int | None


def resolve_image(token: str, lines_dir: str, *, path: Path, line: int) -> str:
    """Where the image named ``token`` on line ``line`` of ``path`` is (a path string
    as ``str(Path(...))`` writes it).

    Raises:
        DataError: neither beside the lines file nor relative to the working directory.
    """
    image = join_path("", token)
    candidates = [image] if os.path.isabs(image) else [join_path(lines_dir, token), image]
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
        hint = ("" if len(fields) > 1 else " (a space in the image path? the fields of a "
                "line are separated by spaces, so a path cannot hold one)")
        raise DataError(f"malformed box {token!r}: expected x1,y1,x2,y2,class{hint}",
                        path=path, line=line)
    coords = [parse_number(f, what=f"box {token!r}", path=path, line=line)
              for f in fields[:4]]
    return coords, parse_class_id(fields[4], path=path, line=line)


def _check_line_boxes(line: _Line, num_classes: int | None, path: Path) -> None:
    """Every check of one line's boxes, in token order (raises naming the line)."""
    for token in line.boxes:
        _, class_id = parse_box(token, path=path, line=line.number)
        check_class_id(class_id, num_classes, path=path, line=line.number)


def _split_lines(text: str) -> list[_Line]:
    """The image lines of a lines file (blank and ``#`` comment lines skipped)."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if tokens and not tokens[0].startswith(COMMENT):
            lines.append(_Line(number, tokens[0], tokens[1:]))
    return lines


def _parse_boxes(lines: list[_Line], num_classes: int | None) -> _Boxes:
    """Parse every box token at once; bad boxes only mark their line (checked later)."""
    tokens = [token for line in lines for token in line.boxes]
    counts = np.array([len(line.boxes) for line in lines], np.int64)
    shaped = np.array([token.count(",") == BOX_FIELDS - 1 for token in tokens], bool)
    if not shaped.all():
        tokens = [t if ok else _BAD_TOKEN for t, ok in zip(tokens, shaped.tolist())]
    values, finite = parse_floats(",".join(tokens).split(",") if tokens else [])
    values = values.reshape(-1, BOX_FIELDS)
    ok = finite.reshape(-1, BOX_FIELDS).all(axis=1)
    classes = values[:, 4]
    ok &= (classes == np.floor(classes)) & (classes >= 0)
    ok &= classes < (CLASS_ID_LIMIT if num_classes is None else num_classes)
    bad_lines = np.repeat(np.arange(len(lines)), counts)[~ok]
    return _Boxes(values[:, :4], np.where(ok, classes, 0).astype(np.int64), counts,
                  int(bad_lines[0]) if len(bad_lines) else None)


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
    lines = _split_lines(read_text(path))
    parsed = _parse_boxes(lines, num_classes)
    lines_dir = str(path.parent)
    sizes: dict[str, tuple[int, int]] = {}
    images, widths, heights = [], [], []
    for index, line in enumerate(lines):
        if index == parsed.first_bad_line:
            _check_line_boxes(line, num_classes, path)
            raise AssertionError(f"line {line.number} failed a column check only")
        image = resolve_image(line.image, lines_dir, path=path, line=line.number)
        if image not in sizes:
            sizes[image] = image_size(image, source=path, line=line.number)
        images.append(display_join("", image))
        widths.append(sizes[image][0])
        heights.append(sizes[image][1])
    records = make_records(
        images, widths, heights, parsed.counts, parsed.boxes, parsed.classes, fixes,
        lambda i: f"{path}:{lines[i].number}", source_lines=[ln.number for ln in lines])
    if class_names is None:
        class_names = index_names(int(parsed.classes.max(initial=-1)))
    return ReadResult(records, list(class_names))
