"""``detkit doctor DATA``: a dataset's health report (tables, report.json, plots)."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from detkit.cli.app import console, err_console, warn
from detkit.cli._command import register
from detkit.commands.doctor import DoctorResult, Options, run
from detkit.doctor.findings import FATAL, WARNING, rare_classes, Thresholds

#: Distribution columns of the size table.
_PERCENTILES = ("min", "p5", "median", "p95", "max")
#: Classes listed in the terminal table (all are in report.json).
_MAX_CLASS_ROWS = 100


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    return table


def _overview(report: dict[str, Any]) -> Table:
    images, boxes = report["images"], report["boxes"]
    table = _table("dataset", "figure", "count")
    rows = [("images (records)", images["records"]),
            ("  without boxes", images["without_boxes"]),
            ("  repeated entries", images["repeated_entries"])]
    if images["checked"] != "none":
        rows += [(f"image files (checked: {images['checked']})", images["files"]),
                 ("  found", images["found"]), ("  missing", images["missing"]),
                 ("  unreadable", images["unreadable"]),
                 ("  size differs from annotation", images["size_mismatch"]),
                 ("  truncated JPEG", images["truncated_jpeg"]),
                 ("  exact duplicates", images["duplicates"]["files"])]
    reader, lb = boxes["reader"], boxes["letterbox"]
    rows += [("boxes annotated", boxes["annotated"]),
             ("  dropped: zero area", reader["dropped_degenerate"]),
             ("  dropped: outside the image", reader["dropped_outside"]),
             ("  clipped to the image", reader["clipped"]),
             ("  dropped: under 1 px after letterbox", lb["dropped"]),
             ("  clipped to the input after letterbox", lb["clipped"]),
             ("  kept for training", boxes["kept"]),
             ("  crowd / difficult", f"{boxes['crowd']} / {boxes['difficult']}"),
             ("boxes per image (mean / max)",
              f"{_fmt(boxes['per_image']['mean'])} / {boxes['per_image']['max']}")]
    for name, value in rows:
        table.add_row(name, _fmt(value))
    return table


def _classes(report: dict[str, Any]) -> Table:
    settings = report["settings"]
    limits = Thresholds(**{key: settings[key] for key in (
        "rare_fraction", "rare_count", "max_imbalance", "max_missing")})
    rare = {row["id"] for row in rare_classes(report["classes"], limits)}
    table = _table("boxes per class", "class", "boxes", "share", "images",
                   "median w x h", "dropped", "flag")
    for row in report["classes"][:_MAX_CLASS_ROWS]:
        flag = "absent" if row["boxes"] == 0 else "rare" if row["id"] in rare else ""
        size = ("-" if row["median_w"] is None
                else f"{row['median_w']:.4g} x {row['median_h']:.4g}")
        table.add_row(f"{row['id']} {escape(row['name'])}", str(row["boxes"]),
                      f"{100 * row['share']:.2f}%", str(row["images"]), size,
                      str(row["dropped"]), f"[yellow]{flag}[/]" if flag else "")
    hidden = len(report["classes"]) - _MAX_CLASS_ROWS
    if hidden > 0:
        table.caption = f"{hidden} more classes in report.json"
    return table


def _sizes(report: dict[str, Any]) -> Table:
    sizes = report["sizes"]
    table = _table(f"box sizes at input {report['settings']['input_size']} (letterboxed, "
                   "kept boxes, px)", "", *_PERCENTILES, "mean")
    for name in ("width", "height", "side", "aspect"):
        label = {"side": "sqrt(w x h)", "aspect": "aspect w/h"}.get(name, name)
        table.add_row(label, *(_fmt(sizes[name][key]) for key in (*_PERCENTILES, "mean")))
    areas = sizes["area_classes"]
    table.caption = (f"small (< 32x32): {areas['small']}, medium: {areas['medium']}, "
                     f"large (>= 96x96): {areas['large']}")
    return table


def _anchors(report: dict[str, Any]) -> tuple[Table | None, list[str]]:
    """The anchor quality table and the lines printed under it."""
    section = report["anchors"]
    if section["quality"] is None:
        return None, []
    suggested = section["suggested"]
    columns = ["metric", "anchors"] + (["k-means suggestion"] if suggested else [])
    table = _table(f"anchor fit ({section['n_measured']} boxes >= "
                   f"{section['min_size']:g} px, anchor_t {section['anchor_t']:g})",
                   *columns)
    for name in ("avg_iou", "bpr", "anchors_per_target", "fitness"):
        row = [name, f"{section['quality'][name]:.4f}"]
        if suggested:
            row.append(f"{suggested['quality'][name]:.4f}")
        table.add_row(*row)

    def listed(anchors: list) -> str:
        return " ".join(f"{w:g},{h:g}" for w, h in anchors)

    lines = [f"anchors ({report['settings']['anchors']}): {listed(section['anchors'])}"]
    if suggested:
        lines.append(f"suggested: {listed(suggested['anchors'])}")
    elif section["suggested_note"]:
        lines.append(f"no suggestion: {section['suggested_note']}")
    lines.append(f"boxes under the finest stride ({min(section['strides'])} px): "
                   f"{section['under_finest_stride']}; no fitting anchor: "
                   + ", ".join(f"{k.replace('_', ' ')} {v}"
                               for k, v in section["unfit"].items()))
    return table, lines


def _render(result: DoctorResult) -> None:
    report = result.report
    dataset = report["dataset"]
    console.print(f"doctor: {escape(dataset['path'])} ({dataset['format']}, "
                  f"{dataset['num_classes']} classes)", highlight=False, soft_wrap=True)
    for table in (_overview(report), _classes(report), _sizes(report)):
        console.print(table)
    table, lines = _anchors(report)
    if table is not None:
        console.print(table)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    for finding in result.findings:
        if finding.level == FATAL:
            err_console.print(f"[bold red]fatal:[/] {escape(finding.message)}",
                              highlight=False, soft_wrap=True)
        elif finding.level == WARNING:
            warn(finding.message)
        else:
            console.print(f"note: {finding.message}", highlight=False, soft_wrap=True,
                          markup=False)
    if result.plots_note:
        console.print(result.plots_note, highlight=False, soft_wrap=True, markup=False)
    plots = f" and {len(result.plots)} plots" if result.plots else ""
    console.print(f"wrote {result.report_path}{plots}", highlight=False, soft_wrap=True,
                  markup=False)
    if result.fatal:
        raise typer.Exit(1)


register("doctor", Options, run, _render,
         help="Report a dataset's health before training: images, boxes per class, box "
              "sizes at the input, anchor fit. Exit code 1 on a fatal problem: no image "
              "readable, more than --max-missing of the images missing or unreadable "
              "(default: any), or no box left for training.")
