"""``detkit cache-bottlenecks DATA``: run the frozen part of a detector once over every image.

Without ``--weights`` (a from-scratch demo) the model is initialized from ``--seed`` and
its weights are saved beside the cache as ``NAME.init.weights.h5`` (recorded in the
manifest); ``train --stage 1 --bottlenecks NAME`` without ``--weights`` starts from that
file, so the heads are trained on features of exactly the body they will sit on.

Ctrl-C keeps the partial cache ``.NAME.partial`` (and the init weights it was computed
with) for ``--resume``; a new run over a partial cache is refused unless ``--resume`` or
``--exist-ok`` says what to do with it, as ``train`` treats a run directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from detkit import choices
from detkit.artifacts import (atomic_path, manifest_path, sha256_file, sha256_strings,
                              write_manifest)
from detkit.commands.groups import (BackboneWeightsOptions, DatasetOptions, ModelOptions,
                                    SeedOptions, load_data)
from detkit.errors import DataError, Interrupted, UsageError, interrupted
from detkit.families import get_family
from detkit.models import build_model, check_input_size
from detkit.models.recorded import read_recorded, resolve_options, start_architecture
from detkit.options import as_config, option
from detkit.progress import SILENT, Progress

COMMAND = "cache-bottlenecks"
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
        notes: warnings (random features, feature layers the weights did not load, another
            input size than the weights', dataset fixes, a replaced partial file).
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


def cache_files(out: Path) -> list[Path]:
    """Every file written for cache ``out``: its manifest, init weights, partial file."""
    from detkit.bottleneck_training import init_weights_path
    from detkit.bottlenecks import partial_path

    init = init_weights_path(out)
    return [manifest_path(out), init, manifest_path(init), partial_path(out)]


@dataclasses.dataclass(kw_only=True)
class Options(SeedOptions, BackboneWeightsOptions, ModelOptions, DatasetOptions):
    """The options of ``cache-bottlenecks``."""

    #: ``--weights`` is a start: only its architecture is taken (not its input size).
    WEIGHTS_ARE_A_START: ClassVar[bool] = True

    out: Path = option(Path("bottlenecks.h5"), "Cache file (.h5).", role="output",
                       writes=cache_files)
    weights: Optional[Path] = option(
        None, "Weights (*.weights.h5) of the frozen part; without it the model is "
              "initialized from --seed and saved as OUT.init.weights.h5 for train to start "
              "from.", role="input")
    split: str = option(choices.DEFAULT_SPLIT, "Where the model is cut: all-but-heads (cache the "
                        "inputs of the output convs, keras-yolo3's bottlenecks) or body "
                        "(cache the body's outputs; the whole heads train).",
                        choices=choices.SPLITS)
    dtype: str = option("float16", "Storage dtype: float16 or float32.",
                        choices=choices.DTYPES)
    compression: str = option("auto", "auto (compress only if it pays, measured), none, "
                              "lzf or gzip.", choices=choices.COMPRESSIONS)
    batch_size: int = option(DEFAULT_BATCH_SIZE, "Images per forward pass.", integer=True,
                             low=1)
    resume: bool = option(False, "Continue an interrupted run with the same settings.",
                          toggle=True)
    exist_ok: bool = option(False, "Start over when --out has the unfinished cache of an "
                                   "interrupted run, replacing it (without it, or --resume, "
                                   "one is refused).", toggle=True)


def _done(found: dict) -> str:
    """``N of M`` images of a partial cache's attributes."""
    total = found.get("num_images")
    return f"{int(found.get('n_done', 0))}" + (f" of {total}" if total is not None else "")


def _refuse_unfinished(opts: Options) -> None:
    """A new run never drops an unfinished cache silently: ``--resume`` or ``--exist-ok``.

    Raises:
        UsageError: ``--out`` has a partial cache and neither flag is given.
    """
    if opts.resume or opts.exist_ok:
        return
    from detkit.bottlenecks import partial_path, partial_settings

    found = partial_settings(opts.out)
    if found is not None:
        raise UsageError(f"--out {opts.out} has the unfinished cache of an interrupted run, "
                         f"{partial_path(opts.out)} ({_done(found)} images): pass --resume "
                         f"to continue it, --exist-ok to replace it, or choose another --out")


