"""``detkit predict IMAGES``: run a trained detector, write COCO results json."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli.app import app, console, err_console, handle_errors
from detkit.cli.options import Anchors, Classes, Config, Format, InputSize, Model, Width

Images = Annotated[Path, typer.Argument(
    help="An image, a folder of images, or a dataset (lines file, COCO json, VOC or "
         "YOLO folder; results then carry its image ids).")]
Weights = Annotated[Optional[Path], typer.Option(
    "--weights", help="Trained model weights (.weights.h5).")]
Conf = Annotated[float, typer.Option(
    "--conf", help="Score threshold (objectness x class probability).")]
Iou = Annotated[float, typer.Option("--iou", help="Per-class NMS IoU threshold.")]
MaxDet = Annotated[int, typer.Option("--max-det", help="Detections kept per image.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]
DrawDir = Annotated[Optional[Path], typer.Option(
    "--draw-dir", help="Also write each image with its boxes drawn into this folder.")]
ResultsOut = Annotated[Path, typer.Option("--out", help="COCO results json to write.")]


@app.command("predict")
def predict(
    images: Images,
    weights: Weights = None,
    model: Model = "yolov3",
    width: Width = 1.0,
    anchors: Anchors = None,
    classes: Classes = None,
    input_size: InputSize = 416,
    conf: Conf = 0.001,
    iou: Iou = 0.45,
    max_det: MaxDet = 100,
    batch_size: BatchSize = 8,
    out: ResultsOut = Path("detections.json"),
    draw_dir: DrawDir = None,
    format: Format = None,
    config: Config = None,
) -> None:
    """Detect objects in images; write COCO-style results (and drawn images)."""
    from detkit.api.predict import predict as run

    with handle_errors():
        result = run(images, weights=weights, out=out, model=model, anchors=anchors,
                     classes=classes, input_size=input_size, width=width, conf=conf,
                     iou=iou, max_det=max_det, draw_dir=draw_dir, batch_size=batch_size,
                     format=format)
    _render(result)


def _render(result) -> None:
    from rich.table import Table

    console.print(f"predict: {result.num_images} images ({result.source}), "
                  f"{result.num_detections} detections", highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("class")
    table.add_column("detections", justify="right")
    for name, count in result.detections_per_class.items():
        table.add_row(name, str(count))
    console.print(table)
    rate = result.num_images / result.seconds if result.seconds > 0 else 0.0
    err_console.print(result.weights_summary.splitlines()[0], highlight=False, soft_wrap=True)
    console.print(f"wrote {result.out} in {result.seconds:.1f} s ({rate:.1f} images/s)"
                  + (f"; drawn images in {result.draw_dir}" if result.draw_dir else ""),
                  highlight=False, soft_wrap=True)
