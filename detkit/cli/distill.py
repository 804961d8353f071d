"""``detkit distill DATA --teacher T``: train a student with a frozen teacher's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli._train_options import (TRAIN_OPTIONS, OptionSpec, plain_settings,
                                       render_run, with_options)
from detkit.cli.app import app, console, err_console, handle_errors, warn

Teacher = Annotated[Optional[Path], typer.Option(
    "--teacher", help="The teacher: its *.weights.h5, or a run directory (best.weights.h5 "
                      "and the manifest naming its architecture). Required.")]
TeacherModel = Annotated[Optional[str], typer.Option(
    "--teacher-model", help="Teacher architecture: yolov3 or yolov3-tiny (default: from "
                            "its manifest).")]
TeacherWidth = Annotated[Optional[float], typer.Option(
    "--teacher-width", help="Teacher channel width multiplier (default: from its "
                            "manifest, else 1.0).")]
TeacherAnchors = Annotated[Optional[Path], typer.Option(
    "--teacher-anchors", help="Teacher anchors file (default: its manifest's, else the "
                              "student's when the count fits, else its model's).")]
Alpha = Annotated[float, typer.Option(
    "--alpha", help="Weight of the teacher terms in [0, 1]: loss = (1 - alpha) ground "
                    "truth + alpha distillation (0: ground truth only).")]
Temperature = Annotated[float, typer.Option(
    "--temperature", help="Temperature of the class logits in the distillation term.")]
TeacherCache = Annotated[Optional[Path], typer.Option(
    "--teacher-cache", help="HDF5 file of the teacher's outputs on the letterboxed "
                            "images: computed once, reused after (needs --no-augment).")]

#: The teacher's options, shown before train's.
DISTILL_OPTIONS = (
    OptionSpec("teacher", Teacher),
    OptionSpec("teacher_model", TeacherModel),
    OptionSpec("teacher_width", TeacherWidth),
    OptionSpec("teacher_anchors", TeacherAnchors),
    OptionSpec("alpha", Alpha, 0.5),
    OptionSpec("temperature", Temperature, 1.0),
    OptionSpec("teacher_cache", TeacherCache),
)


@app.command("distill")
@with_options(DISTILL_OPTIONS, TRAIN_OPTIONS, defaults={"out": Path("runs/distill")})
def distill(data: Path, config: Optional[Path] = None, **options) -> None:
    """Train a student with a frozen teacher (objectness-scaled distillation); writes
    what train writes."""
    from detkit.api.distill import distill as run

    del config  # already applied to the options' defaults
    settings = plain_settings(data, options)
    teacher = options.pop("teacher")
    with handle_errors():
        from detkit.training.progress import RichProgress

        result = run(data, teacher=teacher, config=settings,
                     callbacks=[RichProgress(err_console, options["epochs"])], **options)
    _render(result)


def _render(result) -> None:
    for note in result.notes:
        warn(note)
    for report in (result.weights_report, result.teacher_report):
        if report:
            err_console.print(report, highlight=False, soft_wrap=True)
    console.print(f"teacher: {result.teacher}; strides {', '.join(map(str, result.strides))}"
                  f"; alpha {result.alpha:g}", highlight=False, soft_wrap=True)
    render_run(console, result, "distill")
