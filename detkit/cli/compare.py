"""``detkit compare REPORT...``: teacher vs student (or any runs) side by side."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from detkit.cli.app import app, console, handle_errors
from detkit.cli.options import Config


@app.command("compare")
def compare(
    reports: Annotated[List[Path], typer.Argument(help="eval-map report.json files.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write the table here.")]
    = None,
    config: Config = None,
) -> None:
    """Compare eval-map reports: mAP, model size and speed, one row per report."""
    from detkit.api.compare import compare as run
    from detkit.compare import COLUMNS, row_cells

    with handle_errors():
        result = run(reports, out=out)
    table = Table(title="detkit comparison")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index < 2 else "right")
    for row in result.rows:
        table.add_row(*row_cells(row))
    console.print(table)
