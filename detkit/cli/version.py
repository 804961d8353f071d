"""``detkit version``: detkit's and its libraries' versions."""

from __future__ import annotations

from detkit.cli.app import app, console


@app.command("version")
def version() -> None:
    """Print detkit's version and the versions of the libraries it uses."""
    from detkit.artifacts import library_versions

    for name, value in library_versions().items():
        console.print(f"{name} {value}", highlight=False)
