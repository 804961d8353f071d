"""Pieces every annotation reader shares: class-id checks, image lookup, record making.

Readers check and convert whole columns with NumPy (one pass per field, not per box); where
a column holds a bad entry, the first one is checked again by the per-entry function, which
raises the message naming its file and line (or image id). :func:`make_records` repairs the
boxes of all images at once and splits them into records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from detkit.data.fixes import MAX_EXAMPLES, FixReport, fix_boxes, moved
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
        sources: the files read besides the dataset path and the images (VOC xml, YOLO
            label files, a class names file or ``data.yaml`` found beside).
    """

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int] | None = None
    sources: Sequence[str] = ()


#: Text files are UTF-8; a leading byte order mark (Windows editors write one) is dropped.
TEXT_ENCODING = "utf-8-sig"
#: Class ids are stored as int32: at most this many classes.
CLASS_ID_LIMIT = 2 ** 31 - 1
#: Integers (ids, sizes) must fit in int64.
INT64_LIMIT = 2 ** 63
#: :func:`lookup` uses a direct table when the keys span at most this many times their count.
DENSE_LOOKUP = 8


def unknown_class(name: str, class_names: Sequence[str], note: str = "") -> str:
    """``unknown class name 'x' (note); known classes: a, b``, noting a known name that
    differs from ``name`` only in case."""
    notes = [note] if note else []
    notes += [f"differs only in case from {known!r}" for known in class_names
              if known.casefold() == name.casefold()][:1]
    told = f" ({'; '.join(notes)})" if notes else ""
    return f"unknown class name {name!r}{told}; known classes: {', '.join(class_names)}"


