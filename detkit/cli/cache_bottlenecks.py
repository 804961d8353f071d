"""``detkit cache-bottlenecks DATA``: the frozen part's features of every image, once."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from detkit.cli._command import register
from detkit.cli.app import console, warn
from detkit.commands.cache_bottlenecks import CacheBottlenecksResult, Options, run

#: Bytes per megabyte in the report (decimal, like file managers).
MB = 1e6


def _render(result: CacheBottlenecksResult) -> None:
    for note in result.notes:
        warn(note)
    table = Table(title=Text(f"bottleneck cache {result.path}"), show_header=True)
    table.add_column("scale", justify="right")
    table.add_column("shape (H, W, C)")
    table.add_column("compression")
    for index, (shape, comp) in enumerate(zip(result.shapes, result.compression)):
        table.add_row(str(index), " x ".join(map(str, shape)), comp or "none")
    console.print(table)
    done = (f"{result.computed} computed, {result.resumed_from} resumed"
            if result.resumed_from else f"{result.computed} computed")
    console.print(f"images: {result.num_images} ({done}); split: {result.split}; "
                  f"dtype: {result.dtype}", highlight=False)
    console.print(f"size: {result.file_bytes / MB:.2f} MB total, "
                  f"{result.bytes_per_image / MB:.3f} MB per image "
                  f"(raw {result.raw_bytes_per_image / MB:.3f} MB)", highlight=False)
    if result.init_weights is not None:
        console.print(f"initial weights (no --weights): {result.init_weights}",
                      highlight=False, markup=False)
    console.print(f"manifest: {result.manifest}", highlight=False, markup=False)


register("cache-bottlenecks", Options, run, _render)
