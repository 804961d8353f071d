"""``detkit eval-map DATA``: COCO (pycocotools-exact) or VOC mAP, per-class table, report.json."""

from __future__ import annotations

from detkit.cli.app import console, warn
from detkit.cli._command import register
from detkit.cli._display import print_line, text_table
from detkit.commands.eval_map import EvalMapResult, Options, run


def _render(result: EvalMapResult) -> None:
    for warning in result.warnings:
        warn(warning)
    console.print(text_table(result.table()))
    for line in result.summary_lines():
        print_line(line)


register("eval-map", Options, run, _render)
