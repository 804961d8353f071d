"""``detkit predict``: run a trained detector over images, write COCO results json."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Sequence

#: Default option values of the command.
DEFAULT_MODEL = "yolov3"
DEFAULT_INPUT_SIZE = 416
DEFAULT_BATCH_SIZE = 8


@dataclasses.dataclass
class PredictResult:
    """What :func:`predict` wrote.

    Attributes:
        out: the COCO results json.
        num_images: images processed.
        num_detections: results written.
        detections_per_class: class name -> number of results.
        source: what ``IMAGES`` was (``image``, ``folder`` or a dataset format).
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


def _check_options(conf: float, iou: float, max_det: int, batch_size: int,
                   input_size: int) -> None:
    from detkit.errors import UsageError
    from detkit.models import check_input_size

    if not 0.0 <= conf <= 1.0:
        raise UsageError(f"--conf must be in [0, 1], got {conf}")
    if not 0.0 <= iou <= 1.0:
        raise UsageError(f"--iou must be in [0, 1], got {iou}")
    if max_det < 1:
        raise UsageError(f"--max-det must be at least 1, got {max_det}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    check_input_size(input_size)


def predict(images: str | os.PathLike, *, weights: str | os.PathLike,
            out: str | os.PathLike, model: str = DEFAULT_MODEL,
            anchors: str | os.PathLike | None = None,
            classes: str | os.PathLike | None = None,
            input_size: int = DEFAULT_INPUT_SIZE, width: float = 1.0,
            conf: float = 0.001, iou: float = 0.45, max_det: int = 100,
            draw_dir: str | os.PathLike | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, format: str | None = None,
            category_ids: Sequence[int] | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> PredictResult:
    """Detect objects in images and write COCO-style results.

    Args:
        images: an image file, a folder of images, or a dataset (any format
            :func:`detkit.data.dataset.load_dataset` reads; ids are its image ids).
        weights: ``*.weights.h5`` of a model of this ``model``/``width``/class count.
        out: the results json to write (plus its ``.manifest.json``).
        model, width: the architecture.
        anchors: anchors file (default: the model's COCO anchors).
        classes: class names file (default: the dataset's, else ``0..C-1`` with ``C``
            read from the weights).
        input_size: letterbox side in pixels (multiple of 32).
        conf, iou, max_det: score threshold, NMS IoU threshold, detections per image.
        draw_dir: if given, write each image with its boxes drawn there.
        batch_size: images per forward pass.
        format: dataset format of ``images`` (default: detected).
        category_ids: category id of each class (default: the COCO dataset's, else
            class index + 1).
        on_progress: called as ``on_progress(done, total)`` after each batch.

    Raises:
        UsageError: bad option values.
        DataError: missing images or an unreadable image (named).
        ArtifactError: missing weights or weights that do not fit the model.
    """
    from detkit.anchors import default_anchors_path, load_anchors
    from detkit.artifacts import write_json, write_manifest
    from detkit.data.dataset import read_class_names
    from detkit.errors import ArtifactError, UsageError
    from detkit.models import build_model, num_anchors
    from detkit.predict import collect_images, run_predictions

    _check_options(conf, iou, max_det, batch_size, input_size)
    if weights is None:
        raise UsageError("--weights is required: the trained model's .weights.h5")
    weights = Path(weights)
    if not weights.is_file():
        raise ArtifactError("weights file not found", path=weights)
    expected_anchors = num_anchors(model)
    anchors_path = Path(anchors) if anchors is not None else default_anchors_path(model)
    anchor_sizes = load_anchors(anchors_path)
    if len(anchor_sizes) != expected_anchors:
        raise UsageError(f"{model} needs {expected_anchors} anchors, {anchors_path} has "
                         f"{len(anchor_sizes)}")

    started = time.perf_counter()
    image_set = collect_images(images, format=format, classes=classes)
    class_names = _class_names(classes, image_set.class_names, weights, read_class_names)
    ids = _category_ids(category_ids, image_set.category_ids, len(class_names))

    detector = build_model(model, len(class_names), width, input_size)
    report = _load_weights(detector, weights, model, width, len(class_names))
    total = len(image_set.items)
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        done += count
        if on_progress is not None:
            on_progress(done, total)

    draw_path = None if draw_dir is None else Path(draw_dir)
    loop_started = time.perf_counter()
    results = run_predictions(detector, image_set.items, anchor_sizes, input_size,
                              conf=conf, iou=iou, max_det=max_det, batch_size=batch_size,
                              category_ids=ids, class_names=class_names,
                              draw_dir=draw_path, on_batch=progress)
    loop_seconds = time.perf_counter() - loop_started
    out = write_json(out, results)
    seconds = time.perf_counter() - started
    per_class = {name: 0 for name in class_names}
    by_id = dict(zip(ids, class_names))
    for result in results:
        per_class[by_id[result["category_id"]]] += 1
    config = dict(images=str(images), weights=str(weights), model=model, width=width,
                  anchors=str(anchors_path), classes=None if classes is None else str(classes),
                  input_size=input_size, conf=conf, iou=iou, max_det=max_det,
                  batch_size=batch_size, format=format,
                  draw_dir=None if draw_path is None else str(draw_path))
    inputs = [weights, anchors_path] + ([Path(classes)] if classes is not None else [])
    write_manifest(out, command="predict", config=config, inputs=inputs, extra={
        "anchors": anchor_sizes, "class_names": class_names, "category_ids": ids,
        "input_size": input_size, "num_images": total, "num_detections": len(results),
        "images": [{"id": item.image_id, "file_name": str(item.path)}
                   for item in image_set.items]})
    return PredictResult(out=out, num_images=total, num_detections=len(results),
                         detections_per_class=per_class, source=image_set.kind,
                         draw_dir=draw_path, seconds=seconds,
                         weights_summary=report.summary(),
                         params=int(detector.count_params()),
                         ms_per_image=1000 * loop_seconds / max(total, 1))


def _class_names(classes, dataset_names, weights: Path, read_class_names) -> list[str]:
    """Names from ``--classes``, else the dataset's, else ``0..C-1`` from the weights."""
    from detkit.models.weights import num_classes_in_file

    if classes is not None:
        return read_class_names(classes)
    if dataset_names:
        return list(dataset_names)
    return [str(i) for i in range(num_classes_in_file(weights))]


def _category_ids(given, dataset_ids, num_classes: int) -> list[int]:
    from detkit.errors import UsageError

    if given is not None:
        ids = [int(i) for i in given]
        if len(ids) != num_classes or len(set(ids)) != len(ids):
            raise UsageError(f"need {num_classes} distinct category ids, got {ids}")
        return ids
    if dataset_ids is not None and len(dataset_ids) == num_classes:
        return [int(i) for i in dataset_ids]
    return list(range(1, num_classes + 1))


def _load_weights(detector, weights: Path, model: str, width: float, num_classes: int):
    """Load all weights strictly; a mismatch says which options to check."""
    from detkit.errors import ArtifactMismatchError
    from detkit.models.weights import load_weights_by_name

    try:
        return load_weights_by_name(detector, weights, strict=True)
    except ArtifactMismatchError as err:
        raise ArtifactMismatchError(
            f"{err.message}\ncheck --model ({model}), --width ({width}) and the number of "
            f"classes ({num_classes}) against the run that saved these weights",
            path=weights) from None
