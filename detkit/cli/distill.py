"""``detkit distill DATA --teacher T``: train a student with a frozen teacher's outputs."""

from __future__ import annotations

from detkit.cli._command import register
from detkit.cli._run_table import render_run
from detkit.cli.app import console, warn
from detkit.cli.train import render_final_map
from detkit.commands.distill import Options, run


def _render(result) -> None:
    for note in result.notes[result.notes_told:]:  # the others (the teacher, how its
        warn(note)                                 # weights loaded) were told as it ran
    render_run(console, result, "distill")
    render_final_map(result)


register("distill", Options, run, _render)
