"""``detkit eval-map GT``: COCO (pycocotools-exact) or VOC mAP, per-class table, report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli.app import app, console, err_console, handle_errors
from detkit.cli.options import Anchors, Classes, Config, Data, Format, InputSize, Width

DetectionsFile = Annotated[Optional[Path], typer.Option(
    "--detections", help="COCO results json [{image_id, category_id, bbox, score}] to "
                         "evaluate; with --model, where to write the model's detections.")]
Metric = Annotated[str, typer.Option(
    "--metric", help="coco (pycocotools-exact), voc07 (11-point) or voc12 (all points).")]
Iou = Annotated[float, typer.Option("--iou", help="VOC overlap threshold.")]
IouThresholds = Annotated[Optional[str], typer.Option(
    "--iou-thresholds", help="COCO IoU thresholds: start:stop:step or a comma list "
                             "(default 0.5:0.95:0.05).")]
MaxDets = Annotated[Optional[str], typer.Option(
    "--max-dets", help="COCO detections per image and category for AR1/AR10/AR100, "
                       "three integers (default 1,10,100).")]
ClassAgnostic = Annotated[bool, typer.Option(
    "--class-agnostic", help="COCO: ignore categories when matching (one pooled class).")]
Plots = Annotated[Optional[Path], typer.Option(
    "--plots", help="Folder for pr_curve.png and f1_curve.png (needs matplotlib).")]
ModelName = Annotated[Optional[str], typer.Option(
    "--model", help="Run this architecture (yolov3 or yolov3-tiny) over the ground truth's "
                    "images instead of reading --detections.")]
Weights = Annotated[Optional[Path], typer.Option(
    "--weights", help="Trained model weights (.weights.h5) for --model.")]
Conf = Annotated[float, typer.Option("--conf", help="--model: score threshold.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="--model: images per pass.")]
ReportOut = Annotated[Path, typer.Option("--out", help="report.json to write.")]


@app.command("eval-map")
def eval_map(
    ground_truth: Data,
    detections: DetectionsFile = None,
    metric: Metric = "coco",
    iou: Iou = 0.5,
    iou_thresholds: IouThresholds = None,
    max_dets: MaxDets = None,
    class_agnostic: ClassAgnostic = False,
    out: ReportOut = Path("report.json"),
    plots: Plots = None,
    format: Format = None,
    classes: Classes = None,
    model: ModelName = None,
    weights: Weights = None,
    anchors: Anchors = None,
    input_size: InputSize = 416,
    width: Width = 1.0,
    conf: Conf = 0.001,
    batch_size: BatchSize = 8,
    config: Config = None,
) -> None:
    """Evaluate detections (a COCO results json, or a model run) against ground truth."""
    from detkit.api.eval_map import eval_map as run

    options = dict(detections=detections, metric=metric, out=out, iou=iou,
                   iou_thresholds=iou_thresholds, max_dets=max_dets,
                   class_agnostic=class_agnostic, plots=plots, format=format, classes=classes,
                   model=model, weights=weights, anchors=anchors, input_size=input_size,
                   width=width, conf=conf, batch_size=batch_size)
    recorded = {key: str(value) if isinstance(value, Path) else value
                for key, value in options.items()}
    with handle_errors():
        result = run(ground_truth, config=recorded, **options)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    _render(result)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if value < 0 else f"{value:.{digits}f}"
    return str(value)


def _render(result) -> None:
    from rich.table import Table

    from detkit.evaluate.report import table_rows

    report = result.report
    rows = table_rows(report)
    table = Table(title=f"eval-map ({result.metric}), TP/FP at the F1-optimal confidence, "
                        f"IoU {report['counts_iou']:g}")
    columns = [key for key in rows[0] if key != "class"] if rows else []
    table.add_column("class")
    for key in columns:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(row["class"], *(_fmt(row[key]) for key in columns))
    console.print(table)
    best = report["f1_optimal"]
    console.print(f"F1-optimal confidence (all classes): {_fmt(best['confidence'])} "
                  f"(F1 {best['f1']:.3f}, P {best['precision']:.3f}, R {best['recall']:.3f})",
                  highlight=False, soft_wrap=True)
    if result.metric == "coco":
        from detkit.evaluate.summary import STAT_NAMES

        console.print("  ".join(f"{name} {_fmt(report[name])}" for name in STAT_NAMES),
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"mAP ({result.metric}, IoU {report['iou']:g}): {_fmt(report['mAP'], 4)}",
                      highlight=False, soft_wrap=True)
    wrote = [str(p) for p in [result.out, *result.plots] if p is not None]
    if wrote:
        console.print(f"wrote {', '.join(wrote)}", highlight=False, soft_wrap=True)
