"""The time a training benchmark counts: wall seconds, or CPU seconds per core.

On a machine shared with other jobs the wall clock says more about the neighbours than
about detkit; ``kind="cpu"`` counts the process's CPU time (every thread: the training
step and the loader's) divided by the reference machine's cores, the wall time a quiet
2-core machine would have taken. Evaluation can be left out with :meth:`paused`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

#: CPU cores of the reference machine (the project's CI runner).
CORES = 2
#: The ``--clock`` choices.
KINDS = ("wall", "cpu")


class BenchClock:
    """Seconds since creation, less the paused ones, by ``kind`` (``wall`` or ``cpu``)."""

    def __init__(self, kind: str = "wall", cores: int = CORES):
        if kind not in KINDS:
            raise ValueError(f"clock must be one of {KINDS}, got {kind!r}")
        self.kind, self.cores = kind, cores
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self._paused = 0.0

    def wall_s(self) -> float:
        """Wall seconds since creation (pauses included)."""
        return time.perf_counter() - self._wall

    def cpu_s(self) -> float:
        """CPU seconds of this process since creation (all threads, pauses included)."""
        return time.process_time() - self._cpu

    def seconds(self) -> float:
        """The counted seconds: wall, or CPU / cores, less the pauses."""
        raw = self.cpu_s() / self.cores if self.kind == "cpu" else self.wall_s()
        return raw - self._paused

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the enclosed work (an evaluation) out of :meth:`seconds`."""
        before = self.seconds()
        try:
            yield
        finally:
            self._paused += self.seconds() - before
