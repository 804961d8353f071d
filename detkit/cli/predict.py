"""``detkit predict DATA``: run a trained detector or an export, write COCO results json."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from detkit.cli.app import console, err_console, warn
from detkit.cli._command import register
from detkit.commands.predict import Options, PredictResult, run


def _render(result: PredictResult) -> None:
    for note in result.notes:
        warn(note)
    unit = "frames" if result.source == "video" else "images"
    console.print(f"predict: {result.num_images} {unit} ({escape(result.source)}), "
                  f"{result.num_detections} detections, run by {escape(result.runner)}",
                  highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("class")
    table.add_column("detections", justify="right")
    for name, count in result.detections_per_class.items():
        table.add_row(escape(name), str(count))
    console.print(table)
    rate = result.num_images / result.seconds if result.seconds > 0 else 0.0
    err_console.print(escape(result.weights_summary.splitlines()[0]), highlight=False,
                      soft_wrap=True)
    extras = ""
    if result.draw_dir:
        extras += f"; drawn images in {escape(str(result.draw_dir))}"
    if result.video:
        extras += f"; drawn video {escape(str(result.video))}"
    console.print(f"wrote {escape(str(result.out))} in {result.seconds:.1f} s ({rate:.1f} "
                  f"{unit}/s, {result.ms_per_image:.1f} ms/image in the detection loop)"
                  + extras, highlight=False, soft_wrap=True)


register("predict", Options, run, _render)
