"""``detkit compare REPORT...``: teacher vs student, Keras vs its exports, side by side."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from detkit.cli._command import register
from detkit.cli._display import fits
from detkit.cli.app import console, warn
from detkit.commands.compare import (COLUMNS, TEXT_COLUMNS, CompareResult, Options,
                                     row_cells, run)


#: Columns a narrow terminal may squeeze (the text table file always has them in full).
SQUEEZABLE = ("model", "width", "format", "params")


def _render(result: CompareResult) -> None:
    """One row per report; on a terminal too narrow for that, one row per figure and one
    column per report (as the run tables of train do), in as many such tables as it
    takes to show every report in full; squeezed only if one report alone is too wide."""
    for note in result.notes:
        warn(note)
    cells = [row_cells(row) for row in result.rows]
    table = _table(COLUMNS, cells, TEXT_COLUMNS)
    if fits(console, table):
        console.print(table)
        return
    groups = [[cells[0]]]
    for line in cells[1:]:
        if fits(console, _turned(groups[-1] + [line])):
            groups[-1].append(line)
        else:
            groups.append([line])
    if all(fits(console, _turned(group)) for group in groups):
        for group in groups:
            console.print(_turned(group))
    else:
        console.print(table)


def _turned(cells: list[list[str]]) -> Table:
    """One row per figure, one column per report (of ``cells``, rows of :data:`COLUMNS`)."""
    return _table(("", *(line[0] for line in cells)),
                  [[column, *(line[index] for line in cells)]
                   for index, column in enumerate(COLUMNS) if index], 1)


def _table(columns, cells, text_columns: int) -> Table:
    table = Table(title="detkit comparison", box=box.SIMPLE_HEAVY)
    for index, column in enumerate(columns):
        # the run name and the figures keep their width; a narrow terminal squeezes the
        # model, width, format and params columns
        keep = column not in SQUEEZABLE
        widest = max([len(column)] + [len(line[index]) for line in cells])
        table.add_column(escape(column), justify="left" if index < text_columns else "right",
                         min_width=widest if keep else None)
    for line in cells:
        table.add_row(*(escape(cell) for cell in line))
    return table


register("compare", Options, run, _render)
