"""``detkit eval-map``: COCO (pycocotools-exact) or VOC mAP of detections, to report.json."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Sequence

#: Metrics the command computes.
METRICS = ("coco", "voc07", "voc12")
#: Default score threshold of ``--model`` mode (low, as mAP needs the whole PR curve).
DEFAULT_MODEL_CONF = 0.001


@dataclasses.dataclass
class EvalMapResult:
    """What :func:`eval_map` computed and wrote.

    Attributes:
        metric: ``coco``, ``voc07`` or ``voc12``.
        report: the report.json mapping (see :mod:`detkit.evaluate.report`).
        out: the report file, if one was written.
        detections: the detections file evaluated (given, or written by ``--model``).
        plots: PNG files written.
        warnings: things the user should know (e.g. no detections at all).
    """

    metric: str
    report: dict[str, Any]
    out: Path | None
    detections: Path
    plots: list[Path]
    warnings: list[str]


def parse_iou_thresholds(value: str | Sequence[float] | None) -> tuple[float, ...] | None:
    """``"0.5:0.95:0.05"`` (start:stop:step, stop included) or ``"0.5,0.75"`` -> floats."""
    import numpy as np

    from detkit.errors import UsageError

    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else tuple(float(v) for v in value)
    text = str(value).strip()
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            return tuple(np.linspace(start, stop, count).tolist())
        return tuple(float(part) for part in text.replace(" ", ",").split(",") if part)
    except ValueError:
        raise UsageError(f"--iou-thresholds must be 'start:stop:step' or a comma list of "
                         f"numbers, got {value!r}") from None


def parse_max_dets(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"1,10,100"`` -> ``(1, 10, 100)``."""
    from detkit.errors import UsageError

    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else tuple(int(v) for v in value)
    try:
        return tuple(int(part) for part in str(value).replace(" ", ",").split(",") if part)
    except ValueError:
        raise UsageError(f"--max-dets must be three integers like 1,10,100, got {value!r}") \
            from None


def eval_map(ground_truth: str | os.PathLike, *, detections: str | os.PathLike | None = None,
             metric: str = "coco", out: str | os.PathLike | None = None,
             iou: float = 0.5, iou_thresholds: str | Sequence[float] | None = None,
             max_dets: str | Sequence[int] | None = None, class_agnostic: bool = False,
             plots: str | os.PathLike | None = None, format: str | None = None,
             classes: str | os.PathLike | None = None,
             model: str | None = None, weights: str | os.PathLike | None = None,
             anchors: str | os.PathLike | None = None, input_size: int = 416,
             width: float = 1.0, conf: float = DEFAULT_MODEL_CONF, batch_size: int = 8,
             config: dict[str, Any] | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> EvalMapResult:
    """Evaluate detections against ground truth; write report.json (and plots).

    Args:
        ground_truth: a COCO json (read directly, with its ``area`` and ``iscrowd``) or any
            dataset detkit reads (areas are box areas; category ids as ``predict`` writes).
        detections: COCO results json to evaluate; with ``model``, where to write the
            model's detections (default: ``<out stem>.detections.json``).
        metric: ``coco``, ``voc07`` (11-point) or ``voc12`` (all points).
        out: report.json to write (with its manifest); ``None`` writes nothing.
        iou: VOC overlap threshold.
        iou_thresholds: COCO thresholds, ``"0.5:0.95:0.05"`` or a list.
        max_dets: COCO detections per image and category, three values.
        class_agnostic: COCO: pool categories (``useCats = 0``).
        plots: folder for ``pr_curve.png`` and ``f1_curve.png``.
        format, classes: how to read ``ground_truth``.
        model, weights, anchors, input_size, width, conf, batch_size: run this model over
            the ground truth's images first (``detkit predict``'s options).
        config: the resolved options, recorded in the manifest.
        on_progress: ``(done, total)`` images, in ``--model`` mode.

    Raises:
        UsageError: bad option values, neither or both of ``detections`` / ``model``.
        DataError: unreadable or empty ground truth, malformed detections, unknown image
            or category ids.
    """
    from detkit.artifacts import write_json, write_manifest
    from detkit.errors import DataError, UsageError
    from detkit.evaluate import (CocoParams, evaluate_coco, evaluate_voc, load_detections,
                                 load_ground_truth)
    from detkit.evaluate.report import coco_report, voc_report

    if metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if detections is None and model is None:
        raise UsageError("give --detections DETS.json, or --model and --weights to run a model")
    if model is not None and weights is None:
        raise UsageError("--model needs --weights (the trained model's .weights.h5)")
    params = None
    if metric == "coco":
        kwargs = {}
        thresholds, limits = parse_iou_thresholds(iou_thresholds), parse_max_dets(max_dets)
        if thresholds is not None:
            kwargs["iou_thresholds"] = thresholds
        if limits is not None:
            kwargs["max_dets"] = limits
        params = CocoParams(class_agnostic=class_agnostic, **kwargs)
    elif not 0 < iou <= 1:
        raise UsageError(f"--iou must be in (0, 1], got {iou}")
    if plots is not None:
        from detkit.evaluate.plots import require_pyplot

        require_pyplot()                    # fail early when matplotlib is missing

    gt = load_ground_truth(ground_truth, format=format, classes=classes)
    if len(gt) == 0:
        raise DataError("the ground truth has no boxes: nothing to evaluate", path=gt.source)
    model_info = None
    if model is not None:
        detections, model_info = _run_model(ground_truth, detections, out, model=model, weights=weights,
                                anchors=anchors, classes=classes, input_size=input_size,
                                width=width, conf=conf, batch_size=batch_size, format=format,
                                on_progress=on_progress)
    detections = Path(detections)
    dets = load_detections(detections, gt)
    warnings = []
    if len(dets) == 0:
        warnings.append(f"{detections} has no detections: every AP is 0")
    inputs = {"ground_truth": str(ground_truth), "detections": str(detections)}
    if metric == "coco":
        result = evaluate_coco(gt, dets, params)
        report = coco_report(result, **inputs)
    else:
        result = evaluate_voc(gt, dets, metric=metric, iou=iou)
        report = voc_report(result, **inputs)
    if model_info is not None:
        report["model"] = model_info
    plot_paths = []
    if plots is not None:
        from detkit.evaluate.plots import write_plots

        plot_paths = write_plots(result.matches, result.class_names, plots, title=metric)
    out_path = None
    if out is not None:
        out_path = write_json(out, report)
        write_manifest(out_path, command="eval-map", config=dict(config or {}),
                       inputs=[p for p in (Path(ground_truth), detections) if p.is_file()],
                       extra={"metric": metric})
    return EvalMapResult(metric=metric, report=report, out=out_path, detections=detections,
                         plots=plot_paths, warnings=warnings)


def _run_model(ground_truth, detections, out, *, on_progress, **options
               ) -> tuple[Path, dict]:
    """Run ``detkit predict`` over the ground truth's images.

    Returns:
        The results json and the report's ``model`` block: name, width, params,
        weights_mb and ms_per_image (detection loop wall time per image).
    """
    from detkit.api.predict import predict

    if detections is None:
        base = Path(out) if out is not None else Path(ground_truth)
        detections = base.with_name(base.stem + ".detections.json")
    result = predict(ground_truth, out=detections, on_progress=on_progress, **options)
    info = {"name": options["model"], "width": options["width"], "params": result.params,
            "weights_mb": round(Path(options["weights"]).stat().st_size / 2**20, 3),
            "ms_per_image": round(result.ms_per_image, 2), "images": result.num_images}
    return Path(result.out), info
