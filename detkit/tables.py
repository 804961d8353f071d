"""Tables as text, for any renderer: a command's result describes its tables with
:class:`TextTable` and the CLI draws them (``detkit.cli._display.text_table``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional


@dataclasses.dataclass
class TextTable:
    """A title, column names (the first left-aligned, the others right-aligned), rows of
    ``len(columns)`` strings and an optional caption."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    caption: Optional[str] = None


def plural(count: int, noun: str) -> str:
    """``1 image``, ``2 images``, ``3 boxes``: a count with its noun."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}" + ("es" if noun.endswith(("s", "x")) else "s")


def agree(count: int, singular: str, plural_form: str) -> str:
    """The verb that agrees with ``count``: ``agree(1, "differs", "differ")``."""
    return singular if count == 1 else plural_form


def fmt(value: Any) -> str:
    """A cell: ``-`` for ``None``, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