def read_text(path: Path, what: str = "annotation file") -> str:
    """The UTF-8 text of ``path``, without a leading byte order mark.

    Raises:
        DataError: ``"<what> not found"``, a folder, or unreadable (naming the file).
    """
    try:
        with open(path, encoding=TEXT_ENCODING) as handle:
            return handle.read()
    except FileNotFoundError:
        raise DataError(f"{what} not found", path=path) from None
    except IsADirectoryError:
        article = "an" if what[0] in "aeiou" else "a"
        raise DataError(f"expected {article} {what}, got a folder", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {what}: {err}", path=path) from None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many containers are made.

    Parsing a large json or making a record per image allocates hundreds of thousands of
    objects, none of them cyclic garbage; the collector would scan them repeatedly.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_json(path: str | os.PathLike, what: str = "annotation file") -> Any:
    """Parse the json file ``path``; errors name the file (and the line).

    Raises:
        DataError: see :func:`read_text`, or invalid JSON.
    """
    path = Path(path)
    text = read_text(path, what)
    try:
        with gc_paused():
            return json.loads(text)
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
        text = path.read_text(encoding=TEXT_ENCODING)
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


def check_given_names(given: Sequence[str], own: Sequence[str], own_file: Path) -> None:
    """Class names given for a dataset whose labels are class indices (YOLO, keras-yolo3
    lines) must agree with the names the dataset itself gives them, as far as both go.

    Raises:
        DataError: naming ``own_file`` and the first index whose names differ.
    """
    for index, (mine, theirs) in enumerate(zip(given, own)):
        if mine != theirs:
            raise DataError(f"names class {index} {theirs!r}, the class names given (--classes, "
                            f"or the training data's) name it {mine!r}: the labels are class "
                            f"indices, so the two lists must agree", path=own_file)


def check_class_id(class_id: int, num_classes: int | None, *, path: str | os.PathLike,
                   line: int | None = None) -> None:
    """Raise :class:`DataError` when ``class_id`` is negative or ``>= num_classes``."""
    limit = CLASS_ID_LIMIT if num_classes is None else num_classes
    if class_id < 0 or class_id >= limit:
        if num_classes is not None:
            valid = f"0..{num_classes - 1} ({num_classes} classes)"
        else:
            valid = "a non-negative integer" if class_id < 0 else f"at most {limit - 1}"
        raise DataError(f"class id {class_id} out of range: expected {valid}",
                        path=path, line=line)


def index_names(max_class_id: int) -> list[str]:
    """Names ``"0", "1", ...`` for a dataset that stores class ids but no names."""
    return [str(i) for i in range(max_class_id + 1)]


def first_existing(candidates: Iterable[str | os.PathLike]) -> str | os.PathLike | None:
    """The first path of ``candidates`` that is a file, else ``None``."""
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return None


def join_path(folder: str, name: str) -> str:
    """``str(Path(folder) / name)``, without making Path objects for plain names.

    ``folder`` is a path as ``str(Path(...))`` writes it.
    """
    if _needs_pathlib(name):
        return str(Path(folder) / name)
    if name.startswith(os.sep) or folder in ("", "."):
        return name
    return folder.rstrip(os.sep) + os.sep + name


def _needs_pathlib(name: str) -> bool:
    """Whether ``name`` has parts that pathlib would normalize (``//``, ``.``, a
    trailing separator)."""
    sep = os.sep
    return (not name or name.startswith(".") or name.endswith((sep, sep + "."))
            or (sep + sep) in name or (sep + "." + sep) in name)


def display_path(path: str | os.PathLike) -> str:
    """``path`` normalized (``a/./b/../c`` -> ``a/c``) as a string, relative kept relative."""
    return os.path.normpath(path)


def ancestor(path: Path, levels: int = 1) -> Path:
    """The folder ``levels`` above ``path``: relative when ``path`` names that many
    folders (``a/b/c`` -> ``a``), else absolute (``.``, ``..``, ``train``)."""
    if len(path.parts) > levels and ".." not in path.parts:
        return path.parents[levels - 1]
    return Path(os.path.abspath(path)).parents[levels - 1]


def display_join(folder: str, name: str) -> str:
    """``display_path(Path(folder) / name)``, fast for plain names (no ``..``)."""
    joined = join_path(folder, name)
    return display_path(joined) if ".." in joined else joined


def display_joins(folder: str, names: Sequence[str]) -> list[str]:
    """``[display_join(folder, name) for name in names]``, fast when every name is plain.

    The names are tested all at once, joined by newlines: no name may start with a
    separator or a dot, end with a separator (or ``/.``), or hold ``//``, ``/./``, ``..``
    or a newline; otherwise each name goes through :func:`display_join`.
    """
    names = list(names)
    sep = os.sep
    text = "\n" + "\n".join(names) + "\n"
    plain = (names and text.count("\n") == len(names) + 1 and "\n\n" not in text
             and not any(bad in text for bad in (
                 "\n" + sep, "\n.", sep + "\n", sep + ".\n", sep + sep, sep + "." + sep,
                 "..")))
    if os.altsep:  # Windows: the other separator also needs pathlib
        plain = plain and os.altsep not in text
    if not plain:
        return [display_join(folder, name) for name in names]
    if folder in ("", "."):
        return names
    prefix = folder.rstrip(sep) + sep
    if ".." in prefix:
        return [display_join(folder, name) for name in names]
    return [prefix + name for name in names]


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


#: The fields of a normally made empty record (defaults for :func:`make_records`).
_DEFAULT_FIELDS = dict(ImageRecord("", 0, 0, np.zeros((0, 4)), []).__dict__)
#: The fields :func:`make_records` sets for each record.
_RECORD_FIELDS = ("image_path", "width", "height", "boxes", "classes", "difficult",
                  "iscrowd", "image_id", "source_line")


def make_records(image_paths: Sequence[str], widths: Sequence[int], heights: Sequence[int],
                 counts: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                 report: FixReport, where: Callable[[int], str | None], *,
                 difficult: np.ndarray | None = None, iscrowd: np.ndarray | None = None,
                 image_ids: Sequence[int] | None = None,
                 source_lines: Sequence[int | None] | None = None) -> list[ImageRecord]:
    """Repair the boxes of many images at once (as :func:`make_record` does one by one).

    The records' arrays are views into one array per field (one allocation, not ``M``).

    Args:
        image_paths, widths, heights: ``M`` images, sizes in pixels.
        counts: ``(M,)`` boxes of each image; image ``i`` owns the next ``counts[i]`` rows.
        boxes: ``(N, 4)`` xyxy pixels, ``N = counts.sum()``, grouped by image in order.
        classes: ``(N,)`` class ids.
        report: the repair counts to update; its example locations are ``where(i)`` of
            the first images with a repaired box.
        difficult, iscrowd: ``(N,)`` flags, or ``None`` (all False).
        image_ids: ``M`` ids (default: positions); source_lines: ``M`` line numbers.

    Returns:
        ``M`` records, in order.
    """
    counts = np.asarray(counts, np.int64).reshape(-1)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    owner = np.repeat(np.arange(len(counts)), counts)
    sizes = np.asarray([widths, heights], np.int64).reshape(2, -1)
    box_sizes = sizes[:, owner, None].astype(np.float32)
    tally = FixReport()
    fixed, keep = fix_boxes(boxes, box_sizes[0], box_sizes[1], tally)
    _add_fixes(report, tally, owner[~keep | moved(fixed, boxes)], where)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(owner[keep], minlength=len(counts)))])
    arrays = [fixed[keep], np.asarray(classes, np.int32).reshape(-1)[keep]]
    arrays += [np.zeros(len(arrays[0]), bool) if f is None
               else np.asarray(f, bool).reshape(-1)[keep] for f in (difficult, iscrowd)]
    ids = range(len(counts)) if image_ids is None else image_ids
    lines = [None] * len(counts) if source_lines is None else source_lines
    boxes, classes, difficult, iscrowd = arrays
    new, cls = object.__new__, ImageRecord
    # Fields of ImageRecord set here by name; any other keeps a normal record's default.
    other_fields = {key: value for key, value in _DEFAULT_FIELDS.items()
                    if key not in _RECORD_FIELDS}
    records = []
    append = records.append
    with gc_paused():
        # One dict per record, its arrays views of the shared ones (no per-record
        # __post_init__ conversions: a third of the reading time of a large dataset).
        for path, width, height, start, end, image_id, line in zip(
                image_paths, sizes[0].tolist(), sizes[1].tolist(), bounds[:-1].tolist(),
                bounds[1:].tolist(), ids, lines):
            record = new(cls)
            record.__dict__ = {
                "image_path": path, "width": width, "height": height,
                "boxes": boxes[start:end], "classes": classes[start:end],
                "difficult": difficult[start:end], "iscrowd": iscrowd[start:end],
                "image_id": int(image_id), "source_line": line}
            if other_fields:
                record.__dict__.update(other_fields)
            append(record)
    return records


