"""What a long-running stage reports while it works; the CLI decides how to show it.

Stages take a :class:`Progress` and call it; the default does nothing, so library users
and tests get no output. The CLI passes one that draws Rich bars on stderr.
"""

from __future__ import annotations

from typing import Optional


class Progress:
    """A silent progress sink: override the methods to show something.

    A stage calls ``start`` for each bar (an epoch, a pass over the images), ``update`` as
    it goes, ``finish`` when the bar is done, and ``note`` for a line that stays (an
    epoch's summary).
    """

    def start(self, description: str, total: Optional[int]) -> None:
        """A new bar of ``total`` steps (``None``: unknown)."""

    def update(self, done: int, text: str = "") -> None:
        """``done`` steps of the current bar finished; ``text`` shown beside it."""

    def finish(self) -> None:
        """The current bar is complete (it disappears)."""

    def note(self, line: str) -> None:
        """A line that stays on screen."""


#: The do-nothing sink, for callers that want no output.
SILENT = Progress()
