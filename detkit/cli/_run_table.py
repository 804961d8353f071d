"""Rendering of a training run (``train``, ``distill``): the last epochs as a table."""

from __future__ import annotations

from detkit.cli._display import print_line, text_table
from detkit.tables import TextTable

#: History rows :func:`render_run` shows (the file has them all).
SHOWN_EPOCHS = 10


def render_run(console, result, command: str) -> None:
    """The last epochs of a training run as a table, then epochs, best value and files.

    Args:
        console: a ``rich`` console (stdout).
        result: a :class:`detkit.training.run.TrainResult`.
        command: the table's title prefix (``train``, ``distill``).
    """
    rows = result.history[-SHOWN_EPOCHS:]
    if rows:
        # The per-term validation columns stay in history.csv; the table keeps val_loss.
        columns = [key for key in rows[0]
                   if key != "epoch" and (key == "val_loss" or not key.startswith("val_"))]
        console.print(text_table(TextTable(
            f"{command}: {result.run_dir}", ("epoch", *columns),
            [(str(int(row["epoch"])), *(f"{row.get(c, float('nan')):.4g}" for c in columns))
             for row in rows])))
    lines = [f"epochs: {result.start_epoch} -> {result.total_epochs}"
             + (" (stopped early)" if result.stopped_early else "")]
    if result.best_epoch:
        lines.append(f"best {result.monitor}: {result.best:.4g} at epoch {result.best_epoch}")
    if result.files:
        lines.append("wrote " + ", ".join(str(path) for path in result.files))
    for line in lines:
        print_line(line, console)
