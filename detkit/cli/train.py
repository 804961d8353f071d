"""``detkit train DATA``: train one stage of a detector into a run directory."""

from __future__ import annotations

from detkit.cli._command import register
from detkit.cli._run_table import render_run
from detkit.cli.app import console, warn
from detkit.commands.train import Options, run


def render_final_map(result) -> None:
    """One line: the COCO figures of best.weights.h5 on --val (end-of-run curves)."""
    figures = getattr(result, "final_map", None)
    if figures:
        console.print(f"best weights on --val: AP {figures['AP']:.4g}  AP50 "
                      f"{figures['AP50']:.4g}  AP75 {figures['AP75']:.4g}", highlight=False,
                      soft_wrap=True, markup=False)


def _render(result) -> None:
    # the others were told as it ran (the --weights load report among them)
    for note in result.notes[result.notes_told:]:
        warn(note)
    render_run(console, result, "train")
    render_final_map(result)


register("train", Options, run, _render)
