"""Side-by-side comparison of ``eval-map`` reports (accuracy, size, speed)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

from detkit.errors import DataError


@dataclasses.dataclass
class ReportRow:
    """One report's headline figures (``None`` where the report lacks them)."""

    name: str
    metric: str
    ap: Optional[float]
    ap50: Optional[float]
    model: Optional[str]
    width: Optional[float]
    params: Optional[int]
    weights_mb: Optional[float]
    ms_per_image: Optional[float]


def read_report_row(path: str | os.PathLike) -> ReportRow:
    """Read the headline figures of one ``eval-map`` report.json.

    COCO reports give ``AP`` (0.50:0.95) and ``AP50``; VOC reports give ``mAP`` as AP50.
    The ``model`` block (written in ``--model`` mode) gives size and speed.
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("report not found", path=path) from None
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON: {err.msg}", path=path, line=err.lineno) from None
    if not isinstance(report, dict) or not ("AP50" in report or "mAP" in report):
        raise DataError("not an eval-map report (no AP50 or mAP)", path=path)
    model = report.get("model") or {}
    return ReportRow(
        name=path.stem.removesuffix("_report"),
        metric=str(report.get("metric", "coco")),
        ap=report.get("AP"),
        ap50=report.get("AP50", report.get("mAP")),
        model=model.get("name"),
        width=model.get("width"),
        params=model.get("params"),
        weights_mb=model.get("weights_mb"),
        ms_per_image=model.get("ms_per_image"),
    )


#: Column titles of :func:`row_cells`.
COLUMNS = ("run", "model", "width", "AP", "AP50", "params", "MB", "ms/img")


def row_cells(row: ReportRow) -> list[str]:
    """The row as display strings, one per column of :data:`COLUMNS` ("-" if unknown)."""
    def cell(value, spec):
        return "-" if value is None else format(value, spec)

    return [row.name, row.model or "-", cell(row.width, ".3g"), cell(row.ap, ".3f"),
            cell(row.ap50, ".3f"), cell(row.params, ","), cell(row.weights_mb, ".2f"),
            cell(row.ms_per_image, ".1f")]


def format_table(rows: list[ReportRow]) -> str:
    """Plain-text table of ``rows`` (for a Makefile target's output file)."""
    cells = [list(COLUMNS)] + [row_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(w) if i < 2 else text.rjust(w)
                       for i, (text, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n"
