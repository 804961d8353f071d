"""``detkit distill DATA --teacher T``: train a student with a frozen teacher's outputs."""

from __future__ import annotations

from detkit.cli._command import register
from detkit.cli._run_table import render_run
from detkit.cli.app import console, err_console, warn
from detkit.cli.train import render_final_map
from detkit.commands.distill import Options, run


def _render(result) -> None:
    for note in result.notes[result.notes_told:]:  # the others were told as it ran
        warn(note)
    if result.teacher_report:   # (the student's --weights report was told as a note)
        err_console.print(result.teacher_report, highlight=False, soft_wrap=True,
                          markup=False)
    console.print(f"teacher: {result.teacher}; strides {', '.join(map(str, result.strides))}"
                  f"; alpha {result.alpha:g}", highlight=False, soft_wrap=True, markup=False)
    render_run(console, result, "distill")
    render_final_map(result)


register("distill", Options, run, _render)