def _remove_unfinished(out: Path, notes: list[str]) -> None:
    """``--exist-ok``: remove the partial cache of ``out`` (after every check), noting it."""
    from detkit.bottlenecks import partial_path, partial_settings

    found = partial_settings(out)
    partial_path(out).unlink(missing_ok=True)
    if found is not None:
        notes.append(f"--exist-ok: removed the unfinished cache {partial_path(out)} "
                     f"({_done(found)} images); starting over")


def _kept(out: Path, init_path: Path | None, wrote_init: bool) -> str:
    """What an interrupted run keeps, and how to continue it (removes init weights that
    no partial cache needs)."""
    from detkit.bottlenecks import partial_path, partial_settings

    found = partial_settings(out)
    if found is None:
        _drop_unused_init(out, init_path, wrote_init)
        return "no batch finished: nothing of this cache is kept"
    init = (f" ({init_path}, which --resume needs, is kept too)"
            if init_path is not None and init_path.is_file() else "")
    return (f"{partial_path(out)} keeps {_done(found)} images{init}; "
            f"the same command with --resume continues it")


def _drop_unused_init(out: Path, init_path: Path | None, wrote_init: bool) -> None:
    """Remove the init weights (and their manifest) this run wrote when no cache, whole
    or partial, was computed from them: a failed run leaves no file behind."""
    from detkit.bottlenecks import partial_settings

    if not wrote_init or init_path is None or out.exists() or partial_settings(out):
        return
    init_path.unlink(missing_ok=True)
    manifest_path(init_path).unlink(missing_ok=True)


def _other_size(opts: Options) -> str | None:
    """A note when ``--weights`` were trained at another input size than this cache's
    (a start takes only their architecture: the size follows --input-size)."""
    recorded = read_recorded(Path(opts.weights)) if opts.weights is not None else None
    trained = None if recorded is None else recorded.values.get("input_size")
    if trained is None or int(trained) == int(opts.input_size):
        return None
    return (f"the weights were trained at input {int(trained)}; this cache is computed at "
            f"{int(opts.input_size)}: train on it with --input-size {int(opts.input_size)} "
            f"(or pass --input-size {int(trained)} here)")


def run(opts: Options, progress: Progress = SILENT) -> CacheBottlenecksResult:
    """Compute and store the frozen part's features of every image of ``opts.data``.

    Images take the deterministic path (letterbox, no augmentation) of
    :class:`detkit.data.loader.DetectionBatches`; the anchors are only checked against
    the model and recorded.

    Raises:
        DataError, UsageError, ArtifactError: bad dataset, options or weights.
        Interrupted: Ctrl-C, saying what is kept and how to continue.
    """
    from detkit.bottleneck_training import init_weights_path

    state = {"wrote_init": False}
    try:
        return _run(opts, progress, state)
    except BaseException as err:
        init = init_weights_path(opts.out) if opts.weights is None else None
        if not interrupted(err):
            _drop_unused_init(Path(opts.out), init, state["wrote_init"])
            raise
        raise Interrupted(_kept(Path(opts.out), init, state["wrote_init"])) from None


