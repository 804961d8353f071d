"""``detkit eval-map DATA``: COCO (pycocotools-exact) or VOC mAP of detections, to report.json.

Evaluates ``--detections`` (a COCO results json), or first runs the model of
``--weights`` over the ground truth's images (``detkit predict``; the model, anchors and
input size come from the manifest of the weights or of an export of ``detkit export``,
or from ``--model`` and its flags). Writes ``OUT`` (the report: stats, per-class table,
F1-optimal confidence, the model block in ``--model`` mode) with its sidecar manifest,
and PR / F1 curves under ``--plots``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from detkit.artifacts import (check_outputs, check_own_file, check_spares_files,
                              made_by, write_json, write_manifest)
from detkit.commands import predict
from detkit.commands.groups import (GROUND_TRUTH_HELP, DatasetOptions,
                                    InferenceOptions, ModelOptions)
from detkit.commands.predict import names_subset
from detkit.errors import DataError, UsageError
from detkit.evaluate import (CocoParams, GroundTruth, check_detections,
                             detections_model, evaluate_coco, evaluate_voc, load_detections,
                             load_ground_truth)
from detkit.evaluate.coco import family_params
from detkit.evaluate.plots import require_pyplot, write_plots
from detkit.evaluate.report import coco_report, table_rows, voc_report
from detkit.evaluate.summary import stat_names
from detkit.export.settings import read_settings
from detkit.families import MODEL_NAMES, get_family
from detkit.models.recorded import read_recorded
from detkit.options import argument, as_config, option
from detkit.progress import SILENT, Progress
from detkit.tables import TextTable

COMMAND = "eval-map"
#: Metrics the command computes.
METRICS = ("coco", "voc07", "voc12")
#: The option groups eval-map hands to ``predict`` in ``--model`` mode.
PREDICT_GROUPS = (DatasetOptions, ModelOptions, InferenceOptions)


@dataclasses.dataclass
class EvalMapResult:
    """What :func:`run` computed and wrote.

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

    def table(self) -> TextTable:
        """The per-class rows of the report (AP figures, TP/FP at the F1-optimal
        confidence)."""
        rows = table_rows(self.report)
        columns = [key for key in rows[0] if key != "class"] if rows else []
        return TextTable(f"eval-map ({self.metric}), TP/FP at the F1-optimal confidence, "
                         f"IoU {self.report['counts_iou']:g}", ("class", *columns),
                         [(row["class"], *(_cell(row[key]) for key in columns))
                          for row in rows])

    def summary_lines(self) -> list[str]:
        """The F1-optimal operating point, the headline figures and the files written."""
        report, best = self.report, self.report["f1_optimal"]
        lines = [f"F1-optimal confidence (all classes): {_cell(best['confidence'])} "
                 f"(F1 {best['f1']:.3f}, P {best['precision']:.3f}, R {best['recall']:.3f})"]
        if self.metric == "coco":
            names = stat_names(tuple(report["params"]["max_dets"]))
            lines.append("  ".join(f"{name} {_cell(report[name])}" for name in names))
        else:
            lines.append(f"mAP ({self.metric}, IoU {report['iou']:g}): "
                         f"{_cell(report['mAP'], 4)}")
        wrote = [str(p) for p in [self.out, *self.plots] if p is not None]
        if wrote:
            lines.append(f"wrote {', '.join(wrote)}")
        return lines


