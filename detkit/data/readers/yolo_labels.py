"""YOLO label lines: ``class cx cy w h`` boxes, Ultralytics' polygons and pose lines.

A line of a label file is a box, ``class cx cy w h`` normalized to ``[0, 1]`` by the image
size (a value above :data:`PIXEL_HINT` is an error naming the line: the file holds
pixels); a polygon of a segmentation dataset, ``class x1 y1 x2 y2 x3 y3 ...`` (three or
more normalized points, none beyond :data:`PIXEL_HINT`), read as the box enclosing its
points; or in a pose dataset (``kpt_shape: [K, D]`` in ``data.yaml``) a box followed by
``K * D`` keypoint values, which are dropped. :func:`parse_labels` reads the lines of
every file at once; :func:`check_label_text` checks one file line by line to name the
first bad line.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from detkit.boxes import cxcywh_to_xyxy
from detkit.data.readers.common import (CLASS_ID_LIMIT, check_class_id, parse_class_id,
                                        parse_floats, parse_number)
from detkit.errors import DataError

#: Fields of one label line: ``class cx cy w h``.
LABEL_FIELDS = 5
#: Fewest fields of a polygon line: ``class x1 y1 x2 y2 x3 y3``.
MIN_POLYGON_FIELDS = 7
#: Label values are fractions of the image size; a value above this cannot be one (a box
#: centred two image sides away, or twice the image's size): the file holds pixels.
PIXEL_HINT = 2.0
#: How a malformed line's fields are parsed (a bad row, checked again alone).
_BAD_ROW = ["nan"] * LABEL_FIELDS


def is_polygon(count: int, keypoints: int) -> bool:
    """Whether a line of ``count`` fields is a polygon ``class x1 y1 ... xn yn`` (n >= 3;
    never in a pose dataset, whose lines hold ``keypoints`` values after the box)."""
    return not keypoints and count >= MIN_POLYGON_FIELDS and count % 2 == 1


def _line_shape(keypoints: int) -> str:
    """What a line holds, for the message of a malformed one."""
    if keypoints:
        return f"'class cx cy w h' and {keypoints} keypoint values (kpt_shape of data.yaml)"
    return "'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...'"


def check_label_text(text: str, label_file: Path, num_classes: int | None,
                     keypoints: int) -> None:
    """Every check of one label file, line by line (raises naming the file and line)."""
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        polygon = is_polygon(len(fields), keypoints)
        if len(fields) != LABEL_FIELDS + keypoints and not polygon:
            hint = ("; a pose line? data.yaml's kpt_shape says how many keypoint values "
                    "follow the box" if not keypoints and len(fields) > LABEL_FIELDS else "")
            raise DataError(f"malformed label line {raw.strip()!r}: expected "
                            f"{_line_shape(keypoints)}{hint}", path=label_file, line=number)
        class_id = parse_class_id(fields[0], path=label_file, line=number)
        check_class_id(class_id, num_classes, path=label_file, line=number)
        values = fields[1:] if polygon else fields[1:LABEL_FIELDS]
        numbers = [parse_number(f, what="box", path=label_file, line=number) for f in values]
        if max(map(abs, numbers) if polygon else numbers) > PIXEL_HINT:
            what = "polygon" if polygon else "label"
            raise DataError(
                f"{what} values {' '.join(values)} look like pixel coordinates: YOLO "
                "labels are 'class cx cy w h' divided by the image width and height "
                "(values in [0, 1])", path=label_file, line=number)


class _LabelRows(NamedTuple):
    """Every non-blank label line, as fields to parse at once."""

    #: ``LABEL_FIELDS`` a line: a box line's, a polygon's class and NaNs, or NaNs.
    fields: list[str]
    #: ``(N,)`` the file index of each line.
    files: np.ndarray
    #: ``(N,)`` whether the line has the fields of a box (or box and keypoints) or polygon.
    shaped: np.ndarray
    #: ``(P,)`` line index of each polygon line.
    polygon_lines: np.ndarray
    #: the coordinates of every polygon line, one after the other.
    polygon_fields: list[str]
    #: ``(P,)`` coordinates of each polygon line (even).
    polygon_sizes: np.ndarray


def _label_rows(texts: list[str], keypoints: int) -> _LabelRows:
    """Split the lines of ``texts`` (``keypoints`` values after each box: a pose dataset)."""
    fields, files, shaped = [], [], []
    polygon_lines, polygon_fields, polygon_sizes = [], [], []
    for index, text in enumerate(texts):
        for raw in text.splitlines():
            row = raw.split()
            if not row:
                continue
            polygon = is_polygon(len(row), keypoints)
            if polygon:
                polygon_lines.append(len(files))
                polygon_fields.extend(row[1:])
                polygon_sizes.append(len(row) - 1)
                fields.extend(row[:1] + _BAD_ROW[1:])
            elif len(row) == LABEL_FIELDS + keypoints:
                fields.extend(row[:LABEL_FIELDS])
            else:
                fields.extend(_BAD_ROW)
            shaped.append(polygon or len(row) == LABEL_FIELDS + keypoints)
            files.append(index)
    return _LabelRows(fields, np.array(files, np.int64), np.array(shaped, bool),
                      np.array(polygon_lines, np.int64), polygon_fields,
                      np.array(polygon_sizes, np.int64))


def _enclosing_boxes(fields: list[str], sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """The polygons' enclosing boxes: ``(cxcywh (P, 4), parsed (P,), largest (P,))`` with
    ``largest`` the largest absolute coordinate of each polygon (``sizes``: coordinates of
    each)."""
    values, finite = parse_floats(fields)
    if not len(sizes):
        return np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    xs, ys = values[0::2], values[1::2]        # each polygon starts at an even field
    x1, x2 = np.minimum.reduceat(xs, starts // 2), np.maximum.reduceat(xs, starts // 2)
    y1, y2 = np.minimum.reduceat(ys, starts // 2), np.maximum.reduceat(ys, starts // 2)
    cxcywh = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
    return (cxcywh, np.logical_and.reduceat(finite, starts),
            np.maximum.reduceat(np.abs(values), starts))


def parse_labels(texts: list[str], num_classes: int | None,
                  keypoints: int) -> tuple[np.ndarray, ...]:
    """Parse the label files' lines at once.

    Returns:
        ``(cxcywh (N, 4) float32, classes (N,) int64, file index (N,), first bad file
        index or -1)``: a bad line only marks its file, checked again alone.
    """
    rows = _label_rows(texts, keypoints)
    values, finite = parse_floats(rows.fields)
    values = values.reshape(-1, LABEL_FIELDS)
    finite = finite.reshape(-1, LABEL_FIELDS)
    largest = values[:, 1:].max(axis=1, initial=-np.inf)
    boxes, parsed, polygon_largest = _enclosing_boxes(rows.polygon_fields,
                                                      rows.polygon_sizes)
    values[rows.polygon_lines, 1:] = boxes
    finite[rows.polygon_lines, 1:] = parsed[:, None]
    largest[rows.polygon_lines] = polygon_largest
    classes = values[:, 0]
    limit = CLASS_ID_LIMIT if num_classes is None else num_classes
    ok = rows.shaped & finite.all(axis=1)
    ok &= (classes == np.floor(classes)) & (classes >= 0) & (classes < limit)
    ok &= largest <= PIXEL_HINT
    bad = rows.files[~ok]
    return (np.where(ok[:, None], values[:, 1:], 0).astype(np.float32),
            np.where(ok, classes, 0).astype(np.int64),
            rows.files, int(bad[0]) if len(bad) else -1)


def to_pixels(cxcywh: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """``(N, 4)`` normalized cx, cy, w, h -> ``(N, 4)`` float32 xyxy pixels of the images
    (``(N,)`` sizes)."""
    scale = np.stack([widths, heights, widths, heights], axis=1).astype(np.float32)
    return cxcywh_to_xyxy(cxcywh) * scale
