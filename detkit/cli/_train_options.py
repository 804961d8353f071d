"""The options of ``train``, shared by every command that trains (``distill``).

:data:`TRAIN_OPTIONS` lists them once (name, ``Annotated`` type, default), in the order
``--help`` shows them; :func:`with_options` gives a command function
``(data, config=None, **options)`` the full signature Typer reads, so two commands with
the same options never repeat a 30-parameter signature. The module name starts with
``_``: it registers no command.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import typer
from typing_extensions import Annotated

from detkit.cli.options import (Anchors, Classes, Config, Data, Format, InputSize, Model,
                                Seed, Width)
from detkit.data.augment import AugmentConfig

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
AugScale = Annotated[tuple[float, float], typer.Option(
    "--aug-scale", help="Augmentation: the longer resized side is U(LOW, HIGH) times the "
    "input size (keras-yolo3 used 0.25 2.0).")]
AugJitter = Annotated[float, typer.Option(
    "--aug-jitter", help="Augmentation: aspect-ratio jitter, in [0, 1) (keras-yolo3: 0.3).")]
StepsPerEpoch = Annotated[Optional[int], typer.Option(
    "--steps-per-epoch", help="Use only the first N batches of each epoch (tests, demos).")]
MaxBoxes = Annotated[int, typer.Option("--max-boxes", help="Most boxes kept per image.")]
Jit = Annotated[bool, typer.Option(
    "--jit/--no-jit", help="XLA-compile the train step (slow to start, faster after); "
    "always on with the JAX backend.")]


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One command-line option: parameter name, ``Annotated`` type and default."""

    name: str
    annotation: Any
    default: Any = None


#: ``train``'s options after ``DATA``, in ``--help`` order (defaults as
#: :class:`detkit.training.run.TrainOptions`).
TRAIN_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("stage", Stage, 1),
    OptionSpec("model", Model, "yolov3"),
    OptionSpec("width", Width, 1.0),
    OptionSpec("anchors", Anchors),
    OptionSpec("classes", Classes),
    OptionSpec("format", Format),
    OptionSpec("input_size", InputSize, 416),
    OptionSpec("epochs", Epochs, 50),
    OptionSpec("batch_size", BatchSize, 16),
    OptionSpec("weights", Weights),
    OptionSpec("val", Val),
    OptionSpec("seed", Seed, 0),
    OptionSpec("out", RunDir, Path("runs/train")),
    OptionSpec("lr", Lr),
    OptionSpec("warmup_epochs", WarmupEpochs, 1.0),
    OptionSpec("schedule", Schedule, "cosine"),
    OptionSpec("freeze", Freeze),
    OptionSpec("box_loss", BoxLoss, "mse"),
    OptionSpec("obj_loss", ObjLoss, "bce"),
    OptionSpec("ignore_thresh", IgnoreThresh, 0.5),
    OptionSpec("ema", Ema, False),
    OptionSpec("mixed_precision", MixedPrecision, False),
    OptionSpec("early_stopping", EarlyStopping, 0),
    OptionSpec("resume", Resume, False),
    OptionSpec("strategy", Strategy, "none"),
    OptionSpec("workers", Workers, 1),
    OptionSpec("augment", Augment, True),
    OptionSpec("aug_scale", AugScale, AugmentConfig.scale),
    OptionSpec("aug_jitter", AugJitter, AugmentConfig.jitter),
    OptionSpec("steps_per_epoch", StepsPerEpoch),
    OptionSpec("max_boxes", MaxBoxes, 100),
    OptionSpec("jit", Jit, False),
)


def with_options(*groups: Iterable[OptionSpec],
                 defaults: Mapping[str, Any] | None = None) -> Callable:
    """Decorate ``func(data, config=None, **options)`` with an explicit signature.

    The signature Typer reads is ``(data: Data, <every option of groups>, config:
    Config = None)``; Typer then calls ``func`` with every option as a keyword.

    Args:
        groups: sequences of :class:`OptionSpec`, in order.
        defaults: per-command default overrides (e.g. ``{"out": Path("runs/x")}``).
    """
    defaults = dict(defaults or {})

    def decorate(func: Callable) -> Callable:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter("data", kind, annotation=Data)]
        seen = {"data", "config"}
        for group in groups:
            for spec in group:
                if spec.name in seen:
                    raise ValueError(f"option {spec.name!r} is given twice")
                seen.add(spec.name)
                params.append(inspect.Parameter(
                    spec.name, kind, annotation=spec.annotation,
                    default=defaults.get(spec.name, spec.default)))
        unknown = set(defaults) - seen
        if unknown:
            raise ValueError(f"defaults for unknown options: {', '.join(sorted(unknown))}")
        params.append(inspect.Parameter("config", kind, annotation=Config, default=None))
        func.__signature__ = inspect.Signature(params)
        func.__annotations__ = {param.name: param.annotation for param in params}
        return func

    return decorate


def plain_settings(data: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """The command's resolved options as recordable values (paths as strings)."""
    return {"data": str(data), **{key: str(value) if isinstance(value, Path) else value
                                  for key, value in options.items()}}


#: History rows :func:`render_run` shows (the file has them all).
SHOWN_EPOCHS = 10


def render_run(console, result, command: str) -> None:
    """The last epochs of a training run as a table, then epochs, best value and files.

    Args:
        console: a ``rich`` console (stdout).
        result: a :class:`detkit.training.run.TrainResult`.
        command: the table's title prefix (``train``, ``distill``).
    """
    from rich.table import Table

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