def _cell(value, digits: int = 3) -> str:
    """A report value as text: ``-`` for None, ``n/a`` for COCO's -1, else ``digits``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if value < 0 else f"{value:.{digits}f}"
    return str(value)


def parse_iou_thresholds(value: str | Sequence[float] | None) -> tuple[float, ...] | None:
    """``"0.5:0.95:0.05"`` (start:stop:step, stop included) or ``"0.5,0.75"`` -> floats."""
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
    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else tuple(int(v) for v in value)
    try:
        return tuple(int(part) for part in str(value).replace(" ", ",").split(",") if part)
    except ValueError:
        raise UsageError(f"--max-dets must be three integers like 1,10,100, got {value!r}") \
            from None


@dataclasses.dataclass(kw_only=True)
class Options(InferenceOptions, ModelOptions, DatasetOptions):
    """The options of ``eval-map`` (DATA is the ground truth)."""

    data: Path = argument(GROUND_TRUTH_HELP, role="input")

    detections: Optional[Path] = option(
        None, "COCO results json [{image_id, category_id, bbox, score}] to evaluate; with "
              "--weights (the model is run), where to write its detections (an existing "
              "file only with --exist-ok; default: <out stem>.detections.json).",
        role="input")
    metric: str = option("coco", "coco (pycocotools-exact), voc07 (11-point) or voc12 "
                         "(all points).", choices=METRICS)
    iou: float = option(0.5, "VOC overlap threshold.", above=0, high=1)
    iou_thresholds: Optional[str] = option(
        None, "COCO IoU thresholds: start:stop:step or a comma list (default "
              "0.5:0.95:0.05).")
    max_dets: Optional[str] = option(
        None, "COCO detections per image and category for the three AR stats, three "
              "integers (default 1,10,100; when an rpn model is run, 1,100,1000, as many "
              "proposals kept per image).")
    class_agnostic: bool = option(
        False, "COCO: ignore categories when matching (one pooled class; always when an "
               "rpn model is run, whose proposals have no class).")
    out: Optional[Path] = option(Path("report.json"), "report.json to write (with its "
                                 "manifest).", role="output")
    plots: Optional[Path] = option(
        None, "Folder for pr_curve.png and f1_curve.png (needs matplotlib).",
        role="output", folder=True)
    model: Optional[str] = option(
        None, f"Architecture of --weights ({', '.join(MODEL_NAMES)}); needs --weights "
              f"(default: the one recorded in the weights' or the export's manifest).",
        choices=MODEL_NAMES)
    weights: Optional[Path] = option(None, predict.WEIGHTS_HELP, role="input")
    compile: bool = option(True, predict.COMPILE_HELP, toggle=True)
    exist_ok: bool = option(False, "With --weights: write the model's detections over an "
                            "existing --detections file (without it, one is refused).",
                            toggle=True)


def run(opts: Options, progress: Progress = SILENT) -> EvalMapResult:
    """Evaluate detections against ground truth; write report.json (and plots).

    The ground truth ``opts.data`` is a COCO json (read directly, with its ``area`` and
    ``iscrowd``) or any dataset detkit reads (areas are box areas; category ids as
    ``predict`` writes). ``opts.out`` ``None`` writes no report.

    Raises:
        UsageError: bad option values, neither ``detections`` nor ``model``, ``model``
            without ``weights``.
        DataError: unreadable or empty ground truth, malformed detections, unknown image
            or category ids.
    """
    if opts.detections is None and opts.model is None and opts.weights is None:
        raise UsageError("give --detections DETS.json, or --weights (trained weights or an "
                         "export) to run a model")
    if opts.model is not None and opts.weights is None:
        raise UsageError("--model needs --weights (the trained model's .weights.h5 or an "
                         "export)")
    if opts.model is not None or opts.weights is not None:
        check_detections_output(opts)
        check_metric_fits(opts)
    params = None
    if opts.metric == "coco":
        kwargs = {}
        thresholds = parse_iou_thresholds(opts.iou_thresholds)
        limits = parse_max_dets(opts.max_dets)
        if thresholds is not None:
            kwargs["iou_thresholds"] = thresholds
        if limits is not None:
            kwargs["max_dets"] = limits
        params = CocoParams(class_agnostic=opts.class_agnostic, **kwargs)
    if opts.plots is not None:
        require_pyplot()                    # fail early when matplotlib is missing

    gt = load_ground_truth(opts.data, format=opts.format, classes=opts.classes)
    model_names = _model_class_names(opts) if opts.classes is None else None
    if names_subset(gt.class_names, gt.format, model_names):   # ids as the model's
        gt = load_ground_truth(opts.data, format=opts.format, classes=model_names)
    check_spares_ground_truth(opts, gt)
    if len(gt) == 0:
        raise DataError("the ground truth has no boxes: nothing to evaluate", path=gt.source)
    model_info, detections, notes, architecture = None, opts.detections, [], {}
    if opts.model is not None or opts.weights is not None:
        detections, model_info, notes, architecture = _run_model(opts, progress)
        if params is not None:
            params = family_params(get_family(model_info["name"]), params,
                                   keep_max_dets=opts.max_dets is not None)
    detections = Path(detections)
    warnings = list(notes)
    if model_info is None:
        params = _params_of_recorded_family(opts, detections, params, warnings)
    check_detections(detections, gt,
                     classes=params is None or not params.class_agnostic)
    dets = load_detections(detections, gt)
    if len(dets) == 0:
        warnings.append(f"{detections} has no detections: every AP is 0")
    inputs = {"ground_truth": str(opts.data), "detections": str(detections)}
    if opts.metric == "coco":
        result = evaluate_coco(gt, dets, params)
        report = coco_report(result, **inputs)
    else:
        result = evaluate_voc(gt, dets, metric=opts.metric, iou=opts.iou)
        report = voc_report(result, **inputs)
    if model_info is not None:
        report["model"] = model_info
    plot_paths = []
    if opts.plots is not None:
        plot_paths = write_plots(result.matches, result.class_names, opts.plots,
                                 title=opts.metric)
    out_path = None
    if opts.out is not None:
        out_path = write_json(opts.out, report)
        write_manifest(out_path, command=COMMAND, config={**as_config(opts), **architecture},
                       inputs=[p for p in (Path(opts.data), detections) if p.is_file()],
                       extra={"metric": opts.metric})
    return EvalMapResult(metric=opts.metric, report=report, out=out_path,
                         detections=detections, plots=plot_paths, warnings=warnings)


def _params_of_recorded_family(opts: Options, detections: Path,
                               params: Optional[CocoParams],
                               warnings: list[str]) -> Optional[CocoParams]:
    """The COCO settings for ``--detections`` that predict made with a class-agnostic
    family (rpn proposals, recorded in their manifest): pooled categories and the
    family's proposal limits (unless ``--max-dets``), with a note, as ``--weights`` runs.

    Raises:
        UsageError: ``--metric voc07``/``voc12`` for such detections (exit 2).
    """
    model = detections_model(detections)
    if model not in MODEL_NAMES or not get_family(model).class_agnostic:
        return params
    if params is None:
        raise UsageError(f"{detections} holds the proposals of --model {model} (its "
                         f"manifest), which have no classes: score them with --metric "
                         f"coco, not --metric {opts.metric}")
    family = get_family(model)
    limits = ("" if opts.max_dets is not None else
              f" with max dets {','.join(map(str, family.max_dets))}")
    warnings.append(f"{detections}: proposals of --model {model} (its manifest), scored "
                    f"class-agnostic{limits}")
    return family_params(family, params, keep_max_dets=opts.max_dets is not None)


def _model_class_names(opts: Options) -> Optional[list[str]]:
    """The class names recorded with ``--weights`` (an export's or the weights'
    manifest); ``None`` without weights or a record."""
    names = getattr(_recorded_settings(opts), "class_names", None)
    return None if names is None else list(names)


def _recorded_settings(opts: Options):
    """What the manifest of ``--weights`` (an export's or trained weights') records;
    ``None`` without weights or a record."""
    if opts.weights is None or not Path(opts.weights).exists():
        return None
    return read_settings(opts.weights) or read_recorded(Path(opts.weights))


def check_metric_fits(opts: Options) -> None:
    """VOC mAP scores classes, which the RPN's proposals do not have.

    Raises:
        UsageError: ``--metric voc07``/``voc12`` for a class-agnostic family (given as
            ``--model`` or recorded in the manifest of an export or of the weights),
            exit 2.
    """
    if opts.metric == "coco":
        return
    model = opts.model
    if model is None:
        model = getattr(_recorded_settings(opts), "model", None)
    if model is not None and get_family(model).class_agnostic:
        raise UsageError(f"--model {model} proposes boxes without classes: score them with "
                         f"--metric coco (class-agnostic AR@100, AR@1000), not "
                         f"--metric {opts.metric}")


def detections_output(opts: Options) -> Path:
    """Where ``--model`` mode writes the model's detections: ``--detections``, else
    ``<out stem>.detections.json`` beside the report (beside DATA without ``--out``)."""
    if opts.detections is not None:
        return Path(opts.detections)
    base = Path(opts.out) if opts.out is not None else Path(opts.data)
    return base.with_name(base.stem + ".detections.json")


def check_spares_ground_truth(opts: Options, gt: GroundTruth) -> None:
    """The report, its plots and a model's detections may overwrite none of the files the
    ground truth was read from (a VOC folder's xml, a YOLO label, a classes.txt).

    Raises:
        UsageError: naming the output and the file (exit 2).
    """
    runs_model = opts.model is not None or opts.weights is not None
    check_spares_files(dataclasses.replace(opts, detections=None) if runs_model else opts,
                       gt.files, f"a file of the ground truth DATA {opts.data}",
                       [("--detections", detections_output(opts))] if runs_model else ())


def check_detections_output(opts: Options) -> None:
    """Before the model runs: its detections file may overwrite no input, and no
    existing file but the detections of an earlier eval-map run (their manifest names it;
    a re-run replaces them, as it does the report) unless ``--exist-ok``.

    Raises:
        UsageError: an existing ``--detections`` without ``--exist-ok``, or a detections
            file that is (or links to) an input (exit 2).
        ArtifactError: the detections file cannot be written (exit 1).
    """
    path = detections_output(opts)
    if not opts.exist_ok and opts.detections is not None and os.path.lexists(path) \
            and made_by(path) != COMMAND:          # the user's detections, to keep
        raise UsageError(f"--detections {path} already exists: with --weights, eval-map "
                         f"writes the model's detections there; pass --exist-ok to replace "
                         f"it, or choose another --detections")
    if not opts.exist_ok:
        check_own_file("--detections", path, COMMAND)
    # --detections is an output here, not the input its option declares.
    check_outputs(dataclasses.replace(opts, detections=None), [("--detections", path)])


def predict_options(opts: Options) -> predict.Options:
    """``predict``'s options for eval-map's ``--model`` mode: the shared groups, and the
    detections file (default: ``<out stem>.detections.json`` beside the report)."""
    detections = detections_output(opts)
    shared = {field.name for group in PREDICT_GROUPS for field in dataclasses.fields(group)}
    limits = parse_max_dets(opts.max_dets)
    return predict.Options(out=Path(detections), compile=opts.compile,
                           max_det=limits[-1] if limits else None,
                           **{name: getattr(opts, name) for name in sorted(shared)})


def _run_model(opts: Options, progress: Progress
               ) -> tuple[Path, dict[str, Any], list[str], dict[str, Any]]:
    """Run ``detkit predict`` over the ground truth's images.

    Returns:
        The results json, the report's ``model`` block: name, width, params,
        weights_mb (size on disk of the weights or the export), ms_per_image (detection
        loop wall time per image, after a warm-up call), images, format (``keras`` or
        the export format), quantize, nms (decoding and NMS in the export), runner (what
        ran it) and warmup_s; the
        run's notes (warnings); and the architecture that ran (model, width, input size,
        backbone: the manifest's config, in place of the flags' defaults).
    """
    result = predict.run(predict_options(opts), progress, command=COMMAND)
    info = {"name": result.model, "width": result.width,
            "params": result.params or None,
            "weights_mb": round(result.size_bytes / 2**20, 3),
            "ms_per_image": round(result.ms_per_image, 2), "images": result.num_images,
            "format": result.weights_format, "quantize": result.quantize,
            "nms": result.nms,
            "runner": result.runner, "warmup_s": round(result.warmup_seconds, 2)}
    return Path(result.out), info, list(result.notes), result.architecture
