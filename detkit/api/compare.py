"""``detkit compare``: a table of several eval-map reports."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence

from detkit.artifacts import write_manifest, write_text
from detkit.compare import ReportRow, format_table, read_report_row
from detkit.errors import UsageError


@dataclasses.dataclass
class CompareResult:
    rows: list[ReportRow]
    table: str
    out: Optional[Path]


def compare(reports: Sequence[str | os.PathLike], *,
            out: Optional[str | os.PathLike] = None) -> CompareResult:
    """Read each report's headline figures; optionally write the table to ``out``."""
    if not reports:
        raise UsageError("give at least one report.json")
    rows = [read_report_row(path) for path in reports]
    table = format_table(rows)
    if out is not None:
        write_text(out, table)
        write_manifest(out, command="compare", config={"reports": [str(p) for p in reports]},
                       inputs=reports, extra={"rows": [dataclasses.asdict(r) for r in rows]})
    return CompareResult(rows=rows, table=table, out=None if out is None else Path(out))
