"""Darknet ``.weights`` files: a small header, then every conv's floats in cfg order.

Layout (little-endian): int32 ``major``, ``minor``, ``revision``; then ``seen`` (images
seen in training) as int64 when ``major * 10 + minor >= 2`` and both are below 1000,
else as int32. Then, for each ``[convolutional]`` in cfg order, float32 values:
with batch norm ``beta, gamma, running_mean, running_variance`` (``filters`` each),
without it the ``bias`` (``filters``); then the kernel ``(filters, in, size, size)``.
A file may stop after any conv (``darknet53.conv.74`` holds the first 52): what it
holds is read, the rest is reported.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from detkit.errors import ArtifactError

#: Bytes of the three int32 version numbers.
VERSION_BYTES = 12
#: Bytes of one float32 value.
FLOAT_BYTES = 4


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """What one conv takes from the file.

    Attributes:
        filters: output channels.
        channels: input channels.
        size: square kernel side.
        batch_normalize: whether beta/gamma/mean/variance precede the kernel.
        name: how messages name it (``conv 5 (layer 7, [convolutional] at line 42)``).
    """

    filters: int
    channels: int
    size: int
    batch_normalize: bool
    name: str

    @property
    def num_floats(self) -> int:
        """Floats this conv occupies in the file."""
        per_channel = 4 if self.batch_normalize else 1
        return self.filters * per_channel + self.filters * self.channels * self.size ** 2


@dataclasses.dataclass
class ConvWeights:
    """One conv's arrays as Darknet stores them (float32).

    Attributes:
        bias: ``(filters,)``: the conv bias, or the batch-norm beta.
        kernel: ``(filters, channels, size, size)``.
        gamma, mean, variance: ``(filters,)`` batch-norm scale and running statistics
            (``None`` without batch norm).
    """

    bias: np.ndarray
    kernel: np.ndarray
    gamma: np.ndarray | None = None
    mean: np.ndarray | None = None
    variance: np.ndarray | None = None


@dataclasses.dataclass
class DarknetWeights:
    """A read weights file.

    Attributes:
        major, minor, revision: the format version.
        seen: images seen in training.
        convs: the convs the file holds, in cfg order (possibly fewer than the cfg's).
        path: the file.
    """

    major: int
    minor: int
    revision: int
    seen: int
    convs: list[ConvWeights]
    path: str


def seen_is_int64(major: int, minor: int) -> bool:
    """Whether ``seen`` is stored as int64 (version 0.2 and later)."""
    return major * 10 + minor >= 2 and major < 1000 and minor < 1000


def read_weights(path: str | os.PathLike, shapes: list[ConvShape]) -> DarknetWeights:
    """Read the header and as many whole convs of ``shapes`` as the file holds.

    Args:
        path: the ``.weights`` file.
        shapes: every conv of the cfg, in cfg order.

    Raises:
        ArtifactError: missing file; a header or float block cut short ("truncated");
            bytes that are not whole floats ("truncated" when fewer floats than the
            cfg needs, else "trailing bytes");
            the file ending inside a conv or holding more floats than the cfg needs
            ("the weights hold N floats after conv K, the cfg needs M"); a negative
            running variance (the floats are out of step with the cfg).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError("Darknet weights file not found", path=path) from None
    except OSError as err:
        raise ArtifactError(f"cannot read the Darknet weights: {err}", path=path) from None
    if len(data) < VERSION_BYTES:
        raise ArtifactError(f"truncated file: {len(data)} bytes, a Darknet weights header "
                            f"needs at least {VERSION_BYTES + 4}", path=path)
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    wide = seen_is_int64(major, minor)
    header = VERSION_BYTES + (8 if wide else 4)
    if len(data) < header:
        raise ArtifactError(f"truncated file: {len(data)} bytes, the header of version "
                            f"{major}.{minor} needs {header}", path=path)
    seen = int(np.frombuffer(data, "<i8" if wide else "<i4", 1, VERSION_BYTES)[0])
    body = len(data) - header
    if body % FLOAT_BYTES:
        raise _odd_bytes(body, sum(shape.num_floats for shape in shapes), path)
    floats = np.frombuffer(data, "<f4", body // FLOAT_BYTES, header)
    convs: list[ConvWeights] = []
    offset = 0
    for number, shape in enumerate(shapes):
        left = floats.size - offset
        if left == 0:
            break
        if left < shape.num_floats:
            raise ArtifactError(f"the weights hold {left} floats after "
                                f"{_conv(number)}, the cfg needs "
                                f"{shape.num_floats} for {shape.name} (a truncated file, "
                                f"or weights of another cfg)", path=path)
        convs.append(_take(floats[offset:offset + shape.num_floats], shape, path))
        offset += shape.num_floats
    left = floats.size - offset
    if left:
        raise ArtifactError(f"the weights hold {left} floats after "
                            f"{_conv(len(shapes))} (the last conv of the cfg), the "
                            f"cfg needs 0: these weights belong to another cfg", path=path)
    if not convs:
        raise ArtifactError("the file holds a header but no conv weights", path=path)
    return DarknetWeights(major, minor, revision, seen, convs, os.fspath(path))


def _odd_bytes(body: int, needed: int, path: Path) -> ArtifactError:
    """The error for ``body`` bytes after the header that are not whole float32 values
    (``needed``: the floats of every conv of the cfg)."""
    whole, extra = divmod(body, FLOAT_BYTES)
    if whole < needed:
        return ArtifactError(f"truncated file: its {body} bytes after the header are not "
                             f"a whole number of float32 values, and hold {whole} of the "
                             f"{needed} the cfg needs", path=path)
    return ArtifactError(f"{extra} trailing byte{'s' if extra > 1 else ''} after "
                         f"{whole} float32 values (the cfg needs {needed}): the {body} "
                         f"bytes after the header are not a whole number of float32 "
                         f"values", path=path)


def _conv(count: int) -> str:
    """``conv K`` after the K-th (1-based) conv, ``the header`` before any."""
    return "the header" if count == 0 else f"conv {count}"


def _take(values: np.ndarray, shape: ConvShape, path: Path) -> ConvWeights:
    """Split one conv's floats into its arrays (copies, float32)."""
    n = shape.filters
    bias = values[:n].copy()
    gamma = mean = variance = None
    start = n
    if shape.batch_normalize:
        gamma, mean, variance = (values[n * i:n * (i + 1)].copy() for i in (1, 2, 3))
        start = 4 * n
        if np.any(variance < 0) or not np.all(np.isfinite(variance)):
            raise ArtifactError(f"{shape.name}: negative or non-finite running variance; "
                                f"the weights are out of step with the cfg (another cfg, "
                                f"or another number of classes)", path=path)
    kernel = values[start:].reshape(n, shape.channels, shape.size, shape.size).copy()
    return ConvWeights(bias, kernel, gamma, mean, variance)
