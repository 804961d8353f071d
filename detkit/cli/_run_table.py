"""Rendering of a training run (``train``, ``distill``): the last epochs as a table."""

from __future__ import annotations

from rich.table import Table

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
        table = Table(title=f"{command}: {result.run_dir}", title_justify="left")
        table.add_column("epoch", justify="right")
        for column in columns:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(str(int(row["epoch"])), *(f"{row.get(c, float('nan')):.4g}"
                                                   for c in columns))
        console.print(table)
    console.print(f"epochs: {result.start_epoch} -> {result.total_epochs}"
                  + (" (stopped early)" if result.stopped_early else ""), highlight=False)
    if result.best_epoch:
        console.print(f"best {result.monitor}: {result.best:.4g} at epoch {result.best_epoch}",
                      highlight=False)
    if result.files:
        console.print("wrote " + ", ".join(str(path) for path in result.files),
                      highlight=False, soft_wrap=True)
