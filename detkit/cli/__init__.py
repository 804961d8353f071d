"""detkit's command line: each module in this package registers one command on ``app``
(listed in :data:`detkit.cli._catalog.COMMANDS`, imported when that command is used)."""

from __future__ import annotations

from detkit.cli._imports import skip_unused_imports
from detkit.cli._quiet import quiet_library_logs
from detkit.cli.app import app


def main() -> None:
    """Console-script entry point: library log lines hidden (``DETKIT_VERBOSE=1`` shows them)."""
    quiet_library_logs()
    skip_unused_imports()
    app()
