"""``detkit import-darknet CFG WEIGHTS``: Darknet weights as detkit weights."""

from __future__ import annotations

from detkit.cli._command import register
from detkit.cli._display import print_line, text_table
from detkit.cli.app import console, warn
from detkit.commands.import_darknet import ImportDarknetResult, Options, run


def _render(result: ImportDarknetResult) -> None:
    for line in result.warnings():
        warn(line)
    console.print(text_table(result.table()))
    print_line(result.summary_line())


register("import-darknet", Options, run, _render)
