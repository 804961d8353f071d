"""``detkit eval-map DATA``: COCO (pycocotools-exact) or VOC mAP, per-class table, report.json."""

from __future__ import annotations

from rich.table import Table

from detkit.cli.app import console, warn
from detkit.cli._command import register
from detkit.commands.eval_map import EvalMapResult, Options, run


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if value < 0 else f"{value:.{digits}f}"
    return str(value)


def _render(result: EvalMapResult) -> None:
    from detkit.evaluate.report import table_rows
    from detkit.evaluate.summary import STAT_NAMES

    for warning in result.warnings:
        warn(warning)
    report = result.report
    rows = table_rows(report)
    table = Table(title=f"eval-map ({result.metric}), TP/FP at the F1-optimal confidence, "
                        f"IoU {report['counts_iou']:g}")
    columns = [key for key in rows[0] if key != "class"] if rows else []
    for key in ["class", *columns]:
        table.add_column(key, justify="left" if key == "class" else "right")
    for row in rows:
        table.add_row(row["class"], *(_fmt(row[key]) for key in columns))
    console.print(table)
    best = report["f1_optimal"]
    console.print(f"F1-optimal confidence (all classes): {_fmt(best['confidence'])} "
                  f"(F1 {best['f1']:.3f}, P {best['precision']:.3f}, R {best['recall']:.3f})",
                  highlight=False, soft_wrap=True)
    if result.metric == "coco":
        summary = "  ".join(f"{name} {_fmt(report[name])}" for name in STAT_NAMES)
    else:
        summary = f"mAP ({result.metric}, IoU {report['iou']:g}): {_fmt(report['mAP'], 4)}"
    console.print(summary, highlight=False, soft_wrap=True)
    wrote = [str(p) for p in [result.out, *result.plots] if p is not None]
    if wrote:
        console.print(f"wrote {', '.join(wrote)}", highlight=False, soft_wrap=True)


register("eval-map", Options, run, _render)
