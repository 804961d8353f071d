"""``detkit compare REPORT...``: teacher vs student, Keras vs its exports, side by side."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from detkit.cli.app import console
from detkit.cli._command import register
from detkit.commands.compare import (COLUMNS, TEXT_COLUMNS, CompareResult, Options,
                                     row_cells, run)


#: Columns a narrow terminal may squeeze (the text table file always has them in full).
SQUEEZABLE = ("model", "width", "format", "params")


def _render(result: CompareResult) -> None:
    table = Table(title="detkit comparison", box=box.SIMPLE_HEAVY)
    cells = [row_cells(row) for row in result.rows]
    for index, column in enumerate(COLUMNS):
        # the run name and the figures keep their width; a narrow terminal squeezes the
        # model, width, format and params columns
        keep = column not in SQUEEZABLE
        widest = max([len(column)] + [len(line[index]) for line in cells])
        table.add_column(column, justify="left" if index < TEXT_COLUMNS else "right",
                         min_width=widest if keep else None)
    for line in cells:
        table.add_row(*(escape(cell) for cell in line))
    console.print(table)


register("compare", Options, run, _render)
