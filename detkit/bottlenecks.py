"""Bottleneck caches: a frozen model part's outputs for every image, in one HDF5 file.

Layout of ``bottlenecks.h5`` (format version 1):

- ``features_{i}``: ``(N, H_i, W_i, C_i)`` float16 (or float32), one dataset per output
  scale, coarsest stride first, chunked per image ``(1, H_i, W_i, C_i)`` and compressed
  only where a trial on the first batch shows that it pays (see :func:`choose_filters`).
- ``image_paths``: ``(N,)`` UTF-8 strings, the image of each row.
- ``image_bytes``, ``image_mtime_ns``, ``image_sha256``: ``(N,)`` stamps of the image file
  each row was computed from (size, modification time in ns, hex sha256; -1 and empty
  where the file could not be read). A reader refuses the cache when an image that is
  still there has other bytes now (:func:`first_changed_image`); caches written before
  the stamps existed have none and are not compared.
- file attributes: ``kind``, ``format_version``, the settings of :class:`CacheSettings`
  (model, width, split, input size, dtype, weights sha256, image-list sha256), ``n_done``
  (rows written so far) and ``complete``.

A run writes ``.NAME.partial`` beside ``NAME``, flushes after every batch and bumps
``n_done``; only a finished run sets ``complete`` and renames the file onto ``NAME``, so an
interrupted run never leaves a file that looks complete, and ``resume=True`` continues the
partial file from row ``n_done``. Reads are lazy (one chunk per image), so a cache larger
than memory streams through :class:`CachedFeatureBatches`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import keras
import numpy as np

from detkit.artifacts import (check_fresh, settings_agree, sha256_file,
                              sha256_strings)
from detkit.choices import COMPRESSIONS, DTYPES  # noqa: F401 (re-exported)
from detkit.data.records import same_image_paths
from detkit.errors import (ArtifactError, ArtifactMismatchError, TrainingError,
                           UsageError)

#: ``kind`` attribute of a bottleneck cache.
KIND = "detkit-bottlenecks"
#: Layout version written and read by this module.
FORMAT_VERSION = 1
#: gzip level used for ``gzip`` (1: fast; higher levels gain little on activations).
GZIP_LEVEL = 1
#: ``auto`` compresses only when the file gets at least this fraction smaller.
MIN_SAVING = 0.15
#: ``auto`` prefers lzf (faster to read) unless gzip is this much smaller still.
GZIP_ADVANTAGE = 0.10
#: The per-row stamps of the image files (see the module docstring).
STAMP_DATASETS = ("image_bytes", "image_mtime_ns", "image_sha256")
#: Settings that must agree between a cache and the command that uses it.
MATCH_KEYS = ("model", "width", "backbone", "split", "input_size", "weights_sha256",
              "num_images", "images_sha256")


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """What a cache was computed from; a consumer must agree on all of it.

    Attributes:
        model: architecture name (``yolov3``, ``yolov3-tiny``).
        width: channel width multiplier.
        split: where the model is cut (see :mod:`detkit.bottleneck_training`).
        input_size: network input side in pixels.
        weights_sha256: sha256 of the weights file the frozen part was loaded from.
        image_paths: the images, one per cache row, in order.
        dtype: storage dtype, ``float16`` or ``float32``.
        backbone: the body (``--backbone``, resolved); ``None`` for caches that predate it
            (then not compared).
    """

    model: str
    width: float
    split: str
    input_size: int
    weights_sha256: str
    image_paths: tuple[str, ...]
    dtype: str = "float16"
    backbone: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        object.__setattr__(self, "image_paths", tuple(str(p) for p in self.image_paths))

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    @property
    def images_sha256(self) -> str:
        return sha256_strings(self.image_paths)

    def attrs(self) -> dict[str, Any]:
        """The scalar settings, as stored in the file's attributes."""
        attrs = {"model": self.model, "width": float(self.width), "split": self.split,
                 "input_size": int(self.input_size), "dtype": self.dtype,
                 "weights_sha256": self.weights_sha256, "num_images": self.num_images,
                 "images_sha256": self.images_sha256}
        if self.backbone is not None:
            attrs["backbone"] = self.backbone
        return attrs


