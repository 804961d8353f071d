"""``--teacher-cache``: the teacher's outputs on the letterboxed images, in HDF5.

Computed once by :func:`write_teacher_cache`, read lazily by :class:`TeacherCache` and
attached to the student's batches by :class:`TeacherOutputBatches`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from detkit.artifacts import atomic_path, sha256_file, sha256_strings, write_manifest
from detkit.bottlenecks import plain_attribute
from detkit.distill.loss import as_list
from detkit.distill.model import TEACHER_KEY
from detkit.distill.scales import StridePair
from detkit.distill.teacher import TeacherSpec
from detkit.errors import ArtifactError, ArtifactMismatchError

#: ``kind`` attribute and layout version of a teacher cache.
CACHE_KIND = "detkit-teacher-outputs"
CACHE_FORMAT_VERSION = 1
#: Storage dtype of cached teacher outputs (raw logits; float16 keeps 3 digits).
CACHE_DTYPE = "float16"
#: Settings a teacher cache must share with the run that reads it.
CACHE_KEYS = ("teacher_model", "teacher_width", "teacher_sha256", "input_size",
              "num_classes", "strides", "num_images", "images_sha256")


def cache_settings(spec: TeacherSpec, *, input_size: int, num_classes: int,
                   pairs: Sequence[StridePair], image_paths: Sequence[str]) -> dict[str, Any]:
    """What a teacher cache depends on (compared with :data:`CACHE_KEYS`)."""
    return {"teacher_model": spec.model, "teacher_width": float(spec.width),
            "teacher_sha256": sha256_file(spec.weights), "input_size": int(input_size),
            "num_classes": int(num_classes),
            "strides": ",".join(str(pair.stride) for pair in pairs),
            "num_images": len(image_paths),
            "images_sha256": sha256_strings(str(p) for p in image_paths)}


def write_teacher_cache(path: str | os.PathLike, teacher: keras.Model, records: Sequence,
                        *, input_size: int, batch_size: int, pairs: Sequence[StridePair],
                        settings: dict[str, Any], inputs: Sequence[Path] = (),
                        workers: int = 1) -> Path:
    """Run the teacher once over every record (letterbox only) and store its outputs.

    Layout (HDF5, written atomically): ``outputs_{i}`` ``(N, G_i, G_i, 3, 5 + C)``
    float16, the teacher's raw outputs at the ``i``-th shared scale (the order of
    ``pairs``), chunked per image; row ``n`` is ``records[n]``. File attributes: ``kind``,
    ``format_version`` and ``settings`` (see :func:`cache_settings`). A sidecar manifest
    (recording ``inputs``, e.g. the teacher's weights) is written beside it.
    """
    import h5py

    from detkit.data.loader import DetectionBatches

    batches = DetectionBatches(records, input_size, batch_size, augment=False,
                               shuffle=False, max_boxes=1, workers=workers)
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["kind"] = CACHE_KIND
            handle.attrs["format_version"] = CACHE_FORMAT_VERSION
            for key, value in settings.items():
                handle.attrs[key] = value
            datasets = None
            for number in range(len(batches)):
                images, _ = batches[number]
                raw = as_list(teacher(images, training=False))
                outputs = [ops.convert_to_numpy(raw[p.teacher_index]).astype(CACHE_DTYPE)
                           for p in pairs]
                if datasets is None:
                    datasets = [handle.create_dataset(
                        f"outputs_{i}", shape=(len(records),) + out.shape[1:],
                        dtype=CACHE_DTYPE, chunks=(1,) + out.shape[1:])
                        for i, out in enumerate(outputs)]
                start = number * batch_size
                for dataset, out in zip(datasets, outputs):
                    dataset[start:start + len(out)] = out
    write_manifest(path, command="distill", config=settings, inputs=inputs,
                   extra={"kind": CACHE_KIND, "format_version": CACHE_FORMAT_VERSION})
    return path


class TeacherCache:
    """Read a teacher cache lazily (one chunk per image); safe to share between threads.

    Raises (on open):
        ArtifactError: missing or unreadable file, or not a teacher cache of this layout.
    """

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError("teacher cache not found", path=self.path)
        try:
            self._handle = h5py.File(self.path, "r")
        except OSError as err:
            raise ArtifactError(f"not a readable HDF5 file ({err})", path=self.path) from None
        attrs = self._handle.attrs
        if attrs.get("kind") != CACHE_KIND:
            self.close()
            raise ArtifactError(f"not a teacher cache (kind {attrs.get('kind')!r})",
                                path=self.path)
        if int(attrs.get("format_version", -1)) != CACHE_FORMAT_VERSION:
            self.close()
            raise ArtifactError(f"teacher cache format_version "
                                f"{attrs.get('format_version')} is not supported; delete "
                                f"it to recompute", path=self.path)
        self.settings = {key: plain_attribute(value) for key, value in attrs.items()}
        scales = sum(1 for key in self._handle if key.startswith("outputs_"))
        self._datasets = [self._handle[f"outputs_{i}"] for i in range(scales)]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._datasets[0].shape[0]) if self._datasets else 0

    def check(self, expected: dict[str, Any]) -> None:
        """Raise :class:`ArtifactMismatchError` naming every setting that differs."""
        from detkit.bottlenecks import describe_differences

        lines = describe_differences(str(self.path), self.settings, "this run", expected,
                                     keys=CACHE_KEYS)
        if lines:
            raise ArtifactMismatchError(f"the teacher cache was computed for another run "
                                        f"({'; '.join(lines)}): delete it to recompute it")

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, ...]:
        """Rows ``indices`` of every scale: a tuple of ``(len(indices), G, G, 3, 5 + C)``."""
        indices = np.asarray(indices, dtype=np.int64)
        unique, inverse = np.unique(indices, return_inverse=True)
        with self._lock:
            rows = [dataset[unique] for dataset in self._datasets]
        return tuple(row[inverse] for row in rows)

    def close(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            handle.close()


class TeacherOutputBatches(keras.utils.PyDataset):
    """Batches of ``base`` with the cached teacher outputs added to their targets.

    ``targets[TEACHER_KEY]`` is the tuple of :meth:`TeacherCache.read` for the batch's
    records (``base`` must be a non-augmented
    :class:`~detkit.data.loader.DetectionBatches` whose encoder returns a dict).
    """

    def __init__(self, base: keras.utils.PyDataset, cache: TeacherCache):
        super().__init__(workers=base.workers, use_multiprocessing=base.use_multiprocessing,
                         max_queue_size=base.max_queue_size)
        self.base = base
        self.cache = cache

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        images, targets = self.base[index]
        size = self.base.batch_size
        records = self.base.order[index * size:(index + 1) * size]
        return images, {**targets, TEACHER_KEY: self.cache.read(records)}

    def on_epoch_begin(self) -> None:
        self.base.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.base.on_epoch_end()
