"""The image files of a dataset: found, missing, unreadable, mismatched, duplicated.

How deep the files are checked is a trade of time for certainty (``--check-images``):

- ``none``: the files are not looked at (box statistics only).
- ``stat``: each distinct folder is listed once and each file found is ``stat``-ed:
  missing files, folders where files belong and empty files. A folder that does not
  exist costs one call for all its images, so a dataset without its images is checked
  in milliseconds.
- ``header`` (the default): also each file's header is read (PNG, JPEG, BMP without
  decoding; :func:`detkit.data.readers.imagesize.image_size`): unreadable or corrupt
  headers and sizes that differ from the annotation's (a transposed size usually means
  an EXIF rotation the annotation tool applied). JPEG files that do not end with the
  end-of-image marker are counted as truncated (files named ``.jpg``/``.jpeg``; a cut
  download: some decoders fill the missing rows with gray, OpenCV here refuses the
  file). Lines and YOLO datasets skip the header parse, since their readers took the
  sizes from the headers already.
- ``decode``: also every image is decoded (at 1/8 scale, which still reads all of the
  compressed data), catching corrupt image data past the header. This costs a few
  milliseconds per image.

Exact duplicates are found in every mode but ``none``: only files whose byte size is
shared with another file are read, first their leading :data:`HEAD_BYTES` and, where
those agree too, in full (BLAKE2b digests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from detkit.data.readers.imagesize import JPEG_SOI, image_size
from detkit.errors import DataError
from detkit.progress import SILENT, Progress

#: The ``--check-images`` levels, cheapest first.
CHECK_MODES = ("none", "stat", "header", "decode")
#: Bytes hashed first when looking for duplicates (the whole file only where they agree).
HEAD_BYTES = 1 << 12
#: Paths cited in the report for each problem.
MAX_EXAMPLES = 5
#: File name endings of JPEG files (only they are checked for the end marker).
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
#: A JPEG's last two bytes: the end-of-image marker.
JPEG_EOI_BYTES = b"\xff\xd9"
#: Progress is reported every this many files.
PROGRESS_EVERY = 256

# File states (per distinct file).
FOUND, MISSING, NOT_A_FILE, EMPTY, UNREADABLE = range(5)


@dataclasses.dataclass
class ImageCheck:
    """The outcome of :func:`check_images` over the distinct image files.

    Attributes:
        paths: the ``U`` distinct image paths, in first-use order.
        file_of: ``(M,)`` int64 index into ``paths`` of each record.
        state: ``(U,)`` int8 state of each file (``FOUND``, ``MISSING``, ...).
        nbytes: ``(U,)`` int64 file sizes (-1 where unknown).
        mismatch: ``(U,)`` bool, header size differs from the annotated size.
        transposed: ``(U,)`` bool, header size is the annotated size transposed.
        truncated: ``(U,)`` bool, JPEG without its end-of-image marker.
        duplicate_groups: lists of file indices with identical bytes (first use order).
        reasons: file index -> why it is unreadable.
    """

    mode: str
    paths: list[str]
    file_of: np.ndarray
    state: np.ndarray
    nbytes: np.ndarray
    mismatch: np.ndarray
    transposed: np.ndarray
    truncated: np.ndarray
    duplicate_groups: list[list[int]]
    reasons: dict[int, str]

    @property
    def checked(self) -> bool:
        return self.mode != "none"

    def record_states(self) -> np.ndarray:
        """``(M,)`` state of each record's file."""
        return self.state[self.file_of]

    def summary(self) -> dict[str, Any]:
        """The figures of the report's ``images`` section about files."""
        if not self.checked:
            return {"checked": self.mode}
        per_record = self.record_states()
        bad = self.state != FOUND

        def examples(mask: np.ndarray) -> list[str]:
            return [self.paths[i] for i in np.flatnonzero(mask)[:MAX_EXAMPLES].tolist()]

        missing = (self.state == MISSING) | (self.state == NOT_A_FILE)
        unreadable = (self.state == EMPTY) | (self.state == UNREADABLE)
        return {
            "checked": self.mode,
            "files": len(self.paths),
            "found": int((~bad).sum()),
            "missing": int(missing.sum()),
            "unreadable": int(unreadable.sum()),
            "records_missing_or_unreadable": int((per_record != FOUND).sum()),
            "size_mismatch": int(self.mismatch.sum()),
            "size_transposed": int(self.transposed.sum()),
            "truncated_jpeg": int(self.truncated.sum()),
            "duplicates": {
                "groups": len(self.duplicate_groups),
                "files": int(sum(len(g) - 1 for g in self.duplicate_groups)),
                "examples": [[self.paths[i] for i in group]
                             for group in self.duplicate_groups[:MAX_EXAMPLES]],
            },
            "examples": {
                "missing": examples(missing),
                "unreadable": [f"{self.paths[i]}: {self.reasons.get(i, 'unreadable')}"
                               for i in np.flatnonzero(unreadable)[:MAX_EXAMPLES].tolist()],
                "size_mismatch": examples(self.mismatch),
                "truncated_jpeg": examples(self.truncated),
            },
        }


