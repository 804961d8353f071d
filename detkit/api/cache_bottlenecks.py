"""``cache-bottlenecks``: run the frozen part of a detector once over every image.

Without ``--weights`` (a from-scratch demo) the model is initialized from ``--seed`` and
its weights are saved beside the cache as ``NAME.init.weights.h5`` (recorded in the
manifest); ``train --stage 1 --bottlenecks NAME`` without ``--weights`` starts from that
file, so the heads are trained on features of exactly the body they will sit on.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

#: Images per forward pass (and per HDF5 flush).
DEFAULT_BATCH_SIZE = 8


@dataclasses.dataclass
class CacheBottlenecksResult:
    """What ``cache-bottlenecks`` wrote.

    Attributes:
        path: the cache (``.h5``); manifest: its sidecar manifest.
        init_weights: the saved from-scratch weights (``None`` when ``--weights`` given).
        num_images: rows; computed: rows computed by this run; resumed_from: rows found.
        shapes: ``(H, W, C)`` per scale; dtype: storage dtype; split: where the model is cut.
        compression: filter per scale (``None``: raw).
        file_bytes: cache size on disk; raw_bytes_per_image: uncompressed row size.
        notes: warnings (weights partly loaded, dataset fixes, restarted partial file).
    """

    path: Path
    manifest: Path
    init_weights: Path | None
    num_images: int
    computed: int
    resumed_from: int
    shapes: list[tuple[int, int, int]]
    dtype: str
    split: str
    compression: list[str | None]
    file_bytes: int
    raw_bytes_per_image: int
    notes: list[str]

    @property
    def bytes_per_image(self) -> float:
        return self.file_bytes / max(1, self.num_images)


def cache_bottlenecks(data: str | os.PathLike, *, out: str | os.PathLike,
                      model: str = "yolov3", width: float = 1.0,
                      weights: str | os.PathLike | None = None,
                      anchors: str | os.PathLike | None = None,
                      classes: str | os.PathLike | None = None, input_size: int = 416,
                      format: str | None = None, split: str | None = None,
                      dtype: str = "float16", compression: str = "auto",
                      batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
                      resume: bool = False,
                      progress: Callable[[int, int], None] | None = None,
                      config: Mapping[str, Any] | None = None) -> CacheBottlenecksResult:
    """Compute and store the frozen part's features of every image of ``data``.

    Images take the deterministic path (letterbox, no augmentation) of
    :class:`detkit.data.loader.DetectionBatches`.

    Args:
        data: the dataset (any format :func:`detkit.data.dataset.load_dataset` reads).
        out: the cache file (``.h5``); its manifest goes beside it.
        model, width: architecture and channel multiplier.
        weights: ``*.weights.h5`` to load by name (None: seeded init, saved beside).
        anchors: anchors file (only checked against the model and recorded).
        classes: classes.txt (default: from the dataset).
        input_size: network input side in pixels (multiple of 32).
        format: dataset format (default: detected).
        split: where the model is cut (:data:`detkit.bottleneck_training.SPLITS`).
        dtype: ``float16`` (default) or ``float32``.
        compression: ``auto``, ``none``, ``lzf`` or ``gzip``.
        batch_size: images per forward pass.
        seed: initialization seed (used when ``weights`` is None).
        resume: continue an interrupted run with the same settings.
        progress: ``progress(done, total)`` after each batch.
        config: the resolved options, recorded in the manifest.

    Raises:
        DataError, UsageError, ArtifactError: bad dataset, options or weights.
    """
    import keras

    from detkit.anchors import default_anchors_path, load_anchors
    from detkit.artifacts import atomic_path, sha256_file, write_manifest
    from detkit.bottleneck_training import (DEFAULT_SPLIT, check_split, frozen_features,
                                            init_weights_path, split_model)
    from detkit.bottlenecks import CacheSettings, DTYPES, write_cache
    from detkit.data.dataset import load_dataset
    from detkit.data.loader import DetectionBatches
    from detkit.errors import UsageError
    from detkit.models import build_model, check_input_size, num_anchors
    from detkit.models.weights import load_weights_by_name

    split = check_split(split or DEFAULT_SPLIT)
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_input_size(input_size)
    out = Path(out)
    anchors_path = Path(anchors) if anchors is not None else default_anchors_path(model)
    anchor_sizes = load_anchors(anchors_path)
    if len(anchor_sizes) != num_anchors(model):
        raise UsageError(f"{model} needs {num_anchors(model)} anchors, "
                         f"{anchors_path} has {len(anchor_sizes)}")
    dataset = load_dataset(data, format=format, classes=classes)
    if not dataset.records:
        raise UsageError(f"no images in {data}")
    notes = []
    fixes = dataset.fixes.summary() if dataset.fixes is not None else None
    if fixes:
        notes.append(fixes)

    keras.utils.set_random_seed(seed)
    net = build_model(model, len(dataset.class_names), width, input_size)
    init_path = None
    if weights is not None:
        report = load_weights_by_name(net, weights)
        if report.missing or report.skipped:
            notes.append("weights partly loaded:\n" + report.summary())
        weights_file = Path(weights)
    else:
        init_path = init_weights_path(out)
        if resume and init_path.is_file():
            load_weights_by_name(net, init_path, strict=True)
        else:
            with atomic_path(init_path) as tmp:
                net.save_weights(tmp)
        weights_file = init_path
    parts = split_model(net, split)

    settings = CacheSettings(model=model, width=float(width), split=split,
                             input_size=int(input_size),
                             weights_sha256=sha256_file(weights_file),
                             image_paths=[r.image_path for r in dataset.records], dtype=dtype)
    loader = DetectionBatches(dataset.records, input_size, batch_size, augment=False,
                              shuffle=False)

    def compute(indices: np.ndarray) -> list[np.ndarray]:
        images = np.stack([loader.load_sample(int(i)).image for i in indices])
        return frozen_features(parts, images.astype(np.float32) * np.float32(1 / 255))

    written = write_cache(out, settings, compute, batch_size=batch_size,
                          compression=compression, resume=resume, progress=progress)
    notes += written.notes
    inputs = [p for p in (data, weights, anchors_path, classes) if p is not None]
    extra = {
        "cache": {**settings.attrs(), "num_scales": len(written.shapes),
                  "shapes": [list(s) for s in written.shapes],
                  "compression": written.compression,
                  "compression_ratio": written.compression_ratio,
                  "file_bytes": written.file_bytes,
                  "raw_bytes_per_image": written.raw_bytes_per_image,
                  "bytes_per_image": written.bytes_per_image},
        "image_paths": list(settings.image_paths),
        "init_weights": None if init_path is None else init_path.name,
        "anchors": anchor_sizes, "class_names": dataset.class_names,
        "input_size": int(input_size),
    }
    resolved = dict(config or {})
    resolved.update(model=model, width=width, split=split, dtype=dtype,
                    input_size=input_size, compression=compression, seed=seed,
                    weights=None if weights is None else str(weights))
    manifest = write_manifest(out, command="cache-bottlenecks", config=resolved,
                              inputs=inputs, seed=seed, extra=extra)
    return CacheBottlenecksResult(
        path=out, manifest=manifest, init_weights=init_path,
        num_images=written.num_images, computed=written.computed,
        resumed_from=written.resumed_from, shapes=written.shapes, dtype=dtype, split=split,
        compression=written.compression, file_bytes=written.file_bytes,
        raw_bytes_per_image=written.raw_bytes_per_image, notes=notes)
