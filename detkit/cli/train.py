"""``detkit train DATA``: train one stage of a detector into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli.app import app, console, err_console, handle_errors
from detkit.cli.options import (Anchors, Classes, Config, Data, Format, InputSize, Model,
                                Seed, Width)

Stage = Annotated[int, typer.Option(
    "--stage", help="1: train the heads on a frozen body (lr 1e-3); 2: fine-tune "
                    "everything (lr 1e-4).")]
Epochs = Annotated[int, typer.Option("--epochs", help="Epochs of the run (in total, "
                                                      "counting a resumed run's).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per (global) batch.")]
Weights = Annotated[Optional[Path], typer.Option(
    "--weights", help="Initial weights (*.weights.h5), loaded by layer name.")]
Val = Annotated[Optional[Path], typer.Option(
    "--val", help="Validation dataset; best.weights.h5 then tracks val_loss.")]
RunDir = Annotated[Path, typer.Option("--out", help="Run directory.")]
Lr = Annotated[Optional[float], typer.Option(
    "--lr", help="Peak learning rate (default 1e-3 for stage 1, 1e-4 for stage 2).")]
WarmupEpochs = Annotated[float, typer.Option(
    "--warmup-epochs", help="Epochs of linear learning-rate warmup.")]
Schedule = Annotated[str, typer.Option(
    "--schedule", help="After warmup: cosine decay, or plateau (ReduceLROnPlateau).")]
Freeze = Annotated[Optional[str], typer.Option(
    "--freeze", help="Frozen part: body, all-but-heads or none (default: body for "
                     "stage 1, none for stage 2).")]
BoxLoss = Annotated[str, typer.Option("--box-loss", help="Box loss: mse, huber or ciou.")]
ObjLoss = Annotated[str, typer.Option("--obj-loss", help="Objectness loss: bce or focal.")]
IgnoreThresh = Annotated[float, typer.Option(
    "--ignore-thresh", help="IoU with a ground-truth box above which a negative "
                            "prediction's objectness is not penalized.")]
Ema = Annotated[bool, typer.Option(
    "--ema/--no-ema", help="Keep an exponential moving average of the weights "
                           "(checkpoints and validation use it).")]
MixedPrecision = Annotated[bool, typer.Option(
    "--mixed-precision/--no-mixed-precision", help="float16 compute with loss scaling.")]
EarlyStopping = Annotated[int, typer.Option(
    "--early-stopping", help="Stop after this many epochs without improvement (0: off).")]
Resume = Annotated[bool, typer.Option(
    "--resume/--no-resume", help="Continue from the run directory's last epoch.")]
Strategy = Annotated[str, typer.Option(
    "--strategy", help="none, mirrored (all local devices) or multi-worker (TF_CONFIG).")]
Workers = Annotated[int, typer.Option("--workers", help="Threads preparing batches.")]
Augment = Annotated[bool, typer.Option(
    "--augment/--no-augment", help="Random training augmentation.")]
StepsPerEpoch = Annotated[Optional[int], typer.Option(
    "--steps-per-epoch", help="Use only the first N batches of each epoch (tests, demos).")]
MaxBoxes = Annotated[int, typer.Option("--max-boxes", help="Most boxes kept per image.")]
Jit = Annotated[bool, typer.Option(
    "--jit/--no-jit", help="XLA-compile the train step (slow to start, faster after).")]

#: History rows shown at the end (the file has them all).
SHOWN_EPOCHS = 10


@app.command("train")
def train(
    data: Data,
    stage: Stage = 1,
    model: Model = "yolov3",
    width: Width = 1.0,
    anchors: Anchors = None,
    classes: Classes = None,
    format: Format = None,
    input_size: InputSize = 416,
    epochs: Epochs = 50,
    batch_size: BatchSize = 16,
    weights: Weights = None,
    val: Val = None,
    seed: Seed = 0,
    out: RunDir = Path("runs/train"),
    lr: Lr = None,
    warmup_epochs: WarmupEpochs = 1.0,
    schedule: Schedule = "cosine",
    freeze: Freeze = None,
    box_loss: BoxLoss = "mse",
    obj_loss: ObjLoss = "bce",
    ignore_thresh: IgnoreThresh = 0.5,
    ema: Ema = False,
    mixed_precision: MixedPrecision = False,
    early_stopping: EarlyStopping = 0,
    resume: Resume = False,
    strategy: Strategy = "none",
    workers: Workers = 1,
    augment: Augment = True,
    steps_per_epoch: StepsPerEpoch = None,
    max_boxes: MaxBoxes = 100,
    jit: Jit = False,
    config: Config = None,
) -> None:
    """Train one stage: writes best/last weights, history.csv and manifest.json."""
    from detkit.api.train import train as run

    options = dict(stage=stage, model=model, width=width, anchors=anchors, classes=classes,
                   format=format, input_size=input_size, epochs=epochs,
                   batch_size=batch_size, weights=weights, val=val, seed=seed, out=out,
                   lr=lr, warmup_epochs=warmup_epochs, schedule=schedule, freeze=freeze,
                   box_loss=box_loss, obj_loss=obj_loss, ignore_thresh=ignore_thresh,
                   ema=ema, mixed_precision=mixed_precision,
                   early_stopping=early_stopping, resume=resume, strategy=strategy,
                   workers=workers, augment=augment, steps_per_epoch=steps_per_epoch,
                   max_boxes=max_boxes, jit=jit)
    settings = {"data": str(data), **{key: str(value) if isinstance(value, Path) else value
                                      for key, value in options.items()}}
    with handle_errors():
        from detkit.training.progress import RichProgress

        result = run(data, callbacks=[RichProgress(err_console, epochs)], config=settings,
                     **options)
    _render(result)


def _render(result) -> None:
    from rich.table import Table

    for note in result.notes:
        err_console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    if result.weights_report:
        err_console.print(result.weights_report, highlight=False, soft_wrap=True)
    rows = result.history[-SHOWN_EPOCHS:]
    if rows:
        # The per-term validation columns stay in history.csv; the table keeps val_loss.
        columns = [key for key in rows[0]
                   if key != "epoch" and (key == "val_loss" or not key.startswith("val_"))]
        table = Table(title=f"train: {result.run_dir}", title_justify="left")
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
