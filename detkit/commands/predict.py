"""``detkit predict DATA``: run a trained detector over images or a video, write COCO results.

The model is Keras weights (run compiled by default, see ``--compile``) or an export of
``detkit export`` (``.tflite``, ``.onnx``, a SavedModel folder) run by its runtime with
the same letterboxing, decoding and NMS. Writes ``OUT`` (COCO results ``[{image_id,
category_id, bbox, score}]``; for a video ``image_id`` is the frame index) and its
sidecar ``OUT.manifest.json`` (the resolved options, the anchors, class names, category
ids, what ran the model, and the images with their ids or the video), plus drawn images
in ``DRAW_DIR`` or a drawn video at ``SAVE_VIDEO`` when asked.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional, Sequence

from detkit.artifacts import (check_agree, check_spares_files, check_weights_file,
                              manifest_path, run_weights_hint, write_json, write_manifest)
from detkit.commands.groups import DatasetOptions, InferenceOptions, ModelOptions
from detkit.data.dataset import read_class_names
from detkit.errors import ArtifactError, ArtifactMismatchError, UsageError
from detkit.export.runtimes import disk_size, open_runtime
from detkit.export.settings import detect_format, read_settings
from detkit.families import get_family
from detkit.models import build_model
from detkit.models.recorded import (check_class_names, read_recorded, resolve_anchors,
                                    resolve_options)
from detkit.options import argument, as_config, is_given, option
from detkit.predict import DRAW_CONF
from detkit.progress import SILENT, Progress
from detkit.tables import TextTable, plural

COMMAND = "predict"
#: The label of a class-agnostic family's boxes (rpn proposals) in drawings and counts;
#: their results carry the first category id (eval-map scores them class-agnostic).
PROPOSAL_LABEL = "object"


@dataclasses.dataclass
class PredictResult:
    """What :func:`run` wrote.

    Attributes:
        out: the COCO results json.
        num_images: images (or video frames) processed.
        num_detections: results written.
        detections_per_class: class name -> number of results.
        source: what ``DATA`` was (``image``, ``folder``, ``video`` or a dataset format).
        draw_dir: folder of drawn images, if requested.
        seconds: wall time of loading the model and running it.
        weights_summary: the weight-loading report (or what export was loaded).
        params: the Keras model's parameter count (0 for an export).
        ms_per_image: wall time per image of the detection loop (decode, letterbox,
            forward pass, NMS), without model building and weight loading.
        runner: what ran the model (``keras compiled``, ``tflite int8 (litert)``...).
        weights_format: ``keras`` or the export format.
        quantize: the export's quantization (``None`` for float32 and Keras).
        nms: an export with decoding and NMS inside (``--nms``).
        size_bytes: size on disk of the weights or the export.
        video: the drawn video written, if requested.
        notes: things the user should know (an export's baked-in NMS settings).
        warmup_seconds: the first (compiling) call on a blank batch, not in
            ``ms_per_image``.
        model, width: the architecture that ran (from the flags, the weights' manifest
            or the export's).
        architecture: ``model``, ``width``, ``input_size`` and ``backbone`` that ran
            (what the manifest's config records, not the flags' defaults).
    """

    out: Path
    num_images: int
    num_detections: int
    detections_per_class: dict[str, int]
    source: str
    draw_dir: Path | None
    seconds: float
    weights_summary: str
    params: int = 0
    ms_per_image: float = 0.0
    runner: str = "keras"
    weights_format: str = "keras"
    quantize: Optional[str] = None
    nms: bool = False
    size_bytes: int = 0
    video: Path | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    warmup_seconds: float = 0.0
    model: str = ""
    width: float = 1.0
    architecture: dict = dataclasses.field(default_factory=dict)

    @property
    def unit(self) -> str:
        """``frames`` for a video, else ``images``."""
        return "frames" if self.source == "video" else "images"

    def headline(self) -> str:
        """What ran on what: images, detections, the runner."""
        return (f"predict: {plural(self.num_images, self.unit[:-1])} ({self.source}), "
                f"{plural(self.num_detections, 'detection')}, run by {self.runner}")

    def table(self) -> TextTable:
        """Detections per class."""
        return TextTable("", ("class", "detections"),
                         [(name, str(count)) for name, count in
                          self.detections_per_class.items()])

    def summary_line(self) -> str:
        """The files written, the time taken and the detection loop's speed."""
        rate = self.num_images / self.seconds if self.seconds > 0 else 0.0
        extras = (f"; drawn images in {self.draw_dir}" if self.draw_dir else "") + (
            f"; drawn video {self.video}" if self.video else "")
        return (f"wrote {self.out} in {self.seconds:.1f} s ({rate:.1f} {self.unit}/s, "
                f"{self.ms_per_image:.1f} ms/image in the detection loop){extras}")


#: Help of ``--weights`` wherever a model is run.
WEIGHTS_HELP = ("Trained weights (.weights.h5), or an export of detkit export: .tflite, "
                ".onnx or a SavedModel folder. The model, width, backbone, anchors, "
                "classes and input size recorded in its manifest fill the flags not given; "
                "a contradicting flag, anchors file or class list is refused (another "
                "--input-size runs, with a warning).")
NMS_IOU_HELP = ("Per-class NMS IoU threshold (default: the model family's, 0.45; 0.7 for "
                "rpn proposals).")
MAX_DET_HELP = ("Detections kept per image (default: the model family's, 100; 1000 for rpn "
                "proposals).")
COMPILE_HELP = ("Run Keras models and the decoding of raw exports compiled (jit, batches "
                "padded to one static shape); --no-compile runs them eagerly, op by op.")


@dataclasses.dataclass(kw_only=True)
class Options(InferenceOptions, ModelOptions, DatasetOptions):
    """The options of ``predict``."""

    data: Path = argument("An image, a folder of images, a video file, or a dataset (lines "
                          "file, COCO json, CSV, VOC or YOLO folder, or a data.yaml: its "
                          "val split; results then carry its image ids).", role="input")
    weights: Optional[Path] = option(None, WEIGHTS_HELP, role="input")
    iou: Optional[float] = option(None, NMS_IOU_HELP, low=0, high=1)
    max_det: Optional[int] = option(None, MAX_DET_HELP, integer=True, low=1)
    out: Path = option(Path("detections.json"), "COCO results json to write.", role="output")
    draw_dir: Optional[Path] = option(
        None, "Also write each image with its boxes drawn into this folder.",
        role="output", folder=True)
    save_video: Optional[Path] = option(
        None, "With a video DATA: also write the video with its boxes drawn (.mp4, .m4v, "
              ".mov, .mkv or .avi).",
        role="output")
    draw_conf: float = option(DRAW_CONF, "Score a box needs to be drawn (--draw-dir, "
                              "--save-video); the results keep all above --conf.",
                              low=0, high=1)
    compile: bool = option(True, COMPILE_HELP, toggle=True)


def run(opts: Options, progress: Progress = SILENT, *,
        command: str = COMMAND) -> PredictResult:
    """Detect objects in images or a video and write COCO-style results.

    ``opts.data`` is an image file, a folder of images, a video (results carry frame
    indices as image ids) or a dataset (any format
    :func:`detkit.data.dataset.load_dataset` reads; ids are its image ids). Class names
    come from ``opts.classes``, else the dataset, else the export's manifest or
    ``0..C-1`` with ``C`` read from the weights; category ids from the COCO dataset, else
    class index + 1. ``opts.weights`` is a ``.weights.h5`` (run by Keras) or an export
    (run by its runtime, see :mod:`detkit.export.runtimes`).

    Raises:
        UsageError: no weights, an input size the model cannot take, video options
            without a video.
        DataError: missing images or an unreadable image or video (named).
        ArtifactError: missing weights, weights that do not fit the model, an export
            without its manifest.
        ArtifactMismatchError: an anchors file with the wrong count, flags that disagree
            with the export's manifest.

    ``command`` is the one the manifests name as the maker (``eval-map`` when it runs a
    model: its detections are then its own output, which a re-run replaces).
    """
    from detkit.predict import (check_drawings, collect_images, is_video_file,
                                run_predictions, run_video, video_codec)

    if opts.weights is None:
        raise UsageError("--weights is required: the trained model's .weights.h5 or an "
                         "export (.tflite, .onnx, SavedModel folder)")
    weights = Path(opts.weights)
    video = Path(opts.data) if is_video_file(Path(opts.data)) else None
    if video is None and opts.save_video is not None:
        raise UsageError("--save-video needs a video file as DATA; for images use "
                         "--draw-dir")
    if video is not None and opts.draw_dir is not None:
        raise UsageError("--draw-dir takes images; for a video use --save-video")
    if opts.save_video is not None:
        video_codec(Path(opts.save_video))
    if not weights.exists():
        raise ArtifactError("weights file not found", path=weights)

    started = time.perf_counter()
    image_set = None if video is not None else collect_images(
        opts.data, format=opts.format, classes=opts.classes)
    if image_set is not None:
        check_spares_files(opts, image_set.files, f"a file of DATA {opts.data}")
    if image_set is not None and opts.draw_dir is not None:
        check_drawings(image_set.items, Path(opts.draw_dir))
    loaded = load_detector(opts, weights, image_set)
    ids = _category_ids(None if image_set is None else image_set.category_ids,
                        len(loaded.class_names))
    labels = ([PROPOSAL_LABEL] if get_family(loaded.model).class_agnostic
              else loaded.class_names)
    done = 0

    def on_batch(count: int) -> None:
        nonlocal done
        done += count
        progress.update(done)

    draw_path = None if opts.draw_dir is None else Path(opts.draw_dir)
    warm_started = time.perf_counter()
    loaded.detector.warm_up()
    loop_started = time.perf_counter()
    extra: dict = {}
    if video is not None:
        progress.start("predict", None)
        results, info, total = run_video(
            loaded.detector, video, batch_size=opts.batch_size, category_ids=ids,
            class_names=labels, save_video=opts.save_video, draw_conf=opts.draw_conf,
            on_batch=on_batch)
        extra["video"] = {"file": str(video), "frames": total, "fps": info.fps,
                          "width": info.width, "height": info.height}
        source = "video"
    else:
        total = len(image_set.items)
        progress.start("predict", total)
        results = run_predictions(loaded.detector, image_set.items,
                                  batch_size=opts.batch_size, category_ids=ids,
                                  class_names=labels, draw_dir=draw_path,
                                  draw_conf=opts.draw_conf, on_batch=on_batch)
        extra["images"] = [{"id": item.image_id, "file_name": str(item.path)}
                           for item in image_set.items]
        source = image_set.kind
    loop_seconds = time.perf_counter() - loop_started
    progress.finish()
    out = write_json(opts.out, results)
    seconds = time.perf_counter() - started
    per_class = {name: 0 for name in labels}
    by_id = dict(zip(ids, labels))
    for result in results:
        per_class[by_id[result["category_id"]]] += 1
    classes = [Path(opts.classes)] if opts.classes is not None else []
    anchors_input = [loaded.anchors_path] if loaded.anchors_path is not None else []
    record = {"anchors": loaded.anchors, "class_names": loaded.class_names,
              "category_ids": ids, "input_size": loaded.detector.input_size,
              "runner": loaded.detector.description, "num_images": total,
              "num_detections": len(results), **extra}
    if loaded.anchors_path is not None:
        record["anchors_file"] = str(loaded.anchors_path)
    config = {**as_config(opts), **loaded.architecture}
    inputs = [p for p in (weights, *anchors_input, *classes) if p.is_file()]
    write_manifest(out, command=command, config=config, inputs=inputs, extra=record)
    if opts.save_video is not None:      # a re-run may replace it: predict made it
        write_manifest(opts.save_video, command=command, config=config, inputs=inputs,
                       extra={"detections": out.name, **extra})
    return PredictResult(out=out, num_images=total, num_detections=len(results),
                         detections_per_class=per_class, source=source,
                         draw_dir=draw_path, seconds=seconds,
                         weights_summary=loaded.summary, params=loaded.params,
                         ms_per_image=1000 * loop_seconds / max(total, 1),
                         runner=loaded.detector.description,
                         weights_format=loaded.weights_format, quantize=loaded.quantize,
                         nms=loaded.nms, size_bytes=loaded.size_bytes,
                         video=Path(opts.save_video) if opts.save_video else None,
                         notes=[*loaded.notes, *loaded.detector.notes,
                                *_drawing_notes(opts, results)],
                         warmup_seconds=loop_started - warm_started,
                         model=loaded.model, width=loaded.width,
                         architecture=loaded.architecture)


def _drawing_notes(opts: Options, results: list[dict]) -> list[str]:
    """A note when images or a video were drawn but no detection reached --draw-conf
    (the drawings show no boxes, which reads as a broken drawing)."""
    if opts.draw_dir is None and opts.save_video is None:
        return []
    if any(result["score"] >= opts.draw_conf for result in results):
        return []
    below = f" (all {len(results)} score below it)" if results else ""
    return [f"no detection scored --draw-conf {opts.draw_conf:g} or more{below}: the "
            f"drawings show no boxes; lower --draw-conf to see weaker ones"]


@dataclasses.dataclass
class LoadedDetector:
    """A detector ready to run and what it was made of.

    Attributes:
        detector: the :class:`detkit.export.detectors.Detector`.
        class_names: class names, one per class index.
        anchors: ``(K, 2)`` anchors (decoding; recorded in the manifest).
        anchors_path: the anchors file read (``None`` when they came from an export).
        summary: one line on what was loaded.
        params: parameter count of a Keras model (0 for an export).
        weights_format: ``keras``, ``saved_model``, ``tflite`` or ``onnx``.
        quantize: an export's quantization.
        nms: an export with decoding and NMS inside.
        size_bytes: the weights' or the export's size on disk.
        model, width, backbone: the architecture loaded (``backbone`` ``None``: the
            family's own).
        notes: things the user should know (an input size other than the trained one).
    """

    detector: object
    class_names: list[str]
    anchors: object
    anchors_path: Optional[Path]
    summary: str
    params: int
    weights_format: str
    quantize: Optional[str]
    nms: bool
    size_bytes: int
    model: str
    width: float
    backbone: Optional[str] = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def architecture(self) -> dict:
        """``model``, ``width``, ``input_size`` and ``backbone`` of what runs."""
        return {"model": self.model, "width": self.width,
                "input_size": int(self.detector.input_size), "backbone": self.backbone}


def load_detector(opts: Options, weights: Path, image_set=None) -> LoadedDetector:
    """The detector ``opts`` ask for: Keras weights, or an export found by its suffix
    (``.tflite``, ``.onnx``) or as a SavedModel folder.

    Raises:
        see :func:`run`.
    """
    fmt = detect_format(weights)
    if fmt is not None:
        return _export_detector(opts, weights, fmt, image_set)
    return _keras_detector(opts, weights, image_set)


#: Dataset formats whose labels name their classes (no class indices, no COCO ids): a
#: dataset of some of a model's classes is read with the model's names.
NAMED_FORMATS = ("voc", "csv")


def names_subset(names: Sequence[str], fmt: str, model_names: Optional[Sequence[str]]
                 ) -> bool:
    """Whether a dataset of format ``fmt`` naming ``names`` names some of the model's
    classes (a small val split without a rare class), in another list."""
    return (fmt in NAMED_FORMATS and model_names is not None
            and list(names) != list(model_names) and set(names) <= set(model_names))


def _given_class_names(opts, image_set=None, model_names: Optional[Sequence[str]] = None
                       ) -> Optional[tuple[list[str], str]]:
    """``(names, where they come from)``: ``--classes``, else the dataset's names (the
    model's, when the dataset names some of them: :func:`names_subset`), else ``None``."""
    if opts.classes is not None:
        return read_class_names(opts.classes), str(opts.classes)
    if image_set is not None and image_set.class_names:
        if names_subset(image_set.class_names, image_set.kind, model_names):
            return list(model_names), str(opts.data)
        return list(image_set.class_names), str(opts.data)
    return None


def recorded_class_names(opts, image_set, weights: Path, recorded, family) -> list[str]:
    """The class names of ``weights``: ``--classes`` or the dataset's, checked against
    the recorded ones (not for class-agnostic families), else the recorded ones, else
    ``0..C-1``."""
    given = _given_class_names(opts, image_set,
                               None if recorded is None else recorded.class_names)
    if given is None:
        if recorded is not None and recorded.class_names is not None:
            return list(recorded.class_names)
        return names_from_weights(weights)
    if not family.class_agnostic:
        check_class_names(given[0], given[1], recorded)
    return given[0]


def _keras_detector(opts: Options, weights: Path, image_set) -> LoadedDetector:
    from detkit.export.detectors import KerasDetector

    if not weights.is_file():
        raise ArtifactError(f"not a weights file, .tflite, .onnx or SavedModel folder"
                            f"{run_weights_hint(weights)}", path=weights)
    check_weights_file(weights)
    recorded = read_recorded(weights)
    opts, notes = resolve_options(opts, recorded)
    if opts.model is None:
        raise UsageError("--model is required with .weights.h5 weights that have no "
                         "manifest naming their model")
    family = get_family(opts.model)
    if opts.input_size % family.max_stride:
        raise UsageError(f"--input-size must be a multiple of {family.max_stride}, "
                         f"got {opts.input_size}")
    anchors, anchors_path = resolve_anchors(family, opts.anchors, recorded)
    class_names = recorded_class_names(opts, image_set, weights, recorded, family)
    backbone = getattr(opts, "backbone", None)
    network = build_model(opts.model, len(class_names), opts.width, opts.input_size,
                          **({"backbone": backbone} if backbone else {}))
    report = load_weights_strict(network, weights, opts, len(class_names))
    iou, max_det = family.nms(opts.iou, opts.max_det)
    detector = KerasDetector(network, family, anchors, opts.input_size, conf=opts.conf,
                             iou=iou, max_det=max_det,
                             batch_size=opts.batch_size, compile=opts.compile)
    return LoadedDetector(detector=detector, class_names=class_names, anchors=anchors,
                          anchors_path=anchors_path,
                          summary=_keras_summary(opts, report.summary(), recorded),
                          params=int(network.count_params()), weights_format="keras",
                          quantize=None, nms=False, size_bytes=weights.stat().st_size,
                          model=opts.model, width=float(opts.width), backbone=backbone,
                          notes=notes)


def _keras_summary(opts: Options, loaded: str, recorded) -> str:
    """One line: the architecture run, where its settings came from, what was loaded."""
    source = f" (settings from {recorded.manifest.name})" if recorded is not None else ""
    return (f"{opts.model}, width {opts.width:g}, input {opts.input_size}{source}: "
            f"{loaded}")


def _export_detector(opts: Options, weights: Path, fmt: str, image_set) -> LoadedDetector:
    from detkit.export.detectors import ExportDetector

    settings = read_settings(weights)
    if settings is None:
        raise ArtifactError(f"an export needs its manifest ({manifest_path(weights).name}, "
                            f"written by detkit export) for its model, anchors, classes "
                            f"and input size", path=weights)
    for name, flag, value in (("model", "--model", settings.model),
                              ("width", "--width", settings.width),
                              ("input_size", "--input-size", settings.input_size)):
        given = getattr(opts, name)
        if given is not None and is_given(opts, name) and given != value:
            raise ArtifactMismatchError(f"{flag} {given} disagrees with the export "
                                        f"({value})", path=weights)
    family = get_family(settings.model)
    anchors, anchors_path = settings.anchor_array, None
    if opts.anchors is not None:
        given_anchors, anchors_path = family.resolve_anchors(opts.anchors)
        check_agree(str(anchors_path), {"anchors": given_anchors}, str(weights),
                    {"anchors": anchors}, keys=("anchors",))
    given = _given_class_names(opts, image_set, settings.class_names)
    class_names = list(settings.class_names) if given is None else given[0]
    if len(class_names) != len(settings.class_names):
        raise ArtifactMismatchError(
            f"the export has {len(settings.class_names)} classes "
            f"{list(settings.class_names)}, {given[1]} names {len(class_names)} "
            f"{class_names}: a dataset's classes must be the export's (a VOC or CSV "
            f"dataset's may be some of them)", path=weights)
    runtime = open_runtime(weights, fmt)
    iou, max_det = family.nms(opts.iou, opts.max_det)
    detector = ExportDetector(runtime, settings, family, anchors, conf=opts.conf,
                              iou=iou, max_det=max_det,
                              batch_size=opts.batch_size, compile=opts.compile,
                              given=[name for name in ("conf", "iou", "max_det")
                                     if is_given(opts, name)])
    summary = (f"loaded {fmt} export {weights.name} ({settings.model}, width "
               f"{settings.width:g}, input {settings.input_size}, "
               f"{settings.quantize or 'float32'}{', nms' if settings.nms else ''})")
    return LoadedDetector(detector=detector, class_names=class_names, anchors=anchors,
                          anchors_path=anchors_path, summary=summary, params=0,
                          weights_format=fmt, quantize=settings.quantize,
                          nms=bool(settings.nms), size_bytes=disk_size(weights),
                          model=settings.model,
                          width=float(settings.width), backbone=settings.backbone)


def names_from_weights(weights: Path) -> list[str]:
    """``0..C-1`` with ``C`` read from the weights file."""
    from detkit.models.weights import num_classes_in_file

    return [str(i) for i in range(num_classes_in_file(weights))]


def _category_ids(dataset_ids, num_classes: int) -> list[int]:
    """The dataset's category ids when they fit the classes, else class index + 1."""
    if dataset_ids is not None and len(dataset_ids) == num_classes:
        return [int(i) for i in dataset_ids]
    return list(range(1, num_classes + 1))


def load_weights_strict(detector, weights: Path, opts, num_classes: int):
    """Load all weights strictly; a mismatch says which options to check."""
    from detkit.models.weights import load_weights_by_name

    try:
        return load_weights_by_name(detector, weights, strict=True)
    except ArtifactMismatchError as err:
        raise ArtifactMismatchError(
            f"{err.message}\ncheck --model ({opts.model}), --width ({opts.width}) and the "
            f"number of classes ({num_classes}) against the run that saved these weights",
            path=weights) from None
