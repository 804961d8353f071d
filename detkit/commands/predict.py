"""``detkit predict DATA``: run a trained detector over images, write COCO results json.

Writes ``OUT`` (COCO results ``[{image_id, category_id, bbox, score}]``) and its sidecar
``OUT.manifest.json`` (the resolved options, the anchors, class names, category ids and
the images with their ids), plus drawn images in ``DRAW_DIR`` when asked.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

from detkit.artifacts import write_json, write_manifest
from detkit.commands.groups import DatasetOptions, InferenceOptions, ModelOptions
from detkit.errors import ArtifactError, ArtifactMismatchError, UsageError
from detkit.families import get_family
from detkit.options import argument, as_config, option
from detkit.progress import SILENT, Progress

COMMAND = "predict"


@dataclasses.dataclass
class PredictResult:
    """What :func:`run` wrote.

    Attributes:
        out: the COCO results json.
        num_images: images processed.
        num_detections: results written.
        detections_per_class: class name -> number of results.
        source: what ``DATA`` was (``image``, ``folder`` or a dataset format).
        draw_dir: folder of drawn images, if requested.
        seconds: wall time of loading the model and running it.
        weights_summary: the weight-loading report.
        params: the model's parameter count.
        ms_per_image: wall time per image of the detection loop (decode, letterbox,
            forward pass, NMS), without model building and weight loading.
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


@dataclasses.dataclass(kw_only=True)
class Options(InferenceOptions, ModelOptions, DatasetOptions):
    """The options of ``predict``."""

    data: Path = argument("An image, a folder of images, or a dataset (lines file, COCO "
                          "json, VOC or YOLO folder; results then carry its image ids).")
    iou: float = option(0.45, "Per-class NMS IoU threshold.", low=0, high=1)
    max_det: int = option(100, "Detections kept per image.", integer=True, low=1)
    out: Path = option(Path("detections.json"), "COCO results json to write.")
    draw_dir: Optional[Path] = option(
        None, "Also write each image with its boxes drawn into this folder.")


def run(opts: Options, progress: Progress = SILENT) -> PredictResult:
    """Detect objects in images and write COCO-style results.

    ``opts.data`` is an image file, a folder of images, or a dataset (any format
    :func:`detkit.data.dataset.load_dataset` reads; ids are its image ids). Class names
    come from ``opts.classes``, else the dataset, else ``0..C-1`` with ``C`` read from the
    weights; category ids from the COCO dataset, else class index + 1.

    Raises:
        UsageError: no weights, an input size the model cannot take.
        DataError: missing images or an unreadable image (named).
        ArtifactError: missing weights or weights that do not fit the model.
        ArtifactMismatchError: an anchors file with the wrong count (naming it).
    """
    from detkit.data.dataset import read_class_names
    from detkit.models import build_model
    from detkit.predict import collect_images, run_predictions

    family = get_family(opts.model)
    if opts.input_size % family.max_stride:
        raise UsageError(f"--input-size must be a multiple of {family.max_stride}, "
                         f"got {opts.input_size}")
    if opts.weights is None:
        raise UsageError("--weights is required: the trained model's .weights.h5")
    weights = Path(opts.weights)
    if not weights.is_file():
        raise ArtifactError("weights file not found", path=weights)
    anchor_sizes, anchors_path = family.resolve_anchors(opts.anchors)

    started = time.perf_counter()
    image_set = collect_images(opts.data, format=opts.format, classes=opts.classes)
    if opts.classes is not None:
        class_names = read_class_names(opts.classes)
    else:
        class_names = list(image_set.class_names or []) or _names_from_weights(weights)
    ids = _category_ids(image_set.category_ids, len(class_names))

    detector = build_model(opts.model, len(class_names), opts.width, opts.input_size)
    report = _load_weights(detector, weights, opts, len(class_names))
    total = len(image_set.items)
    done = 0

    def on_batch(count: int) -> None:
        nonlocal done
        done += count
        progress.update(done)

    draw_path = None if opts.draw_dir is None else Path(opts.draw_dir)
    progress.start("predict", total)
    loop_started = time.perf_counter()
    results = run_predictions(detector, image_set.items, anchor_sizes, opts.input_size,
                              conf=opts.conf, iou=opts.iou, max_det=opts.max_det,
                              batch_size=opts.batch_size, category_ids=ids,
                              class_names=class_names, draw_dir=draw_path,
                              on_batch=on_batch)
    loop_seconds = time.perf_counter() - loop_started
    progress.finish()
    out = write_json(opts.out, results)
    seconds = time.perf_counter() - started
    per_class = {name: 0 for name in class_names}
    by_id = dict(zip(ids, class_names))
    for result in results:
        per_class[by_id[result["category_id"]]] += 1
    classes = [Path(opts.classes)] if opts.classes is not None else []
    extra = {"anchors": anchor_sizes, "anchors_file": str(anchors_path),
             "class_names": class_names, "category_ids": ids, "input_size": opts.input_size,
             "num_images": total, "num_detections": len(results),
             "images": [{"id": item.image_id, "file_name": str(item.path)}
                        for item in image_set.items]}
    write_manifest(out, command=COMMAND, config=as_config(opts),
                   inputs=[weights, anchors_path, *classes], extra=extra)
    return PredictResult(out=out, num_images=total, num_detections=len(results),
                         detections_per_class=per_class, source=image_set.kind,
                         draw_dir=draw_path, seconds=seconds,
                         weights_summary=report.summary(),
                         params=int(detector.count_params()),
                         ms_per_image=1000 * loop_seconds / max(total, 1))


def _names_from_weights(weights: Path) -> list[str]:
    """``0..C-1`` with ``C`` read from the weights file."""
    from detkit.models.weights import num_classes_in_file

    return [str(i) for i in range(num_classes_in_file(weights))]


def _category_ids(dataset_ids, num_classes: int) -> list[int]:
    """The dataset's category ids when they fit the classes, else class index + 1."""
    if dataset_ids is not None and len(dataset_ids) == num_classes:
        return [int(i) for i in dataset_ids]
    return list(range(1, num_classes + 1))


def _load_weights(detector, weights: Path, opts: Options, num_classes: int):
    """Load all weights strictly; a mismatch says which options to check."""
    from detkit.models.weights import load_weights_by_name

    try:
        return load_weights_by_name(detector, weights, strict=True)
    except ArtifactMismatchError as err:
        raise ArtifactMismatchError(
            f"{err.message}\ncheck --model ({opts.model}), --width ({opts.width}) and the "
            f"number of classes ({num_classes}) against the run that saved these weights",
            path=weights) from None
