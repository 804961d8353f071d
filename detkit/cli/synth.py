"""``detkit synth OUT``: a synthetic shapes dataset for the demo, tests and CI."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from typing_extensions import Annotated

from detkit.cli.app import app, console, handle_errors
from detkit.cli.options import Config, Seed


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder of the dataset.")],
    images: Annotated[int, typer.Option("--images", help="Number of images.")] = 200,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 256,
    classes: Annotated[int, typer.Option(
        "--classes", help="Number of shape classes (1-6: circle, rectangle, triangle, "
                          "cross, star, ring).")] = 4,
    seed: Seed = 0,
    val_fraction: Annotated[float, typer.Option(
        "--val-fraction", help="Share of images in the validation split.")] = 0.2,
    image_format: Annotated[str, typer.Option(
        "--image-format", help="jpg (quality 90) or png.")] = "jpg",
    max_objects: Annotated[int, typer.Option(
        "--max-objects", help="Most objects in one image.")] = 6,
    min_size: Annotated[float, typer.Option(
        "--min-size", help="Smallest object side, as a fraction of the image side.")] = 0.04,
    max_size: Annotated[float, typer.Option(
        "--max-size", help="Largest object side, as a fraction of the image side.")] = 0.6,
    config: Config = None,
) -> None:
    """Write a synthetic detection dataset: OUT/images/, train.txt, val.txt, classes.txt,
    train.json and val.json (COCO ground truth)."""
    from detkit.api.synth import synth as run_synth

    with handle_errors():
        result = run_synth(out, images=images, size=size, classes=classes, seed=seed,
                           val_fraction=val_fraction, image_format=image_format,
                           max_objects=max_objects, min_size=min_size, max_size=max_size)
    table = Table(title="boxes per class")
    table.add_column("class")
    table.add_column("boxes", justify="right")
    for name, count in zip(result.class_names, result.class_counts):
        table.add_row(name, str(count))
    console.print(table)
    console.print(f"wrote {result.out_dir}: {result.n_train} train and {result.n_val} val "
                  f"images "
                  f"({result.n_empty} without objects), {result.n_boxes} boxes",
                  highlight=False, soft_wrap=True)
