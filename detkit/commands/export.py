"""``detkit export WEIGHTS``: a deployable SavedModel, TF Lite or ONNX model + manifest.

The exported model takes ``(B, S, S, 3)`` uint8 RGB images letterboxed to the input side
(dynamic batch, fixed ``S``) and returns the raw outputs ``raw_0...`` (coarsest stride
first), or with ``--nms`` the detections ``boxes (B, M, 4)`` (xyxy input pixels),
``scores (B, M)``, ``classes (B, M)`` (int32, ``-1`` past ``valid``) and ``valid (B,)``
with ``M = --max-det`` (see :mod:`detkit.export.graph`). TF Lite can be float16 or int8
(network fully integer, calibrated on ``--calibration`` images; decoding and NMS float).
Writes ``OUT`` (a file, or a folder for SavedModel) and ``OUT.manifest.json``, whose
``export`` block (:class:`detkit.export.settings.ExportSettings`) lets ``predict`` and
``eval-map`` run it with the same anchors, classes and input size.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detkit.artifacts import (check_folder_replaceable, check_no_clobber, check_own_file,
                              check_weights_file, check_writable, sha256_file,
                              write_manifest)
from detkit.commands.groups import ModelOptions
from detkit.commands.predict import (MAX_DET_HELP, NMS_IOU_HELP, load_weights_strict,
                                     recorded_class_names)
from detkit.errors import UsageError
from detkit.export import exporters
from detkit.export.deps import require
from detkit.export.quantize import calibration_items, representative_dataset
from detkit.export.runtimes import disk_size, open_runtime
from detkit.export.settings import (FORMATS, QUANTIZATIONS, SAVED_MODEL_FILE, SUFFIXES,
                                    ExportSettings)
from detkit.families import get_family
from detkit.models import build_model
from detkit.models.recorded import read_recorded, resolve_anchors, resolve_options
from detkit.options import argument, as_config, option
from detkit.progress import SILENT, Progress

COMMAND = "export"
#: Random images the export is checked on when there is no calibration set.
CHECK_IMAGES = 2
#: Python packages each format needs (the ``export`` extra), checked before any work.
NEEDS = {"saved_model": ("tensorflow",), "tflite": ("tensorflow",),
         "onnx": ("tf2onnx", "onnx", "onnxruntime")}


@dataclasses.dataclass
class ExportResult:
    """What :func:`run` wrote.

    Attributes:
        out: the export (a file, or the SavedModel folder).
        manifest: its manifest.
        settings: what the export is (format, model, quantization, NMS, outputs).
        size_bytes: size on disk.
        seconds: wall time.
        max_abs_diff: largest difference between the export's and the Keras model's
            outputs on the check images (raw outputs, or the scores of an NMS export).
        check_images: how many images that check ran on.
        notes: things the user should know (an input size other than the trained one).
    """

    out: Path
    manifest: Path
    settings: ExportSettings
    size_bytes: int
    seconds: float
    max_abs_diff: float
    check_images: int
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(kw_only=True)
class Options(ModelOptions):
    """The options of ``export``."""

    weights: Path = argument("Trained weights (.weights.h5) to export. The model, width, "
                             "backbone, input size, anchors and class names recorded in "
                             "their manifest fill the flags not given; a contradicting "
                             "flag, anchors file or class list is refused (another "
                             "--input-size is exported with a warning).", role="input")
    classes: Optional[Path] = option(
        None, "classes.txt, one name a line (default: the names recorded with the "
              "weights, else 0..C-1 with C read from a YOLO head's weights).", role="input")
    format: Optional[str] = option(
        None, "saved_model, tflite or onnx (default: from --out's ending: .tflite, .onnx, "
              "else a SavedModel folder). --format or --out is required.", choices=FORMATS)
    quantize: Optional[str] = option(
        None, "TF Lite only: float16 (half-size weights) or int8 (integer network "
              "calibrated on --calibration, raw outputs: not with --nms).",
        choices=QUANTIZATIONS)
    calibration: Optional[Path] = option(
        None, "int8: representative images, a dataset or an image folder (e.g. the "
              "training set), letterboxed as predict does.", role="input")
    calibration_images: int = option(100, "int8: images drawn from --calibration.",
                                     integer=True, low=1)
    nms: bool = option(False, "Return detections (boxes, scores, classes, valid; "
                       "--max-det rows) instead of the raw outputs.", toggle=True)
    conf: float = option(0.001, "With --nms: score threshold baked into the export.",
                         low=0, high=1)
    iou: Optional[float] = option(None, NMS_IOU_HELP + " Only with --nms, baked into "
                                  "the export.", low=0, high=1)
    max_det: Optional[int] = option(None, MAX_DET_HELP + " Only with --nms: the export's "
                                    "output rows.", integer=True, low=1)
    out: Optional[Path] = option(
        None, "Export to write (default: beside WEIGHTS: NAME.tflite, NAME.onnx or the "
              "folder NAME_saved_model, with .int8/.float16 and .nms before the ending "
              "when --quantize or --nms: best.float16.nms.tflite).")


def resolve_target(opts: Options) -> tuple[str, Path]:
    """The format and output path from ``--format`` and ``--out`` (each may give both).

    Raises:
        UsageError: neither given, or an ``--out`` ending that contradicts ``--format``.
    """
    fmt, out = opts.format, None if opts.out is None else Path(opts.out)
    by_suffix = None
    if out is not None:
        by_suffix = next((name for name, suffix in SUFFIXES.items()
                          if out.suffix.lower() == suffix), "saved_model")
    if fmt is None and out is None:
        raise UsageError("give --format saved_model|tflite|onnx or an --out ending in "
                         ".tflite or .onnx")
    fmt = fmt or by_suffix
    if out is not None and by_suffix != fmt:
        wanted = SUFFIXES.get(fmt, "a folder name without .tflite/.onnx")
        raise UsageError(f"--out {out} does not fit --format {fmt} (use {wanted})")
    if out is None:
        stem = Path(opts.weights).name.removesuffix(".h5").removesuffix(".weights")
        quant = f".{opts.quantize}" if opts.quantize else ""
        nms = ".nms" if opts.nms else ""
        name = stem + quant + nms + SUFFIXES.get(fmt, "_saved_model")
        out = Path(opts.weights).with_name(name)
    return fmt, out


def check_options(opts: Options) -> tuple[str, Path]:
    """Everything about the flags that can be checked before loading anything."""
    fmt, out = resolve_target(opts)
    family = get_family(opts.model)
    if opts.input_size % family.max_stride:
        raise UsageError(f"--input-size must be a multiple of {family.max_stride}, "
                         f"got {opts.input_size}")
    if opts.quantize is not None and fmt != "tflite":
        raise UsageError(f"--quantize applies to --format tflite, not {fmt}")
    if opts.quantize == "int8" and opts.nms:
        raise UsageError("--quantize int8 with --nms: the TF Lite converter quantizes the "
                         "box slices of the decoding and NMS too, which loses AP (0.345 "
                         "against Keras' 0.477 on a yolov3-tiny); export --quantize int8 "
                         "without --nms (raw outputs: predict, eval-map or the app decode "
                         "them in float), or --nms with --quantize float16")
    if opts.quantize == "int8" and opts.calibration is None:
        raise UsageError("--quantize int8 needs --calibration DATA: representative images "
                         "(e.g. the training set) to calibrate the integer ranges")
    check_weights_file(opts.weights)
    for module in NEEDS[fmt]:
        require(module, f"--format {fmt}")
    # --out is a file or (SavedModel) a folder, and may be derived from WEIGHTS: checked
    # here rather than by its option's role
    check_no_clobber(opts, [("--out", out)])
    if fmt == "saved_model":
        check_folder_replaceable(opts, "--out", out, SAVED_MODEL_FILE)
    else:
        check_own_file("--out", out, COMMAND)
    check_writable(out, flag="--out", folder=fmt == "saved_model")
    return fmt, out


def run(opts: Options, progress: Progress = SILENT) -> ExportResult:
    """Export ``opts.weights`` (see the module docstring). The model, width, backbone,
    input size, anchors and class names recorded with the weights fill the flags left at
    their defaults (:mod:`detkit.models.recorded`).

    Raises:
        UsageError: contradicting flags, int8 without calibration, a missing optional
            package (the ``export`` extra).
        ArtifactError: missing weights, or weights that do not fit ``--model``/``--width``.
        ArtifactMismatchError: an anchors file with the wrong count; flags, anchors or
            class names that contradict the weights' manifest.
        DataError: unreadable calibration images.
    """
    weights = Path(opts.weights)
    recorded = read_recorded(weights) if weights.is_file() else None
    opts, notes = resolve_options(opts, recorded)
    fmt, out = check_options(opts)
    from detkit.export.graph import NMS_OUTPUTS, InferenceModel  # (Keras: after the checks)

    started = time.perf_counter()
    family = get_family(opts.model)
    anchors, anchors_path = resolve_anchors(family, opts.anchors, recorded)
    class_names = recorded_class_names(opts, None, weights, recorded, family)
    calibration = _calibration(opts)
    progress.start(f"export {fmt}", None)
    backbone = getattr(opts, "backbone", None)
    network = build_model(opts.model, len(class_names), opts.width, opts.input_size,
                          **({"backbone": backbone} if backbone else {}))
    load_weights_strict(network, weights, opts, len(class_names))
    iou, max_det = family.nms(opts.iou, opts.max_det)
    model = InferenceModel(network, family, anchors, opts.input_size, nms=opts.nms,
                           conf=opts.conf, iou=iou, max_det=max_det)
    if fmt == "saved_model":
        exporters.write_saved_model(model, out)
    elif fmt == "onnx":
        exporters.write_onnx(model, out)
    else:
        representative = None
        if opts.quantize == "int8":
            representative = representative_dataset(calibration, opts.input_size)
        exporters.write_tflite(model, out, quantize=opts.quantize,
                               representative=representative)
    progress.finish()
    outputs = list(NMS_OUTPUTS) if opts.nms else list(model.output_names_raw)
    settings = ExportSettings(
        format=fmt, model=opts.model, width=float(opts.width), input_size=opts.input_size,
        anchors=anchors.tolist(), class_names=class_names, quantize=opts.quantize,
        nms=opts.nms, conf=opts.conf if opts.nms else None,
        iou=iou if opts.nms else None, max_det=max_det if opts.nms else None,
        outputs=outputs, weights_sha256=sha256_file(weights), backbone=backbone)
    diff, count = _check(model, out, settings, calibration)
    inputs = [weights, *([anchors_path] if anchors_path is not None else [])]
    inputs += [Path(opts.classes)] if opts.classes is not None else []
    extra: dict[str, Any] = {"export": settings.to_manifest(),
                             "check": {"images": count, "max_abs_diff_vs_keras": diff}}
    if calibration:
        extra["calibration"] = {"data": str(opts.calibration), "images": len(calibration)}
        inputs += [Path(opts.calibration)] if Path(opts.calibration).is_file() else []
    manifest = write_manifest(out, command=COMMAND, config=as_config(opts), inputs=inputs,
                              extra=extra)
    return ExportResult(out=out, manifest=manifest, settings=settings,
                        size_bytes=disk_size(out), seconds=time.perf_counter() - started,
                        max_abs_diff=diff, check_images=count, notes=notes)


def _calibration(opts: Options) -> list:
    """The calibration images (int8 only; read before the long work so errors come first)."""
    if opts.quantize != "int8":
        return []

    return calibration_items(opts.calibration, opts.calibration_images)


def _check(model, out: Path, settings: ExportSettings, calibration: list
           ) -> tuple[float, int]:
    """Run the export and the Keras model on the same images; the largest difference of
    the raw outputs (or of the scores of the detections both report)."""
    from keras import ops

    from detkit.predict import load_images

    if calibration:
        images, _ = load_images(calibration[:CHECK_IMAGES], settings.input_size)
    else:
        rng = np.random.default_rng(0)
        shape = (CHECK_IMAGES, settings.input_size, settings.input_size, 3)
        images = rng.integers(0, 256, shape, dtype=np.uint8)
    exported = open_runtime(out, settings.format)(images)
    reference = {name: ops.convert_to_numpy(value) for name, value in model(images).items()}
    if not settings.nms:
        diff = max(float(np.max(np.abs(exported[name] - reference[name])))
                   for name in settings.outputs)
        return diff, len(images)
    rows = int(np.minimum(exported["valid"], reference["valid"]).min())
    if rows == 0:
        return 0.0, len(images)
    diff = float(np.max(np.abs(exported["scores"][:, :rows] - reference["scores"][:, :rows])))
    return diff, len(images)
