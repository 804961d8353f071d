"""Option types shared by several commands, so each flag reads the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli.app import config_option

Config = Annotated[Optional[Path], config_option()]
Data = Annotated[Path, typer.Argument(
    help="Dataset: keras-yolo3 lines file, COCO json, VOC folder or YOLO txt folder.")]
Format = Annotated[Optional[str], typer.Option(
    "--format", help="Dataset format: auto, yolo3, coco, voc or yolo (default: auto).")]
Classes = Annotated[Optional[Path], typer.Option(
    "--classes", help="classes.txt, one name a line (default: from the dataset).")]
Anchors = Annotated[Optional[Path], typer.Option(
    "--anchors", help="Anchors file 'w,h, w,h, ...' in input pixels "
                      "(default: the COCO anchors of the model).")]
InputSize = Annotated[int, typer.Option(
    "--input-size", help="Network input side in pixels, a multiple of 32.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Model = Annotated[str, typer.Option("--model", help="Architecture: yolov3 or yolov3-tiny.")]
Width = Annotated[float, typer.Option("--width", help="Channel width multiplier.")]
Out = Annotated[Path, typer.Option("--out", help="Output file.")]