def partial_path(path: str | os.PathLike) -> Path:
    """Where an unfinished cache ``dir/NAME`` is written: ``dir/.NAME.partial``."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def describe_differences(name_a: str, a: Mapping[str, Any], name_b: str,
                         b: Mapping[str, Any], keys: Sequence[str] = MATCH_KEYS) -> list[str]:
    """One phrase per key of ``keys`` present in both mappings whose values differ
    (``width: a has 0.25, b has 0.125``; a message joins them with ``;``)."""
    lines = []
    for key in keys:
        if key not in a or key not in b:
            continue
        va, vb = a[key], b[key]
        if not settings_agree(va, vb):
            lines.append(f"{key}: {name_a} has {va}, {name_b} has {vb}")
    return lines


def first_image_difference(a: Sequence[str], b: Sequence[str]) -> str | None:
    """Where two image lists first differ, in words (``None`` when equal)."""
    for index, (pa, pb) in enumerate(zip(a, b)):
        if pa != pb:
            return f"image {index}: {pa} vs {pb}"
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} images"
    return None


def check_settings(name: str, found: Mapping[str, Any], expected: CacheSettings,
                   found_images: Sequence[str] | None = None,
                   expected_name: str = "this command") -> None:
    """Raise :class:`ArtifactMismatchError` naming every setting that differs.

    Args:
        name: how to call the cache in the message (its path).
        found: the cache's settings (:attr:`BottleneckCache.settings`).
        expected: what the consumer computes for itself.
        found_images: the cache's image list, to name the first differing image.
        expected_name: how to call the consumer.
    """
    wanted = expected.attrs()
    keys = [key for key in MATCH_KEYS if key != "dtype"]
    lines = describe_differences(name, found, expected_name, wanted, keys)
    images_differ = str(found.get("images_sha256")) != expected.images_sha256
    if found_images is not None and images_differ:
        where = first_image_difference(list(found_images), list(expected.image_paths))
        if where:
            lines.append(f"first difference: {where}")
    if lines:
        raise ArtifactMismatchError(
            f"bottleneck cache {name} does not match {expected_name} ({'; '.join(lines)}): "
            f"re-run cache-bottlenecks with the same model, weights and images")


# --------------------------------------------------------------------------- image stamps

def _stat(path: str) -> tuple[int, int]:
    """``(size in bytes, modification time in ns)`` of a file; ``(-1, -1)`` when absent."""
    try:
        found = os.stat(path)
    except OSError:
        return -1, -1
    return found.st_size, found.st_mtime_ns


def _add_stamp_datasets(handle: h5py.File, num_images: int) -> None:
    """Create the empty stamp datasets (rows not stamped yet read as unknown)."""
    for name in ("image_bytes", "image_mtime_ns"):
        handle.create_dataset(name, shape=(num_images,), dtype="int64", fillvalue=-1)
    handle.create_dataset("image_sha256", shape=(num_images,), dtype="S64")


def _stamp_rows(handle: h5py.File, lo: int, hi: int) -> None:
    """Record the size, time and sha256 of the image files of rows ``lo:hi``."""
    paths = [plain_attribute(p) for p in handle["image_paths"][lo:hi]]
    stats = [_stat(path) for path in paths]
    digests = []
    for path, (size, _) in zip(paths, stats):
        try:
            digests.append(sha256_file(path).encode("ascii") if size >= 0 else b"")
        except OSError:
            digests.append(b"")
    handle["image_bytes"][lo:hi] = [size for size, _ in stats]
    handle["image_mtime_ns"][lo:hi] = [mtime for _, mtime in stats]
    handle["image_sha256"][lo:hi] = digests


def first_changed_image(handle: h5py.File, paths: Sequence[str] | None = None
                        ) -> tuple[int, str] | None:
    """The first row whose image file has other bytes than when it was cached.

    Files that are gone (moved data, another machine) and rows without a stamp are not
    compared; a file whose size and modification time are as recorded is taken as the
    same, otherwise its sha256 decides (a copy or a ``touch`` is not a change).

    Args:
        paths: where the rows' images are now (the same files spelled from another
            folder); default: the paths the cache recorded.

    Returns:
        ``(row, image path)``, or ``None`` when every image still there is unchanged.
    """
    if not all(name in handle for name in STAMP_DATASETS):
        return None
    if paths is None:
        paths = [plain_attribute(p) for p in handle["image_paths"][:]]
    sizes, mtimes = handle["image_bytes"][:], handle["image_mtime_ns"][:]
    digests = handle["image_sha256"][:]
    for row, path in enumerate(paths):
        if sizes[row] < 0 or not digests[row]:
            continue
        size, mtime = _stat(path)
        if size < 0 or (size == sizes[row] and mtime == mtimes[row]):
            continue
        if size != sizes[row] or sha256_file(path).encode("ascii") != digests[row]:
            return row, path
    return None


def _stale(path: Path, changed: tuple[int, str]) -> ArtifactMismatchError:
    """The error for a cache whose image ``changed`` (``(row, path)``) has other bytes."""
    row, image = changed
    return ArtifactMismatchError(f"stale: image {row} ({image}) changed after the cache was "
                                 f"made (another sha256); re-run cache-bottlenecks", path=path)


# --------------------------------------------------------------------------- writing

@dataclasses.dataclass(frozen=True)
class FilterChoice:
    """HDF5 filter of one feature dataset: ``compression`` (None, "lzf", "gzip")."""

    compression: str | None
    shuffle: bool
    ratio: float  # compressed / raw bytes on the trial batch (1.0 when uncompressed)

    def kwargs(self) -> dict[str, Any]:
        if self.compression is None:
            return {}
        extra = {"compression_opts": GZIP_LEVEL} if self.compression == "gzip" else {}
        return {"compression": self.compression, "shuffle": self.shuffle, **extra}


def _trial_size(array: np.ndarray, **filters: Any) -> int:
    """Bytes ``array`` (``(B, H, W, C)``) takes in an in-memory HDF5 file with ``filters``."""
    with h5py.File(io.BytesIO(), "w") as handle:
        dset = handle.create_dataset("x", data=array, chunks=(1, *array.shape[1:]), **filters)
        handle.flush()
        return dset.id.get_storage_size()


def choose_filters(sample: np.ndarray, compression: str = "auto") -> FilterChoice:
    """Pick the HDF5 filter of one feature dataset from a trial on ``sample``.

    Args:
        sample: ``(B, H, W, C)`` features in their storage dtype (the first batch).
        compression: ``auto`` (measure none/lzf/gzip, compress only if it saves at least
            :data:`MIN_SAVING`, prefer lzf unless gzip is :data:`GZIP_ADVANTAGE` smaller),
            or one of ``none``, ``lzf``, ``gzip`` to force it.
    """
    if compression not in COMPRESSIONS:
        raise UsageError(f"--compression must be one of {', '.join(COMPRESSIONS)}, "
                         f"got {compression!r}")
    raw = max(1, sample.nbytes)
    if compression == "none":
        return FilterChoice(None, False, 1.0)
    if compression in ("lzf", "gzip"):
        choice = FilterChoice(compression, True, 1.0)
        return dataclasses.replace(choice, ratio=_trial_size(sample, **choice.kwargs()) / raw)
    lzf = FilterChoice("lzf", True, 1.0)
    gzip = FilterChoice("gzip", True, 1.0)
    lzf = dataclasses.replace(lzf, ratio=_trial_size(sample, **lzf.kwargs()) / raw)
    gzip = dataclasses.replace(gzip, ratio=_trial_size(sample, **gzip.kwargs()) / raw)
    best = gzip if gzip.ratio < lzf.ratio - GZIP_ADVANTAGE else lzf
    if best.ratio > 1.0 - MIN_SAVING:
        return FilterChoice(None, False, 1.0)
    return best


@dataclasses.dataclass
class WriteReport:
    """What :func:`write_cache` did.

    Attributes:
        path: the finished cache.
        num_images: rows in the cache.
        computed: rows computed by this run (less than ``num_images`` after a resume).
        resumed_from: ``n_done`` of the partial file this run continued (0: fresh start).
        shapes: ``(H, W, C)`` of each scale.
        compression: the filter chosen per scale (``None``: stored raw).
        compression_ratio: stored / raw bytes per scale, measured on the trial batch.
        file_bytes: size of the file on disk.
        raw_bytes_per_image: uncompressed bytes of one image's features.
        notes: warnings for the user (e.g. an unreadable partial file was restarted).
    """

    path: Path
    num_images: int
    computed: int
    resumed_from: int
    shapes: list[tuple[int, int, int]]
    compression: list[str | None]
    compression_ratio: list[float]
    file_bytes: int
    raw_bytes_per_image: int
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def bytes_per_image(self) -> float:
        return self.file_bytes / max(1, self.num_images)


def _open_partial(tmp: Path, settings: CacheSettings, notes: list[str]) -> h5py.File | None:
    """Re-open an unfinished cache for appending, or ``None`` when it cannot be used."""
    try:
        handle = h5py.File(tmp, "r+")
    except OSError as err:
        notes.append(f"partial cache {tmp} is unreadable ({err}); starting over")
        return None
    attrs = dict(handle.attrs)
    if attrs.get("kind") != KIND or int(attrs.get("format_version", -1)) != FORMAT_VERSION:
        handle.close()
        notes.append(f"partial cache {tmp} has another layout; starting over")
        return None
    lines = describe_differences(str(tmp), attrs, "this command", settings.attrs(),
                                 keys=MATCH_KEYS + ("dtype",))
    if lines:
        handle.close()
        raise ArtifactMismatchError(
            f"cannot resume: the partial cache was started with other settings "
            f"({'; '.join(lines)}): run without --resume to start over, with --exist-ok, "
            f"which replaces it", path=tmp)
    if not all(name in handle for name in STAMP_DATASETS):  # started by an older detkit
        _add_stamp_datasets(handle, settings.num_images)
    return handle


def _create(tmp: Path, settings: CacheSettings, first: list[np.ndarray],
            compression: str) -> tuple[h5py.File, list[FilterChoice]]:
    """Create the partial file with one dataset per scale, sized from the first batch."""
    choices = [choose_filters(feature, compression) for feature in first]
    handle = h5py.File(tmp, "w")
    for index, (feature, choice) in enumerate(zip(first, choices)):
        shape = tuple(feature.shape[1:])
        dset = handle.create_dataset(f"features_{index}", shape=(settings.num_images, *shape),
                                     dtype=settings.dtype, chunks=(1, *shape),
                                     **choice.kwargs())
        dset.attrs["compression_ratio"] = choice.ratio
    names = handle.create_dataset("image_paths", shape=(settings.num_images,),
                                  dtype=h5py.string_dtype("utf-8"))
    names[:] = list(settings.image_paths)
    _add_stamp_datasets(handle, settings.num_images)
    handle.attrs.update(settings.attrs())
    handle.attrs.update(kind=KIND, format_version=FORMAT_VERSION, n_done=0, complete=False,
                        num_scales=len(first))
    handle.flush()
    return handle, choices


def partial_settings(path: str | os.PathLike) -> dict[str, Any] | None:
    """The settings of the unfinished cache of ``path`` (``None``: none, or unreadable)."""
    tmp = partial_path(path)
    if not tmp.is_file():
        return None
    try:
        with h5py.File(tmp, "r") as handle:
            attrs = {key: plain_attribute(value) for key, value in handle.attrs.items()}
    except OSError:
        return None
    return attrs if attrs.get("kind") == KIND else None


def check_resumable(path: str | os.PathLike, settings: Mapping[str, Any]) -> None:
    """Before any model is built: refuse to resume a partial cache made with other
    settings, naming each one (``the partial cache was made with width 0.125``).

    Args:
        path: the cache being written (its partial file is checked).
        settings: this command's values of any of :data:`MATCH_KEYS` and ``dtype``.

    Raises:
        ArtifactMismatchError: naming the partial file and every differing setting.
    """
    found = partial_settings(path)
    if found is None:
        return
    differing = []
    for key in (*MATCH_KEYS, "dtype"):
        if key in found and key in settings and describe_differences(
                "a", found, "b", settings, keys=(key,)):
            differing.append((key, found[key], settings[key]))
    if differing:
        made = ", ".join(f"{key} {_shown(old)}" for key, old, _ in differing)
        wanted = ", ".join(f"{key} {_shown(new)}" for key, _, new in differing)
        raise ArtifactMismatchError(
            f"cannot resume: the partial cache was made with {made}, this command has "
            f"{wanted}; run without --resume to start over (with --exist-ok, which "
            f"replaces it) or resume with the same options", path=partial_path(path))


def _shown(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 20 else text[:12] + "..."


def write_cache(path: str | os.PathLike, settings: CacheSettings,
                compute: Callable[[np.ndarray], Sequence[np.ndarray]], *,
                batch_size: int = 8, compression: str = "auto", resume: bool = False,
                progress: Callable[[int, int], None] | None = None,
                before_commit: Callable[[Path, WriteReport], Any] | None = None
                ) -> WriteReport:
    """Compute and store the features of every image, incrementally and resumably.

    Args:
        path: the cache file to create (``.h5``).
        settings: what the features are computed from (one row per image path).
        compute: ``indices (B,) int -> [(B, H_i, W_i, C_i), ...]`` features of those
            images (letterboxed, no augmentation), coarsest stride first.
        batch_size: images per call of ``compute`` (and per flush).
        compression: see :func:`choose_filters`.
        resume: continue ``.NAME.partial`` if it exists and has the same settings.
        progress: called as ``progress(done, total)`` after every batch.
        before_commit: called as ``before_commit(partial file, report)`` once the cache
            is complete, before it is renamed onto ``path`` (write the manifest there,
            so the cache appears only with it).

    Returns:
        A :class:`WriteReport`.

    Raises:
        ArtifactMismatchError: ``resume`` on a partial file made with other settings.
        UsageError: bad ``batch_size``, ``compression`` or dtype, or features beyond the
            storage dtype's range.
        TrainingError: non-finite features.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if settings.num_images == 0:
        raise UsageError("no images to cache")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    notes: list[str] = []
    handle = _open_partial(tmp, settings, notes) if resume and tmp.exists() else None
    if resume and not tmp.exists():
        notes.append("nothing to resume: no partial cache; starting a fresh one")
    total = settings.num_images
    start = int(handle.attrs["n_done"]) if handle is not None else 0
    resumed_from = start
    storage = np.dtype(settings.dtype)
    try:
        if handle is None:
            first_indices = np.arange(min(batch_size, total))
            first = _to_storage(compute(first_indices), storage, first_indices)
            handle, _ = _create(tmp, settings, first, compression)
            _store(handle, first_indices, first)
            start = len(first_indices)
            if progress:
                progress(start, total)
        for begin in range(start, total, batch_size):
            indices = np.arange(begin, min(begin + batch_size, total))
            _store(handle, indices, _to_storage(compute(indices), storage, indices))
            if progress:
                progress(int(indices[-1]) + 1, total)
        handle.attrs["complete"] = True
        report = _report(handle, path, total - resumed_from, resumed_from, notes)
    finally:
        if handle is not None:
            handle.close()
    report.file_bytes = tmp.stat().st_size
    if before_commit is not None:
        before_commit(tmp, report)
    os.replace(tmp, path)
    return report