def distinct_paths(image_paths: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(distinct paths in first-use order, (M,) index of each path among them)``."""
    index: dict[str, int] = {}
    file_of = np.fromiter((index.setdefault(p, len(index)) for p in image_paths), np.int64,
                          len(image_paths))
    return list(index), file_of


def stat_files(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """State and byte size of each path, listing every folder once.

    Returns:
        ``(state (U,) int8, nbytes (U,) int64)`` with states ``FOUND``, ``MISSING``,
        ``NOT_A_FILE`` or ``EMPTY``; sizes are -1 where there is no file.
    """
    state = np.full(len(paths), MISSING, np.int8)
    nbytes = np.full(len(paths), -1, np.int64)
    by_folder: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for i, path in enumerate(paths):
        folder, name = os.path.split(path)
        by_folder[folder].append((name, i))
    for folder, items in by_folder.items():
        try:
            with os.scandir(folder or os.curdir) as listing:
                entries = {entry.name: entry for entry in listing}
        except OSError:  # no such folder (or not one): every file in it is missing
            continue
        for name, i in items:
            entry = entries.get(name)
            if entry is None:
                continue
            try:
                if not entry.is_file():
                    state[i] = NOT_A_FILE
                    continue
                nbytes[i] = entry.stat().st_size
            except OSError:
                continue
            state[i] = FOUND if nbytes[i] > 0 else EMPTY
    return state, nbytes


def _jpeg_truncated(path: str) -> bool:
    """Whether ``path`` starts as a JPEG but does not end with the end-of-image marker."""
    with open(path, "rb") as handle:
        if handle.read(len(JPEG_SOI)) != JPEG_SOI:
            return False
        handle.seek(-len(JPEG_EOI_BYTES), os.SEEK_END)
        return handle.read(len(JPEG_EOI_BYTES)) != JPEG_EOI_BYTES


def _decodes(path: str) -> bool:
    """Whether OpenCV decodes ``path`` (at 1/8 scale: all compressed data is read)."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION
    return data.size > 0 and cv2.imdecode(data, flags) is not None


def _digest(path: str, limit: int | None) -> bytes:
    """BLAKE2b of the first ``limit`` bytes of ``path`` (all of it for ``None``)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        if limit is not None:
            digest.update(handle.read(limit))
        else:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.digest()


def find_duplicates(paths: Sequence[str], nbytes: np.ndarray,
                    found: np.ndarray) -> list[list[int]]:
    """Groups of files (indices, first-use order) whose bytes are identical.

    Only files sharing their byte size with another file are read.
    """
    sizes = np.where(found, nbytes, -1)
    _, inverse, counts = np.unique(sizes, return_inverse=True, return_counts=True)
    shared = (counts[inverse.reshape(-1)] > 1) & (sizes > 0)
    groups: dict[tuple, list[int]] = {}
    candidates: dict[tuple, list[int]] = defaultdict(list)
    for i in np.flatnonzero(shared).tolist():
        try:
            candidates[(int(sizes[i]), _digest(paths[i], HEAD_BYTES))].append(i)
        except OSError:
            continue
    for key, members in candidates.items():
        if len(members) < 2:
            continue
        if key[0] <= HEAD_BYTES:  # the head was the whole file
            groups[key] = members
            continue
        for i in members:
            try:
                groups.setdefault((*key, _digest(paths[i], None)), []).append(i)
            except OSError:
                continue
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def check_images(image_paths: Sequence[str], widths: np.ndarray, heights: np.ndarray,
                 mode: str = "header", *, sizes_from_headers: bool = False,
                 progress: Progress = SILENT) -> ImageCheck:
    """Check the image files of ``M`` records (see the module doc for the modes).

    Args:
        image_paths: ``M`` paths (records may share one).
        widths, heights: ``(M,)`` the annotated sizes.
        mode: one of :data:`CHECK_MODES`.
        sizes_from_headers: the reader read the sizes from the headers already (skip
            the header parse; the JPEG end marker is still checked).
        progress: reports the per-file pass of ``header`` and ``decode``.
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"mode must be one of {', '.join(CHECK_MODES)}, got {mode!r}")
    paths, file_of = distinct_paths(image_paths)
    n = len(paths)
    flags = {name: np.zeros(n, bool) for name in ("mismatch", "transposed", "truncated")}
    if mode == "none":
        return ImageCheck(mode, paths, file_of, np.full(n, FOUND, np.int8),
                          np.full(n, -1, np.int64), duplicate_groups=[], reasons={},
                          **flags)
    state, nbytes = stat_files(paths)
    reasons: dict[int, str] = {i: "empty file" for i in np.flatnonzero(state == EMPTY).tolist()}
    if mode in ("header", "decode"):
        first = np.zeros(n, np.int64)
        first[file_of[::-1]] = np.arange(len(file_of))[::-1]  # a record of each file
        annotated = np.stack([np.asarray(widths, np.int64)[first],
                              np.asarray(heights, np.int64)[first]], axis=1)
        found = np.flatnonzero(state == FOUND).tolist()
        progress.start("checking images", len(found))
        for done, i in enumerate(found, start=1):
            path = paths[i]
            try:
                if not sizes_from_headers:
                    size = image_size(path)
                    if tuple(annotated[i]) != size:
                        flags["mismatch"][i] = True
                        flags["transposed"][i] = tuple(annotated[i][::-1]) == size
                if path.lower().endswith(JPEG_SUFFIXES):
                    flags["truncated"][i] = _jpeg_truncated(path)
                if mode == "decode" and not _decodes(path):
                    raise DataError("cannot decode the image data")
            except DataError as err:
                state[i], reasons[i] = UNREADABLE, err.message
            except OSError as err:
                state[i], reasons[i] = UNREADABLE, str(err.strerror or err)
            if done % PROGRESS_EVERY == 0:
                progress.update(done)
        progress.finish()
    groups = find_duplicates(paths, nbytes, state == FOUND)
    return ImageCheck(mode, paths, file_of, state, nbytes, duplicate_groups=groups,
                      reasons=reasons, **flags)
