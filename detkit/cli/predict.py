"""``detkit predict DATA``: run a trained detector or an export, write COCO results json."""

from __future__ import annotations

from detkit.cli.app import console, err_console, warn
from detkit.cli._command import register
from detkit.cli._display import print_line, text_table
from detkit.commands.predict import Options, PredictResult, run


def _render(result: PredictResult) -> None:
    for note in result.notes:
        warn(note)
    print_line(result.weights_summary.splitlines()[0], err_console)   # what ran, first
    print_line(result.headline())
    console.print(text_table(result.table()))
    print_line(result.summary_line())


register("predict", Options, run, _render)