def _add_fixes(report: FixReport, tally: FixReport, repaired_owners: np.ndarray,
               where: Callable[[int], str | None]) -> None:
    """Add ``tally``'s counts to ``report``, citing the first images with repairs.

    ``repaired_owners`` is sorted: the image of every repaired box.
    """
    report.dropped_degenerate += tally.dropped_degenerate
    report.dropped_outside += tally.dropped_outside
    report.clipped += tally.clipped
    starts = np.flatnonzero(np.diff(repaired_owners, prepend=-1))
    for owner in repaired_owners[starts].tolist():
        if len(report.examples) >= MAX_EXAMPLES:
            break
        report.note(where(owner))


def column(entries: Sequence[Any], key: str) -> list[Any]:
    """``entry.get(key)`` of every entry (``None`` for a missing key or a non-dict entry)."""
    try:
        return [entry[key] for entry in entries]
    except (KeyError, TypeError, IndexError):
        return [entry.get(key) if isinstance(entry, dict) else None for entry in entries]


def raise_first_bad(ok: np.ndarray, check: Callable[[int], None]) -> None:
    """Run ``check(i)`` (the per-entry check that raises) on the first entry not ``ok``."""
    bad = first_bad(ok)
    if bad is not None:
        check(bad)
        raise AssertionError(f"entry {bad} failed a column check but passed its own check")


