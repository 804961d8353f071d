"""``detkit compare REPORT...``: teacher vs student (or any runs) side by side."""

from __future__ import annotations

from rich.table import Table

from detkit.cli.app import console
from detkit.cli._command import register
from detkit.commands.compare import COLUMNS, CompareResult, Options, row_cells, run


def _render(result: CompareResult) -> None:
    table = Table(title="detkit comparison")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index < 2 else "right")
    for row in result.rows:
        table.add_row(*row_cells(row))
    console.print(table)


register("compare", Options, run, _render,
         help="Compare eval-map reports: mAP, model size and speed, one row per report.")
