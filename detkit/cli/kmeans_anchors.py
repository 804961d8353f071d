"""``detkit kmeans-anchors DATA``: anchors by seeded IoU k-means, with their quality."""

from __future__ import annotations

from detkit.cli.app import console, warn
from detkit.cli._command import register
from detkit.cli._display import print_line, text_table
from detkit.commands.kmeans_anchors import KMeansAnchorsResult, Options, run


def _render(result: KMeansAnchorsResult) -> None:
    for line in result.warnings():
        warn(line)
    for table in result.tables():
        console.print(text_table(table))
    for line in result.summary_lines():
        print_line(line)


register("kmeans-anchors", Options, run, _render)
