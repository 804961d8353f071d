"""``detkit predict DATA``: run a trained detector, write COCO results json."""

from __future__ import annotations

from rich.table import Table

from detkit.cli.app import console, err_console
from detkit.cli._command import register
from detkit.commands.predict import Options, PredictResult, run


def _render(result: PredictResult) -> None:
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


register("predict", Options, run, _render,
         help="Detect objects in images; write COCO-style results (and drawn images).")