def _to_storage(features: Sequence[np.ndarray], storage: np.dtype,
                indices: np.ndarray) -> list[np.ndarray]:
    """Cast features to the storage dtype, refusing values it cannot hold.

    Raises:
        TrainingError: non-finite features (a broken body or weights).
        UsageError: finite values beyond the storage dtype's range (float16: 65504), as
            an untrained body with inference-mode BatchNorm gives; names the image.
    """
    limit = float(np.finfo(storage).max)
    out = []
    for feature in features:
        feature = np.asarray(feature)
        per_image = np.abs(feature.reshape(len(feature), -1)).max(axis=1)
        if not np.all(np.isfinite(per_image)):
            bad = int(indices[int(np.argmin(np.isfinite(per_image)))])
            raise TrainingError(f"the frozen part gives NaN/Inf features for image {bad}; "
                                f"check the weights")
        if per_image.max() > limit:
            bad = int(indices[int(np.argmax(per_image))])
            raise UsageError(f"features of image {bad} reach |x| = {per_image.max():.3g}, "
                             f"beyond the range of {storage.name} ({limit:.6g}); use "
                             f"--dtype float32 (an untrained body often does this)")
        out.append(feature.astype(storage))
    return out


def _store(handle: h5py.File, indices: np.ndarray, features: list[np.ndarray]) -> None:
    """Write rows ``indices`` (consecutive) of every scale, then bump ``n_done``, flush."""
    count = int(handle.attrs["num_scales"])
    if len(features) != count:
        raise ArtifactError(f"the model gives {len(features)} feature maps, the cache "
                            f"holds {count}")
    lo, hi = int(indices[0]), int(indices[-1]) + 1
    for index, feature in enumerate(features):
        dset = handle[f"features_{index}"]
        if feature.shape != (hi - lo, *dset.shape[1:]):
            raise ArtifactError(f"features of scale {index} have shape {feature.shape}, "
                                f"the cache expects {(hi - lo, *dset.shape[1:])}")
        dset[lo:hi] = feature
    _stamp_rows(handle, lo, hi)
    handle.attrs["n_done"] = hi
    handle.flush()


