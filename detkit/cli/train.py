"""``detkit train DATA``: train one stage of a detector into a run directory."""

from __future__ import annotations

from detkit.cli._command import register
from detkit.cli._run_table import render_run
from detkit.cli.app import console, err_console, warn
from detkit.commands.train import Options, run


def _render(result) -> None:
    for note in result.notes:
        warn(note)
    if result.weights_report:
        err_console.print(result.weights_report, highlight=False, soft_wrap=True,
                          markup=False)
    render_run(console, result, "train")


register("train", Options, run, _render,
         help="Train one stage: writes best/last weights, history.csv and manifest.json.")
