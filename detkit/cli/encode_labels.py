"""``detkit encode-labels DATA``: compact YOLOv3 targets of a dataset -> ``labels.npz``."""

from __future__ import annotations

from detkit.cli.app import console, warn
from detkit.cli._command import register
from detkit.cli._display import print_line, text_table
from detkit.commands.encode_labels import EncodeLabelsResult, Options, run


def _render(result: EncodeLabelsResult) -> None:
    warn(result.fixes_summary)
    table = result.anchor_table()
    if table is not None:
        console.print(text_table(table))
    for line in result.summary_lines():
        print_line(line)


register("encode-labels", Options, run, _render)