def _report(handle: h5py.File, path: Path, computed: int, resumed_from: int,
            notes: list[str]) -> WriteReport:
    dsets = [handle[f"features_{i}"] for i in range(int(handle.attrs["num_scales"]))]
    return WriteReport(
        path=path, num_images=int(handle.attrs["num_images"]), computed=computed,
        resumed_from=resumed_from, shapes=[tuple(d.shape[1:]) for d in dsets],
        compression=[d.compression for d in dsets],
        compression_ratio=[float(d.attrs.get("compression_ratio", 1.0)) for d in dsets],
        file_bytes=0,
        raw_bytes_per_image=int(sum(np.prod(d.shape[1:]) * d.dtype.itemsize for d in dsets)),
        notes=notes)


# --------------------------------------------------------------------------- reading

class BottleneckCache:
    """Lazy reader of a finished cache; rows are read one chunk (image) at a time.

    The HDF5 file is opened on first use and re-opened after pickling, so the reader can
    be handed to loader workers.

    Args:
        path: a cache written by :func:`write_cache`.

    Raises:
        ArtifactError: missing, unreadable, another kind or layout, or incomplete.
        ArtifactMismatchError: stale (an input recorded in its manifest, or an image
            file still there, changed since).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handle: h5py.File | None = None
        handle = self._file()
        try:
            check_fresh(self.path, remake="cache-bottlenecks")
            changed = first_changed_image(handle)
        except Exception:
            self.close()
            raise
        if changed is not None:
            self.close()
            raise _stale(self.path, changed)
        attrs = dict(handle.attrs)
        self.settings: dict[str, Any] = {key: plain_attribute(attrs[key]) for key in
                                         (*MATCH_KEYS, "dtype") if key in attrs}
        self.num_scales = int(attrs["num_scales"])
        self._dsets = [handle[f"features_{i}"] for i in range(self.num_scales)]
        self.shapes = [tuple(int(s) for s in d.shape[1:]) for d in self._dsets]
        self.dtype = np.dtype(self._dsets[0].dtype)

    def _file(self) -> h5py.File:
        if self._handle is None:
            if not self.path.exists():
                hint = (" (an unfinished run left "
                        f"{partial_path(self.path).name}: use cache-bottlenecks --resume)"
                        if partial_path(self.path).exists() else "")
                raise ArtifactError(f"bottleneck cache not found{hint}", path=self.path)
            try:
                handle = h5py.File(self.path, "r")
            except OSError as err:
                raise ArtifactError(f"not a readable HDF5 file ({err})", path=self.path) from None
            kind = plain_attribute(handle.attrs.get("kind", ""))
            version = int(handle.attrs.get("format_version", -1))
            if kind != KIND:
                handle.close()
                raise ArtifactError(f"not a bottleneck cache (kind {kind or 'missing'!r})",
                                    path=self.path)
            if version != FORMAT_VERSION:
                handle.close()
                raise ArtifactError(f"format_version {version} is not supported (this "
                                    f"detkit reads {FORMAT_VERSION}); re-create the cache",
                                    path=self.path)
            if not bool(handle.attrs.get("complete", False)):
                done, total = int(handle.attrs.get("n_done", 0)), handle.attrs.get("num_images")
                handle.close()
                raise ArtifactError(f"incomplete cache ({done} of {total} images); re-run "
                                    f"cache-bottlenecks with --resume", path=self.path)
            self._handle = handle
            self._dsets = [handle[f"features_{i}"] for i in
                           range(int(handle.attrs["num_scales"]))]
        return self._handle

    def __len__(self) -> int:
        return int(self.settings["num_images"])

    @property
    def image_paths(self) -> list[str]:
        """The image of each row, in order."""
        return [plain_attribute(p) for p in self._file()["image_paths"][:]]

    @property
    def raw_bytes_per_image(self) -> int:
        """Uncompressed bytes of one image's features (all scales)."""
        return int(sum(np.prod(s) for s in self.shapes) * self.dtype.itemsize)

    def read(self, indices: Sequence[int] | np.ndarray,
             dtype: str | np.dtype = "float32") -> list[np.ndarray]:
        """Features of rows ``indices`` (any order), one ``(B, H_i, W_i, C_i)`` per scale."""
        self._file()
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"rows {indices.min()}..{indices.max()} outside a cache of "
                             f"{len(self)} images")
        out = []
        for dset, shape in zip(self._dsets, self.shapes):
            batch = np.empty((len(indices), *shape), dtype=self.dtype)
            for slot, row in enumerate(indices):
                dset.read_direct(batch, np.s_[row:row + 1], np.s_[slot:slot + 1])
            out.append(batch.astype(dtype, copy=False))
        return out

    def check(self, expected: CacheSettings, expected_name: str = "this command") -> None:
        """Raise :class:`ArtifactMismatchError` unless the cache matches ``expected``
        (its images may be spelled from another folder: their bytes are then compared
        where they are now)."""
        images = self.image_paths if self.settings.get("images_sha256") != \
            expected.images_sha256 else None
        if images is not None and same_image_paths(images, expected.image_paths) is None:
            changed = first_changed_image(self._file(), list(expected.image_paths))
            if changed is not None:
                raise _stale(self.path, changed)
            expected, images = dataclasses.replace(expected, image_paths=images), None
        check_settings(str(self.path), self.settings, expected, images, expected_name)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "BottleneckCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_dsets"] = []
        return state


