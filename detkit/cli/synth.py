"""``detkit synth OUT``: a synthetic shapes dataset for the demo, tests and CI."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from detkit.cli.app import console
from detkit.cli._command import register
from detkit.commands.synth import Options, run


def _render(result) -> None:
    table = Table(title="boxes per class")
    table.add_column("class")
    table.add_column("boxes", justify="right")
    for name, count in zip(result.class_names, result.class_counts):
        table.add_row(Text(name), str(count))
    console.print(table)
    console.print(f"wrote {result.out_dir}: {result.n_train} train and {result.n_val} val "
                  f"images ({result.n_empty} without objects), {result.n_boxes} boxes",
                  highlight=False, soft_wrap=True, markup=False)


register("synth", Options, run, _render)
