"""``detkit cache-bottlenecks DATA``: the frozen part's features of every image, once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli.app import app, console, err_console, handle_errors
from detkit.cli.options import (Anchors, Classes, Config, Data, Format, InputSize, Model,
                                Seed, Width)

#: Bytes per megabyte in the report (decimal, like file managers).
MB = 1e6


@app.command("cache-bottlenecks")
def cache_bottlenecks(
    data: Data,
    out: Annotated[Path, typer.Option("--out", help="Cache file (.h5).")] = Path(
        "bottlenecks.h5"),
    model: Model = "yolov3",
    width: Width = 1.0,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", help="Weights (*.weights.h5) of the frozen part; without it the "
                          "model is initialized from --seed and saved as "
                          "OUT.init.weights.h5 for train to start from.")] = None,
    anchors: Anchors = None,
    classes: Classes = None,
    input_size: InputSize = 416,
    format: Format = None,
    split: Annotated[str, typer.Option(
        "--split", help="Where the model is cut: all-but-heads (cache the inputs of the "
                        "output convs, keras-yolo3's bottlenecks) or body (cache the "
                        "body's outputs; the whole heads train).")] = "all-but-heads",
    dtype: Annotated[str, typer.Option(
        "--dtype", help="Storage dtype: float16 or float32.")] = "float16",
    compression: Annotated[str, typer.Option(
        "--compression", help="auto (compress only if it pays, measured), none, lzf "
                              "or gzip.")] = "auto",
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Images per forward pass.")] = 8,
    seed: Seed = 0,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run with the same settings.")] = False,
    config: Config = None,
) -> None:
    """Run the frozen body once over every image (letterboxed, no augmentation) and
    store its outputs in an HDF5 cache that train --stage 1 --bottlenecks reads."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from detkit.api.cache_bottlenecks import cache_bottlenecks as run

    options = dict(out=out, model=model, width=width, weights=weights, anchors=anchors,
                   classes=classes, input_size=input_size, format=format, split=split,
                   dtype=dtype, compression=compression, batch_size=batch_size, seed=seed,
                   resume=resume)
    with handle_errors(), Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                                   TimeRemainingColumn(), console=err_console,
                                   transient=True) as bar:
        task = bar.add_task("caching features", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run(data, progress=progress, config={k: str(v) if isinstance(v, Path)
                                                       else v for k, v in options.items()},
                     **options)
    for note in result.notes:
        err_console.print(f"[yellow]warning:[/] {note}", highlight=False)
    _render(result)


def _render(result) -> None:
    from rich.table import Table

    table = Table(title=f"bottleneck cache {result.path}", show_header=True)
    table.add_column("scale", justify="right")
    table.add_column("shape (H, W, C)")
    table.add_column("compression")
    for index, (shape, comp) in enumerate(zip(result.shapes, result.compression)):
        table.add_row(str(index), " x ".join(map(str, shape)), comp or "none")
    console.print(table)
    done = (f"{result.computed} computed, {result.resumed_from} resumed"
            if result.resumed_from else f"{result.computed} computed")
    console.print(f"images: {result.num_images} ({done}); split: {result.split}; "
                  f"dtype: {result.dtype}", highlight=False)
    console.print(f"size: {result.file_bytes / MB:.2f} MB total, "
                  f"{result.bytes_per_image / MB:.3f} MB per image "
                  f"(raw {result.raw_bytes_per_image / MB:.3f} MB)", highlight=False)
    if result.init_weights is not None:
        console.print(f"initial weights (no --weights): {result.init_weights}",
                      highlight=False)
    console.print(f"manifest: {result.manifest}", highlight=False)