def _run(opts: Options, progress: Progress, state: dict) -> CacheBottlenecksResult:
    """:func:`run`; sets ``state["wrote_init"]`` once it has written the init weights."""
    import keras

    from detkit.bottleneck_training import (computes_features, frozen_features,
                                            init_weights_path, split_model)
    from detkit.bottlenecks import CacheSettings, check_resumable, write_cache
    from detkit.data.loader import DetectionBatches
    from detkit.models.weights import load_weights_by_name

    opts = resolve_options(opts, start_architecture(opts.weights))[0]
    data, out, weights, classes = opts.data, Path(opts.out), opts.weights, opts.classes
    model, width, input_size, seed = opts.model, opts.width, opts.input_size, opts.seed
    split, dtype, batch_size = opts.split, opts.dtype, opts.batch_size
    check_input_size(input_size)
    _refuse_unfinished(opts)
    anchor_sizes, anchors_path = get_family(model).resolve_anchors(opts.anchors)
    dataset = load_data(opts, crowds=True)     # the images only
    if not dataset.records:
        raise DataError("no images in the dataset", path=data)
    notes = [note for note in (_other_size(opts),) if note]
    fixes = dataset.fixes.summary() if dataset.fixes is not None else None
    if fixes:
        notes.append(fixes)
    image_paths = [str(r.image_path) for r in dataset.records]
    if opts.resume:  # before the model: other settings make other layers
        check_resumable(out, {"model": model, "width": float(width), "split": split,
                              "backbone": get_family(model).resolve_backbone(opts.backbone),
                              "input_size": int(input_size), "dtype": dtype,
                              "num_images": len(image_paths),
                              "images_sha256": sha256_strings(image_paths)})

    keras.utils.set_random_seed(seed)
    backbone = get_family(model).resolve_backbone(opts.backbone)
    if backbone is None and opts.backbone_weights not in (None, "none"):
        raise UsageError(f"--backbone-weights does not apply to --model {model} (it takes no "
                         f"--backbone)")
    net = build_model(model, len(dataset.class_names), width, input_size, backbone=backbone)
    init_path = None
    if weights is not None:
        report = load_weights_by_name(net, weights)
        unloaded = [path for path in [*(item.path for item in report.skipped),
                                      *report.missing] if computes_features(path, split)]
        if unloaded:   # the output convs the cache stops before may differ (classes)
            notes.append(f"--weights {weights}: {len(unloaded)} layers computing the "
                         f"features did not load and stay as initialized "
                         f"({', '.join(unloaded[:4])}{', ...' if len(unloaded) > 4 else ''})")
        weights_file = Path(weights)
    else:
        from detkit.models.backbones import load_backbone_weights

        init_path = init_weights_path(out)
        if opts.resume and init_path.is_file():
            load_weights_by_name(net, init_path, strict=True)
        else:
            # A family without --backbone (yolov2) has no body weights to load here.
            loaded_body = (load_backbone_weights(net, backbone, opts.backbone_weights, width)
                           if backbone is not None else None)
            notes.append(loaded_body or "no --weights: the features come from a randomly "
                         "initialized network (a from-scratch demo); for real training "
                         "cache them from trained weights or --backbone-weights")
            state["wrote_init"] = True
            # The manifest first (a weights manifest: predict, export and train read the
            # architecture, anchors and classes from it), then the weights.
            with atomic_path(init_path) as tmp:
                net.save_weights(tmp)
                write_manifest(init_path, command=COMMAND, config=as_config(opts),
                               inputs=[p for p in (data, anchors_path, classes) if p],
                               seed=seed, data=tmp, extra={
                                   "model": model, "width": float(width),
                                   "backbone": backbone, "input_size": int(input_size),
                                   "anchors": anchor_sizes,
                                   "class_names": dataset.class_names})
        weights_file = init_path
    if opts.exist_ok and not opts.resume:
        _remove_unfinished(out, notes)
    parts = split_model(net, split)

    settings = CacheSettings(model=model, width=float(width), split=split,
                             input_size=int(input_size),
                             weights_sha256=sha256_file(weights_file),
                             image_paths=[r.image_path for r in dataset.records], dtype=dtype,
                             backbone=backbone)
    loader = DetectionBatches(dataset.records, input_size, batch_size, augment=False,
                              shuffle=False)

    def compute(indices: np.ndarray) -> list[np.ndarray]:
        images = np.stack([loader.load_sample(int(i)).image for i in indices])
        return frozen_features(parts, images.astype(np.float32) * np.float32(1 / 255))

    inputs = [p for p in (data, weights, anchors_path, classes, opts.backbone_weights_file)
              if p is not None]

    def manifest_of(tmp: Path, written) -> Path:  # before the cache appears
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
        return write_manifest(out, command=COMMAND, config=as_config(opts),
                              inputs=inputs, seed=seed, extra=extra, data=tmp)

    progress.start("caching features", len(dataset.records))
    written = write_cache(out, settings, compute, batch_size=batch_size,
                          compression=opts.compression, resume=opts.resume,
                          progress=lambda done, total: progress.update(done),
                          before_commit=manifest_of)
    progress.finish()
    notes += written.notes
    manifest = manifest_path(out)
    return CacheBottlenecksResult(
        path=out, manifest=manifest, init_weights=init_path,
        num_images=written.num_images, computed=written.computed,
        resumed_from=written.resumed_from, shapes=written.shapes, dtype=dtype, split=split,
        compression=written.compression, file_bytes=written.file_bytes,
        raw_bytes_per_image=written.raw_bytes_per_image, notes=notes)
