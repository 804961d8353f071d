"""Image sizes from file headers (PNG ``IHDR``, JPEG ``SOF``, BMP), without decoding.

Readers call :func:`image_size` only when an annotation format does not store the size
(keras-yolo3 lines, YOLO txt). Other formats fall back to a full OpenCV decode. The size
is the stored one: EXIF orientation is not applied (as keras-yolo3 and PIL do not).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

from detkit.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
BMP_SIGNATURE = b"BM"
#: JPEG start-of-frame markers (``0xC0``-``0xCF`` except DHT, JPG and DAC).
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field (TEM, RST0-7, SOI).
JPEG_STANDALONE_MARKERS = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])
JPEG_EOI, JPEG_SOS = 0xD9, 0xDA


class _Corrupt(Exception):
    """A header that cannot be parsed."""


def image_size(path: str | os.PathLike, *, source: str | os.PathLike | None = None,
               line: int | None = None) -> tuple[int, int]:
    """``(width, height)`` in pixels of the image file ``path``.

    Args:
        path: the image file.
        source, line: the annotation file (and line) that names the image; errors
            cite it, so the user knows which entry to fix.

    Raises:
        DataError: the file is missing, unreadable, corrupt or not an image.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise _error(f"image file not found: {Path(name)}", path, source, line)
    try:
        with open(name, "rb") as handle:
            head = handle.read(32)
            if head.startswith(PNG_SIGNATURE):
                size = _png_size(head)
            elif head.startswith(JPEG_SOI):
                size = _jpeg_size(handle)
            elif head.startswith(BMP_SIGNATURE):
                size = _bmp_size(head)
            else:
                size = _decoded_size(Path(name))
    except OSError as err:
        raise _error(f"cannot read image {Path(name)}: {err.strerror or err}", path, source,
                     line) from None
    except _Corrupt as err:
        raise _error(f"corrupt or unsupported image {Path(name)}: {err}", path, source,
                     line) from None
    if size[0] <= 0 or size[1] <= 0:
        raise _error(f"corrupt image {Path(name)}: size {size[0]}x{size[1]}", path, source,
                     line)
    return size


def _error(message: str, path: str | os.PathLike, source: str | os.PathLike | None,
           line: int | None) -> DataError:
    """The error citing ``source`` (and ``line``) when given, else the image itself."""
    return DataError(message, path=source if source is not None else Path(path), line=line)


def _png_size(head: bytes) -> tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise _Corrupt("PNG without an IHDR chunk")
    return struct.unpack(">II", head[16:24])


def _bmp_size(head: bytes) -> tuple[int, int]:
    if len(head) < 26:
        raise _Corrupt("truncated BMP header")
    width, height = struct.unpack("<ii", head[18:26])
    return width, abs(height)


def _read_exact(handle: BinaryIO, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise _Corrupt("truncated JPEG header")
    return data


def _jpeg_size(handle: BinaryIO) -> tuple[int, int]:
    """Walk the JPEG marker segments up to the first start-of-frame."""
    handle.seek(2)
    while True:
        byte = _read_exact(handle, 1)
        if byte != b"\xff":
            raise _Corrupt("JPEG marker expected")
        marker = 0xFF
        while marker == 0xFF:  # fill bytes may precede a marker
            marker = _read_exact(handle, 1)[0]
        if marker in JPEG_STANDALONE_MARKERS:
            continue
        if marker in (JPEG_EOI, JPEG_SOS):
            raise _Corrupt("no frame header before the image data")
        length = struct.unpack(">H", _read_exact(handle, 2))[0]
        if length < 2:
            raise _Corrupt("bad JPEG segment length")
        if marker in JPEG_SOF_MARKERS:
            segment = _read_exact(handle, 5)
            height, width = struct.unpack(">HH", segment[1:5])
            return width, height
        handle.seek(length - 2, os.SEEK_CUR)


def _decoded_size(path: Path) -> tuple[int, int]:
    """Fallback for other formats (GIF, WebP, TIFF, ...): decode with OpenCV."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise _Corrupt("not an image OpenCV can decode")
    return int(image.shape[1]), int(image.shape[0])
