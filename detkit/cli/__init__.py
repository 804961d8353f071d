"""detkit's command line: every module in this package registers one command on ``app``."""

from __future__ import annotations

import importlib
import pkgutil

from detkit.cli._quiet import quiet_library_logs
from detkit.cli.app import app

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "app" and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")


def main() -> None:
    """Console-script entry point: library log lines hidden (``DETKIT_VERBOSE=1`` shows them)."""
    quiet_library_logs()
    app()
