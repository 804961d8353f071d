"""Config files: YAML (``safe_load``) whose keys are a command's long option names.

Keys may use dashes or underscores (``input-size`` or ``input_size``). Explicit flags
override the file. A key that is not an option of the command is an error naming it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from detkit.errors import ConfigError


def normalize_key(key: str) -> str:
    """``input-size`` and ``--input-size`` -> ``input_size``."""
    return str(key).lstrip("-").replace("-", "_")


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of option names to values, keys normalized.

    Raises:
        ConfigError: missing file, YAML syntax error (with its line), not a mapping,
            or a key given twice (``input-size`` and ``input_size``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"invalid YAML: {problem}", path=path, line=line) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of option names to values, "
                          f"got {type(data).__name__}", path=path)
    config: dict[str, Any] = {}
    for key, value in data.items():
        name = normalize_key(key)
        if name in config:
            raise ConfigError(f"key {key!r} is given twice", path=path)
        config[name] = value
    return config


def check_keys(config: Mapping[str, Any], allowed: Iterable[str], *,
               path: str | os.PathLike | None = None) -> None:
    """Raise :class:`ConfigError` naming the first key not in ``allowed``."""
    allowed = sorted(set(allowed))
    for key in config:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown key {key!r}{suggestion}; known keys: "
                              f"{', '.join(allowed)}", path=path)


def merge(config: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """Flags given explicitly (not None) override the config file."""
    merged = dict(config)
    merged.update({key: value for key, value in flags.items() if value is not None})
    return merged
