"""``detkit kmeans-anchors DATA``: anchors by seeded IoU k-means, with their quality."""

from __future__ import annotations

from rich.table import Table

from detkit.anchors import anchor_masks, strides
from detkit.cli.app import console, warn
from detkit.cli._command import register
from detkit.commands.kmeans_anchors import KMeansAnchorsResult, Options, run


def _scales(k: int) -> dict[int, int]:
    """Anchor index -> the stride it serves (empty when ``k`` is not 3 per scale)."""
    if k % 3 or k < 3 or k > 15:
        return {}
    return {index: stride for mask, stride in zip(anchor_masks(k), strides(k))
            for index in mask}


def _render(result: KMeansAnchorsResult) -> None:
    warn(result.fixes)
    if result.n_tiny:
        warn(f"dropped {result.n_tiny} boxes with a side under "
             f"{result.settings['min_size']:g} px at input {result.settings['input_size']}")
    scales = _scales(len(result.anchors))
    table = Table(title=f"{len(result.anchors)} anchors for {result.n_boxes} boxes at input "
                        f"{result.settings['input_size']}", title_justify="left")
    for column in ("#", "w", "h", "area", "stride"):
        table.add_column(column, justify="right")
    for index, (w, h) in enumerate(result.anchors):
        stride = scales.get(index)
        table.add_row(str(index), f"{w:g}", f"{h:g}", f"{w * h:g}",
                      "-" if stride is None else str(stride))
    console.print(table)

    quality = Table(title="quality", title_justify="left")
    quality.add_column("metric")
    quality.add_column("these anchors", justify="right")
    if result.compare_quality is not None:
        quality.add_column(result.compare_path.name, justify="right")
    for name in ("avg_iou", "bpr", "anchors_per_target", "fitness"):
        row = [name, f"{getattr(result.quality, name):.4f}"]
        if result.compare_quality is not None:
            row.append(f"{getattr(result.compare_quality, name):.4f}")
        quality.add_row(*row)
    console.print(quality)
    if result.evolve is not None:
        console.print(f"evolution: {result.evolve.accepted} of {result.evolve.generations} "
                      f"mutations kept, fitness {result.evolve.start_fitness:.4f} -> "
                      f"{result.evolve.fitness:.4f}", highlight=False)
    console.print(f"wrote {result.out} and {result.json_path} ({result.elapsed_s:.2f} s)",
                  highlight=False, soft_wrap=True)


register("kmeans-anchors", Options, run, _render)