def lookup(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each query in ``keys`` (``(K,)`` int64, unique) and whether it is there.

    Returns:
        ``(positions (N,) int64, found (N,) bool)``; positions of missing queries are 0.
    """
    keys, queries = np.asarray(keys, np.int64).reshape(-1), np.asarray(queries, np.int64)
    if not len(keys):
        return np.zeros(len(queries), np.int64), np.zeros(len(queries), bool)
    low, high = int(keys.min()), int(keys.max())
    if high - low < DENSE_LOOKUP * len(keys):
        table = np.full(high - low + 1, -1, np.int64)
        table[keys - low] = np.arange(len(keys))
        inside = (queries >= low) & (queries <= high)
        positions = np.where(inside, table[np.where(inside, queries - low, 0)], -1)
        found = positions >= 0
    else:
        sorter = np.argsort(keys, kind="stable")
        index = np.minimum(np.searchsorted(keys, queries, sorter=sorter), len(keys) - 1)
        positions = sorter[index]
        found = keys[positions] == queries
    return np.where(found, positions, 0), found


def group_order(groups: np.ndarray, count: int) -> np.ndarray:
    """The stable order that groups ``(N,)`` values in ``[0, count)`` (as
    ``np.argsort(groups, kind="stable")``, faster: a radix sort on int16, or an
    unstable sort of keys made unique by the position)."""
    groups = np.asarray(groups, np.int64).reshape(-1)
    if count <= np.iinfo(np.int16).max:
        return np.argsort(groups.astype(np.int16), kind="stable")
    n = len(groups)
    if count * max(n, 1) < INT64_LIMIT // 2:
        return np.argsort(groups * n + np.arange(n))
    return np.argsort(groups, kind="stable")


def first_bad(ok: np.ndarray) -> int | None:
    """Index of the first ``False`` in ``ok`` (a ``(N,)`` bool mask), else ``None``."""
    bad = np.flatnonzero(~np.asarray(ok, bool))
    return int(bad[0]) if len(bad) else None


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integral number (an ``int``, or a float such as ``3.0``)
    that fits in int64. ``bool`` is not a number here, and neither are NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not (math.isfinite(value) and value == int(value)):
        return False
    return -INT64_LIMIT <= value < INT64_LIMIT


def int_column(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` int64 values and ``(N,)`` mask of :func:`is_integer` (bad ones read 0)."""
    if set(map(type, values)) <= {int}:
        try:
            return np.fromiter(values, np.int64, len(values)), np.ones(len(values), bool)
        except OverflowError:
            pass
    ok = np.fromiter(map(is_integer, values), bool, len(values))
    ints = [int(v) if good else 0 for v, good in zip(values, ok.tolist())]
    return np.array(ints, np.int64).reshape(-1), ok


def float_rows(rows: Sequence[Any], width: int) -> np.ndarray | None:
    """``(N, width)`` float64 of ``N`` lists of ``width`` values, else ``None``.

    Values convert as Python's ``float`` does (``"1.5"`` and ``True`` too); ``None``
    becomes NaN. ``None`` is returned when a row is not a list or tuple of ``width``
    scalars; callers then check the rows one by one.
    """
    if not set(map(type, rows)) <= {list, tuple} or set(map(len, rows)) - {width}:
        return None
    try:
        flat = np.fromiter(itertools.chain.from_iterable(rows), np.float64,
                           width * len(rows))
    except (TypeError, ValueError, OverflowError):
        return None
    return flat.reshape(-1, width)


def parse_floats(fields: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` float64 of ``float(field)`` and ``(N,)`` ok mask (parsed and finite).

    The same syntax as :func:`parse_number` (Python's ``float``); bad fields are NaN.
    """
    try:
        values = np.fromiter(map(float, fields), np.float64, len(fields))
    except (TypeError, ValueError):
        values = np.fromiter(map(_float_or_nan, fields), np.float64, len(fields))
    return values, np.isfinite(values)


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


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
