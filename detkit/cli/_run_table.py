"""Rendering of a training run (``train``, ``distill``): the last epochs as a table."""

from __future__ import annotations

from detkit.cli._display import fits, print_line, text_table
from detkit.tables import TextTable

#: History rows :func:`render_run` shows (the file has them all).
SHOWN_EPOCHS = 10
#: The validation values the table shows (the per-term ones stay in history.csv).
SHOWN_VALIDATION = ("val_loss", "val_map", "val_map50", "val_fitness")


def _cell(value) -> str:
    """A history value to 4 digits; ``-`` for an epoch without it (not evaluated)."""
    if value is None or value != value:
        return "-"
    return f"{value:.4g}"


def epochs_table(console, title: str, rows: list[dict]):
    """The epochs ``rows`` of a history as a Rich table that fits ``console``'s width.

    One row per epoch, one column per value; when those columns are wider than the
    terminal (distill's many terms on 80 columns), one row per value and one column per
    epoch instead, as many of the last epochs as fit.
    """
    # The per-term validation columns stay in history.csv; the table keeps val_loss and
    # the evaluation's (--eval-every: what --monitor may pick the best weights by).
    keys = list(dict.fromkeys(key for row in rows for key in row))
    columns = [key for key in keys if key != "epoch"
               and (key in SHOWN_VALIDATION or not key.startswith("val_"))]
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    epochs = [str(int(row["epoch"])) for row in rows]
    table = text_table(TextTable(title, ("epoch", *columns),
                                 [(epoch, *values) for epoch, values in zip(epochs, cells)]))
    for shown in range(len(rows), 0, -1):
        if fits(console, table):
            return table
        table = text_table(TextTable(
            title, ("epoch", *epochs[-shown:]),
            [(column, *(values[index] for values in cells[-shown:]))
             for index, column in enumerate(columns)]))
    return table


def render_run(console, result, command: str) -> None:
    """The last epochs of a training run as a table, then epochs, best value and files.

    Args:
        console: a ``rich`` console (stdout).
        result: a :class:`detkit.training.run.TrainResult`.
        command: the table's title prefix (``train``, ``distill``).
    """
    rows = result.history[-SHOWN_EPOCHS:]
    if rows:
        console.print(epochs_table(console, f"{command}: {result.run_dir}", rows))
    lines = [f"epochs: {result.start_epoch} -> {result.total_epochs}"
             + (" (stopped early)" if result.stopped_early else "")]
    if result.best_epoch:
        lines.append(f"best {result.monitor}: {result.best:.4g} at epoch {result.best_epoch}")
    if result.files:
        lines.append("wrote " + ", ".join(str(path) for path in result.files))
    for line in lines:
        print_line(line, console)
