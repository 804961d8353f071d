"""``detkit version``: detkit's and its libraries' versions."""

from __future__ import annotations

from detkit.cli._catalog import COMMANDS
from detkit.cli.app import Command, app, console


@app.command("version", help=COMMANDS["version"].help, cls=Command)
def version() -> None:
    import importlib.util

    from detkit.artifacts import library_versions

    for name in ("keras", "h5py", "cv2"):  # library_versions reports the imported ones
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)

    for name, value in library_versions().items():
        console.print(f"{name} {value}", highlight=False)
