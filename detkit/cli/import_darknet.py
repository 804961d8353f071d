"""``detkit import-darknet CFG WEIGHTS``: Darknet weights as detkit weights."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from detkit.cli._command import register
from detkit.cli.app import console, warn
from detkit.commands.import_darknet import ImportDarknetResult, Options, run

#: Layers listed by name when some stay at their initialization (the rest counted).
MAX_LISTED = 12


def _render(result: ImportDarknetResult) -> None:
    for note in result.notes:
        warn(note)
    if result.left_at_init:
        shown = ", ".join(result.left_at_init[:MAX_LISTED])
        more = len(result.left_at_init) - MAX_LISTED
        warn(f"left at initialization ({len(result.left_at_init)} layers): {shown}"
             + (f" and {more} more" if more > 0 else ""))
    if result.not_imported:
        warn("read but not imported (no detkit layer): " + ", ".join(result.not_imported))
    table = Table(title=f"Darknet {result.layout} -> detkit {result.model}",
                  title_justify="left")
    table.add_column("")
    table.add_column("value")
    rows = [
        ("weights format", f"{result.version} (seen {result.seen:,} images)"),
        ("convs read", f"{result.convs_read} of {result.convs_in_cfg}"),
        ("detkit layers loaded", f"{len(result.loaded)} "
                                 f"({len(result.left_at_init)} left at initialization)"),
        ("classes", str(result.num_classes)),
        ("anchors", "-" if result.anchors is None else
         ", ".join(f"{w:g},{h:g}" for w, h in result.anchors)),
        ("input size", "-" if result.input_size is None else str(result.input_size)),
    ]
    for name, value in rows:
        table.add_row(name, escape(value))
    console.print(table)
    written = [result.out, result.manifest_path] + (
        [result.anchors_path] if result.anchors_path is not None else [])
    console.print(f"wrote {', '.join(map(str, written))} ({result.seconds:.1f} s)",
                  highlight=False, soft_wrap=True, markup=False)


register("import-darknet", Options, run, _render)