def plain_attribute(value: Any) -> Any:
    """HDF5 attribute -> plain Python (bytes -> str, NumPy scalars -> Python)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- batches

class CachedFeatureBatches(keras.utils.PyDataset):
    """Batches of cached features paired with their training targets.

    Yields ``(features, targets)`` with ``features`` a tuple of ``(B, H_i, W_i, C_i)``
    float32 arrays (coarsest first) and ``targets = targets_fn(indices)``, e.g.
    ``labels.dense_batch`` of a labels file (per-scale ``(B, S_i, S_i, 3, 6)``). Rows are
    read lazily, one HDF5 chunk per image, so the cache may be larger than memory.

    The shuffled order of an epoch depends only on ``(seed, epoch)``, so a resumed run
    sees the same orders; ``fit`` moves to the next epoch through :meth:`on_epoch_end`.

    Args:
        cache: a :class:`BottleneckCache`.
        targets_fn: ``indices (B,) int -> targets`` (any pytree of arrays).
        batch_size: images per batch (the last batch may be smaller).
        shuffle: a new order every epoch (else the rows' order).
        seed: seed of the shuffling.
        indices: the rows to use (default: all), e.g. a training split.
        epoch: the epoch to start at.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` of PyDataset.
    """

    def __init__(self, cache: BottleneckCache, targets_fn: Callable[[np.ndarray], Any],
                 batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 indices: Sequence[int] | None = None, epoch: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
        self.cache = cache
        self.targets_fn = targets_fn
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rows = np.arange(len(cache)) if indices is None else np.asarray(indices, int)
        if self.rows.size == 0:
            raise UsageError("no cached images to train on")
        self._paths: list[str] | None = None
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` and its order of the rows."""
        self.epoch = int(epoch)
        self.order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.rows)
                      if self.shuffle else self.rows.copy())

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def batch_indices(self, index: int) -> np.ndarray:
        """Cache rows of batch ``index`` of the current epoch."""
        return self.order[index * self.batch_size:(index + 1) * self.batch_size]

    def batch_images(self, index: int) -> list[str]:
        """Image paths of batch ``index`` (e.g. for a NaN report naming the images)."""
        if self._paths is None:
            self._paths = self.cache.image_paths
        return [self._paths[int(row)] for row in self.batch_indices(index)]

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range ({len(self)} batches)")
        rows = self.batch_indices(index)
        return tuple(self.cache.read(rows)), self.targets_fn(rows)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)
