"""Image decoding with OpenCV: RGB ``uint8`` arrays, clear errors for bad files.

Images are decoded as stored, without applying an EXIF orientation tag, so pixel
coordinates agree with the width and height in the file header (and with annotations
made against them, as keras-yolo3 and PIL read them).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from detkit.errors import DataError

#: Decode-time reduction factors a JPEG decoder supports, mapped to OpenCV flags.
REDUCE_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def read_image(path: str | os.PathLike, reduce: int = 1) -> np.ndarray:
    """Decode an image file into RGB.

    Args:
        path: image file (JPEG, PNG, BMP, ... anything OpenCV decodes).
        reduce: decode at ``1/reduce`` of the full size (1, 2, 4 or 8). JPEG decoders
            do this in the DCT domain, which is faster than decoding fully and
            resizing, and averages pixels instead of aliasing. The result is about
            ``ceil(width / reduce) x ceil(height / reduce)`` (other formats round down).

    Returns:
        ``(H, W, 3)`` uint8 RGB array (gray and alpha images are converted).

    Raises:
        DataError: the file is missing, unreadable, or not a decodable image; the
            message names the file.
        ValueError: ``reduce`` is not 1, 2, 4 or 8.
    """
    if reduce not in REDUCE_FLAGS:
        raise ValueError(f"reduce must be one of {sorted(REDUCE_FLAGS)}, got {reduce!r}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError("image file not found", path=path) from None
    except IsADirectoryError:
        raise DataError("expected an image file, found a folder", path=path) from None
    except OSError as err:
        raise DataError(f"cannot read image file ({err.strerror or err})", path=path) from None
    image = None
    if data.size:
        image = cv2.imdecode(data, REDUCE_FLAGS[reduce] | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DataError("cannot decode image (corrupt, truncated or not an image)",
                        path=path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def reduce_factor(width: int, height: int, new_width: float, new_height: float) -> int:
    """The largest decode reduction that still leaves at least the target resolution.

    Args:
        width, height: full image size in pixels.
        new_width, new_height: size the whole image will be resized to, in pixels.

    Returns:
        1, 2, 4 or 8: decoding at ``1/factor`` loses no detail the resize would keep.
    """
    factor = 1
    for candidate in sorted(REDUCE_FLAGS)[1:]:
        if width // candidate >= new_width and height // candidate >= new_height:
            factor = candidate
    return factor


def check_size(image: np.ndarray, width: int, height: int, reduce: int,
               path: str | os.PathLike) -> None:
    """Raise :class:`DataError` if a decoded image disagrees with its recorded size.

    Args:
        image: ``(h, w, 3)`` array decoded at ``1/reduce``.
        width, height: the size the annotation records for the image, in pixels.
        reduce: the decode reduction factor used.
        path: the image file, for the message.
    """
    got_h, got_w = image.shape[:2]
    if abs(got_w - width / reduce) >= 1 or abs(got_h - height / reduce) >= 1:
        if reduce == 1:
            found = f"{got_w}x{got_h}"
        else:
            found = f"about {got_w * reduce}x{got_h * reduce}"
        raise DataError(f"image is {found} pixels but its annotation says "
                        f"{width}x{height}", path=path)
