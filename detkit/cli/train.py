"""``detkit train DATA``: train one stage of a detector into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli._train_options import (TRAIN_OPTIONS, OptionSpec, plain_settings,
                                       render_run, with_options)
from detkit.cli.app import app, console, err_console, handle_errors, warn

Bottlenecks = Annotated[Optional[Path], typer.Option(
    "--bottlenecks", help="Stage 1: a cache-bottlenecks file; the heads first train on its "
                          "features for --bottleneck-epochs (needs --labels).")]
Labels = Annotated[Optional[Path], typer.Option(
    "--labels", help="labels.npz (encode-labels) of the cached images.")]
BottleneckEpochs = Annotated[int, typer.Option(
    "--bottleneck-epochs", help="Epochs on cached features before --epochs on images.")]

#: Stage-1 options of training on cached features (train only, not distill).
BOTTLENECK_OPTIONS = (
    OptionSpec("bottlenecks", Bottlenecks),
    OptionSpec("labels", Labels),
    OptionSpec("bottleneck_epochs", BottleneckEpochs, 0),
)


@app.command("train")
@with_options(TRAIN_OPTIONS, BOTTLENECK_OPTIONS)
def train(data: Path, config: Optional[Path] = None, **options) -> None:
    """Train one stage: writes best/last weights, history.csv and manifest.json."""
    from detkit.api.train import train as run
    from detkit.training.progress import RichProgress

    total = options["epochs"] + (options["bottleneck_epochs"] if options["bottlenecks"] else 0)
    with handle_errors():
        result = run(data, callbacks=[RichProgress(err_console, total)],
                     config=plain_settings(data, options), **options)
    for note in result.notes:
        warn(note)
    if result.weights_report:
        err_console.print(result.weights_report, highlight=False, soft_wrap=True)
    render_run(console, result, "train")
