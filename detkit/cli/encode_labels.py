"""``detkit encode-labels DATA``: compact YOLOv3 targets of a dataset -> ``labels.npz``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli.app import app, console, err_console, handle_errors
from detkit.cli.options import (Anchors, Classes, Config, Data, Format, InputSize, Model,
                                Out)

MultiAnchorIou = Annotated[Optional[float], typer.Option(
    "--multi-anchor-iou",
    help="Also assign every anchor whose (w, h) IoU with the box exceeds this (0..1).")]


@app.command("encode-labels")
def encode_labels(
    data: Data,
    anchors: Anchors = None,
    classes: Classes = None,
    input_size: InputSize = 416,
    out: Out = Path("labels.npz"),
    model: Model = "yolov3",
    format: Format = None,
    multi_anchor_iou: MultiAnchorIou = None,
    config: Config = None,
) -> None:
    """Encode every image's letterboxed boxes as YOLOv3 targets (labels.npz)."""
    from detkit.api.encode_labels import encode_labels as run

    settings = {"data": str(data), "anchors": None if anchors is None else str(anchors),
                "classes": None if classes is None else str(classes),
                "input_size": input_size, "out": str(out), "model": model,
                "format": format, "multi_anchor_iou": multi_anchor_iou}
    with handle_errors():
        result = run(data, out=out, anchors=anchors, classes=classes,
                     input_size=input_size, model=model, format=format,
                     multi_anchor_iou=multi_anchor_iou, config=settings)
    _render(result)


def _render(result) -> None:
    from rich.table import Table

    if result.fixes_summary:
        err_console.print(f"[yellow]warning:[/] {result.fixes_summary}", highlight=False)
    stats = result.stats
    table = Table(title=f"encode-labels: {result.num_images} images, "
                        f"input {result.input_size}", title_justify="left")
    for column in ("scale", "stride", "grid", "anchor", "size (px)", "boxes"):
        table.add_column(column, justify="right")
    for level, mask in enumerate(result.masks):
        for position, index in enumerate(mask):
            w, h = result.anchors[index]
            first = position == 0
            table.add_row(str(level) if first else "",
                          str(result.strides[level]) if first else "",
                          f"{result.grid_sizes[level]}x{result.grid_sizes[level]}"
                          if first else "",
                          str(index), f"{w:g}x{h:g}", str(int(stats.per_anchor[index])))
    console.print(table)
    per_scale = stats.per_scale(result.masks)
    lines = [f"boxes: {stats.boxes} encoded into {result.num_rows} target slots "
             f"({stats.assigned} boxes assigned)",
             "per scale: " + ", ".join(f"stride {s}: {n}"
                                       for s, n in zip(result.strides, per_scale)),
             f"collisions: {stats.collisions} (a larger-IoU box took the slot)"]
    if result.letterbox.clipped:
        lines.append(f"clipped to the input after letterbox: {result.letterbox.clipped}")
    dropped = dict(stats.dropped)
    if result.letterbox.too_small:
        dropped["smaller than 1 px after letterbox"] = result.letterbox.too_small
    if dropped:
        lines.append("dropped: " + ", ".join(f"{count} {why}" for why, count in dropped.items()))
    else:
        lines.append("dropped: none")
    lines.append(f"wrote {result.out} (+ {result.manifest.name})")
    for line in lines:
        console.print(line, highlight=False)
