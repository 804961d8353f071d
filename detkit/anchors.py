"""Anchor files: ``w,h, w,h, ...`` in network-input pixels (the keras-yolo3 format).

Anchors are ``(K, 2)`` float32 arrays of widths and heights, sorted by area. For K = 9
(yolov3) anchors ``[6, 7, 8]`` serve stride 32, ``[3, 4, 5]`` stride 16, ``[0, 1, 2]``
stride 8; for K = 6 (yolov3-tiny) ``[3, 4, 5]`` stride 32 and ``[0, 1, 2]`` stride 16.

A file not sorted by area is used as written (its order decides which scale each anchor
serves, and imported Darknet weights can rely on it) with a warning, unless its manifest
says import-darknet wrote it in that order on purpose.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from detkit.artifacts import DetkitWarning, read_manifest, write_text
from detkit.errors import ArtifactError, DataError, UsageError

#: The byte-order mark some editors (Windows Notepad) write first.
BOM = "\ufeff"

#: Folder of the anchor files shipped with detkit (COCO defaults).
ANCHORS_DIR = Path(__file__).resolve().parent / "anchor_files"

#: Anchors per output scale in the layout of :func:`anchor_masks` (yolov3, yolov3-tiny).
ANCHORS_PER_SCALE = 3

#: Default anchors file name per model.
DEFAULT_ANCHORS = {"yolov3": "yolov3_coco.txt", "yolov3-tiny": "yolov3-tiny_coco.txt"}


def default_anchors_path(model: str) -> Path:
    """The shipped COCO anchors for ``model`` (``yolov3`` or ``yolov3-tiny``)."""
    if model not in DEFAULT_ANCHORS:
        raise UsageError(f"no default anchors for model {model!r}; "
                         f"known: {', '.join(DEFAULT_ANCHORS)}")
    return ANCHORS_DIR / DEFAULT_ANCHORS[model]


def parse_anchors(text: str, *, path: str | os.PathLike | None = None) -> np.ndarray:
    """Parse ``w,h, w,h, ...`` (commas and/or whitespace) into ``(K, 2)`` float32.

    A leading UTF-8 byte-order mark (Windows Notepad) is dropped.

    Raises:
        DataError: not numbers, an odd count, or a non-positive size (names the line).
    """
    values: list[float] = []
    for number, line in enumerate(text.removeprefix(BOM).splitlines(), start=1):
        line = line.split("#", 1)[0]
        for token in line.replace(",", " ").split():
            try:
                value = float(token)
            except ValueError:
                raise DataError(f"anchor value {token!r} is not a number",
                                path=path, line=number) from None
            if not np.isfinite(value) or value <= 0:
                raise DataError(f"anchor sizes must be positive, got {token}",
                                path=path, line=number)
            values.append(value)
    if not values:
        raise DataError("no anchors in file", path=path)
    if len(values) % 2:
        raise DataError(f"odd number of anchor values ({len(values)}): expected w,h pairs",
                        path=path)
    return np.asarray(values, dtype=np.float32).reshape(-1, 2)


#: Commands whose anchors files may list anchors out of area order on purpose.
ORDERED_BY_WRITER = ("import-darknet",)


def load_anchors(path: str | os.PathLike) -> np.ndarray:
    """Read an anchors file into ``(K, 2)`` float32 (input pixels, file order).

    Warns (:class:`detkit.artifacts.DetkitWarning`) when the file is not sorted by area.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("anchors file not found", path=path)
    anchors = parse_anchors(_read_text(path), path=path)
    message = unsorted_message(anchors)
    if message and _writer(path) not in ORDERED_BY_WRITER:
        warnings.warn(f"{path}: {message}", DetkitWarning, stacklevel=2)
    return anchors


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, a leading BOM dropped.

    Raises:
        DataError: unreadable, or a byte that is not UTF-8 (naming its line).
    """
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DataError(f"cannot read the anchors file: {err}", path=path) from None
    except UnicodeDecodeError as err:
        data = err.object  # without the BOM: err.start counts from there
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"byte 0x{data[err.start]:02x} is not UTF-8 text", path=path,
                        line=line) from None


def _writer(path: Path) -> str | None:
    """The command that wrote ``path``, from its manifest (``None``: unknown)."""
    try:
        return read_manifest(path).get("command")
    except ArtifactError:
        return None


def fitted_input_size(path: str | os.PathLike | None) -> int | None:
    """The input side (pixels) an anchors file was fitted at, as the manifest of
    ``kmeans-anchors`` records it (``None``: no such record, or no file)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        manifest = read_manifest(path)
    except ArtifactError:
        return None
    config = manifest.get("config")
    size = config.get("input_size") if isinstance(config, dict) else None
    if manifest.get("command") != "kmeans-anchors" or isinstance(size, bool) \
            or not isinstance(size, int) or size <= 0:
        return None
    return size


def unsorted_message(anchors: np.ndarray) -> str | None:
    """What is wrong with the order of ``anchors`` (``None``: sorted by area)."""
    area = np.asarray(anchors, np.float64).reshape(-1, 2).prod(axis=1)
    drops = np.flatnonzero(np.diff(area) < 0)
    if not len(drops):
        return None
    i = int(drops[0])
    (w1, h1), (w2, h2) = anchors[i], anchors[i + 1]
    return (f"the anchors are not sorted by area (anchor {i + 1}, {w1:g}x{h1:g}, is larger "
            f"than anchor {i + 2}, {w2:g}x{h2:g}); they are used as written, so a finer "
            f"scale gets a larger anchor than a coarser one: sort them by w*h unless "
            f"that is intended")


def sort_by_area(anchors: np.ndarray) -> np.ndarray:
    """``(K, 2)`` anchors sorted by area, ties by width (stable)."""
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
    order = np.lexsort((anchors[:, 0], anchors[:, 0] * anchors[:, 1]))
    return anchors[order]


def format_anchors(anchors: np.ndarray, decimals: int = 0) -> str:
    """``(K, 2)`` -> ``"w,h, w,h, ..."`` with ``decimals`` digits (0: integers)."""
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if decimals == 0:
        anchors = np.maximum(np.round(anchors), 1)
    return ", ".join(f"{w:.{decimals}f},{h:.{decimals}f}" for w, h in anchors)


def save_anchors(path: str | os.PathLike, anchors: np.ndarray, decimals: int = 0) -> Path:
    """Atomically write anchors in the keras-yolo3 one-line format."""
    return write_text(path, format_anchors(anchors, decimals) + "\n")


def anchor_masks(num_anchors: int) -> list[list[int]]:
    """Anchor indices per output scale, coarsest stride first.

    9 -> ``[[6,7,8],[3,4,5],[0,1,2]]``; 6 -> ``[[3,4,5],[0,1,2]]``.
    """
    per_scale = ANCHORS_PER_SCALE
    if num_anchors % per_scale or num_anchors < per_scale:
        raise UsageError(f"need a multiple of {per_scale} anchors ({per_scale} per scale), "
                         f"got {num_anchors}")
    scales = num_anchors // per_scale
    return [[per_scale * s + i for i in range(per_scale)] for s in reversed(range(scales))]


def strides(num_anchors: int) -> list[int]:
    """Output strides, coarsest first: 9 anchors -> ``[32, 16, 8]``, 6 -> ``[32, 16]``."""
    return [32 // 2 ** i for i in range(len(anchor_masks(num_anchors)))]
