"""Config files: YAML (safe loading) whose keys are a command's long option names.

Keys may use dashes or underscores (``input-size`` or ``input_size``). Explicit flags
override the file. A key that is not an option of the command, a key given twice and a
value of the wrong type (``k: true`` for an integer, a list for a path) are errors naming
the file and the key's line.
"""

from __future__ import annotations

import collections.abc
import difflib
import enum
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from detkit.errors import ConfigError, invalid_yaml

#: The YAML tag of a merge key (``<<: *defaults``), which may repeat keys it merges.
MERGE_TAG = "tag:yaml.org,2002:merge"
#: Option value kinds :func:`check_types` knows (anything else is text).
INT, FLOAT, BOOL, TEXT = "integer", "number", "boolean", "string"


class ConfigValues(dict):
    """The options of a config file (keys normalized), with the 1-based line of each key.

    Attributes:
        lines: key -> line of the file where it is set.
    """

    def __init__(self, values: Mapping[str, Any] = (), lines: Mapping[str, int] = ()):
        super().__init__(values)
        self.lines = dict(lines)


class _DuplicateKey(yaml.YAMLError):
    """A mapping that gives one key twice (``line`` is the second time, 1-based)."""

    def __init__(self, key: Any, first: int, line: int):
        super().__init__(f"key {key!r} is given twice")
        self.key, self.first, self.line = key, first, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: the base class reports it
                break
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 reads ``lr: 2e-3`` as a number, PyYAML's YAML 1.1 only ``2.0e-3`` (``2e-3`` was
# the string '2e-3', refused for a number option): exponents without a dot are numbers.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def normalize_key(key: str) -> str:
    """``input-size`` and ``--input-size`` -> ``input_size``."""
    return str(key).lstrip("-").replace("-", "_")


def _parse(path: Path) -> tuple[Any, dict[Any, int]]:
    """The YAML document of ``path`` and the line of each top-level key."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file: {err}", path=path) from None
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except _DuplicateKey as err:
        raise ConfigError(f"key {err.key!r} is given twice (first on line {err.first})",
                          path=path, line=err.line) from None
    except yaml.YAMLError as err:
        raise invalid_yaml(err, ConfigError, path) from None
    finally:
        loader.dispose()
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {key.value: key.start_mark.line + 1 for key, _ in node.value
                 if isinstance(key, yaml.ScalarNode)}
    return data, lines


def load_config(path: str | os.PathLike) -> ConfigValues:
    """Read a YAML mapping of option names to values, keys normalized.

    Raises:
        ConfigError: missing file, YAML syntax error (with its line), not a mapping,
            or a key given twice (``k`` twice, or ``input-size`` and ``input_size``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path=path)
    data, key_lines = _parse(path)
    if data is None:
        return ConfigValues()
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of option names to values, "
                          f"got {type(data).__name__}", path=path)
    config = ConfigValues()
    for key, value in data.items():
        name = normalize_key(key)
        line = key_lines.get(str(key))
        if name in config:
            raise ConfigError(f"key {key!r} is given twice (first on line "
                              f"{config.lines.get(name)})", path=path, line=line)
        config[name] = value
        config.lines[name] = line
    return config


def _line(config: Mapping[str, Any], key: str) -> int | None:
    return getattr(config, "lines", {}).get(key)


def check_keys(config: Mapping[str, Any], allowed: Iterable[str], *,
               path: str | os.PathLike | None = None) -> None:
    """Raise :class:`ConfigError` naming the first key not in ``allowed``."""
    allowed = sorted(set(allowed))
    for key in config:
        if key not in allowed:
            # told as the docs and the flags spell them (input-size; input_size works too)
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f" (did you mean {_spelled(hint[0])!r}?)" if hint else ""
            raise ConfigError(f"unknown key {_spelled(key)!r}{suggestion}; known keys: "
                              f"{', '.join(map(_spelled, allowed))}", path=path,
                              line=_line(config, key))


def _spelled(key: str) -> str:
    """A config key as the flags spell it: ``input_size`` -> ``input-size``."""
    return key.replace("_", "-")


def option_kind(param: Any) -> tuple[str | list[str], bool]:
    """The kind of value a command-line parameter takes, and whether it takes a list.

    Reads the parameter's Python annotation (Typer's ``type_descriptor.annotation``)
    or, for plain click parameters, ``type.name`` (``integer``, ``float range``, ...),
    without importing the CLI framework.

    Returns:
        ``(kind, many)``: kind is :data:`INT`, :data:`FLOAT`, :data:`BOOL` or
        :data:`TEXT`, or a list of them for a tuple of fixed length; ``many`` for a
        repeated or variadic parameter.
    """
    many = bool(getattr(param, "multiple", False)) or getattr(param, "nargs", 1) == -1
    descriptor = getattr(param, "type_descriptor", None)
    if getattr(descriptor, "annotation", None) is not None:
        kind, listed = _annotation_kind(descriptor.annotation)
        return kind, many or listed
    return _click_kind(getattr(param, "type", None)), many


def _annotation_kind(annotation: Any) -> tuple[str | list[str], bool]:
    """``(kind, is a list)`` of a Python annotation (``int``, ``Optional[Path]``, ...)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _annotation_kind(args[0])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _annotation_kind(options[0]) if len(options) == 1 else (TEXT, False)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return [_annotation_kind(a)[0] for a in args], False
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence):
        return (_annotation_kind(args[0])[0] if args else TEXT), True
    return _scalar_kind(annotation), False


def _scalar_kind(annotation: Any) -> str:
    if not isinstance(annotation, type) or issubclass(annotation, enum.Enum):
        return TEXT
    if issubclass(annotation, bool):
        return BOOL
    if issubclass(annotation, int):
        return INT
    return FLOAT if issubclass(annotation, float) else TEXT


def _click_kind(param_type: Any) -> str | list[str]:
    """The kind of a click ``ParamType`` (a tuple type gives one kind per element)."""
    element_types = getattr(param_type, "types", None)
    if element_types is not None:
        return [_click_kind(t) for t in element_types]
    name = str(getattr(param_type, "name", ""))
    if name.startswith("integer"):
        return INT
    if name.startswith("float"):
        return FLOAT
    return BOOL if name == "boolean" else TEXT


def _fits(value: Any, kind: str) -> bool:
    """Whether a YAML scalar ``value`` is a value of ``kind`` (no bool for a number)."""
    if kind == BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == INT:
        return isinstance(value, int)
    if kind == FLOAT:
        return isinstance(value, (int, float))
    return isinstance(value, (str, int, float))


def _describe(value: Any) -> str:
    """``value`` as a YAML user reads it: ``true (a boolean)``, ``[1, 2] (a list)``."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (list, tuple)):
        return f"{list(value)!r} (a list)"
    if isinstance(value, dict):
        return f"{value!r} (a mapping)"
    return repr(value)


def _expected(kind: str | list[str], many: bool) -> str:
    if isinstance(kind, list):
        return f"a list of {len(kind)} values ({', '.join(kind)})"
    article = "an" if kind[0] in "aeiou" else "a"
    return f"a list of {kind} values" if many else f"{article} {kind}"


def _check_value(value: Any, kind: str | list[str], many: bool) -> bool:
    """Whether ``value`` fits an option of ``kind`` (``many``: repeated or variadic)."""
    if value is None:
        return True
    if isinstance(kind, list):
        return (isinstance(value, (list, tuple)) and len(value) == len(kind)
                and all(_fits(v, k) for v, k in zip(value, kind)))
    if many:
        return isinstance(value, (list, tuple)) and all(_fits(v, kind) for v in value)
    return _fits(value, kind)


def check_types(config: Mapping[str, Any], params: Iterable[Any], *,
                path: str | os.PathLike | None = None) -> None:
    """Raise :class:`ConfigError` for the first value that does not fit its option.

    A boolean is not a number (YAML ``k: true`` would run with ``k=1``), a number is not
    a boolean, a list or mapping is not a scalar; ``null`` leaves the option's default.

    Args:
        config: normalized keys -> values (a :class:`ConfigValues` gives the lines).
        params: the command's parameters (Typer's or click's; see :func:`option_kind`).
        path: the config file, named in the error.
    """
    for param in params:
        if param.name not in config:
            continue
        value, (kind, many) = config[param.name], option_kind(param)
        if not _check_value(value, kind, many):
            raise ConfigError(f"key {param.name!r} must be {_expected(kind, many)}, got "
                              f"{_describe(value)}", path=path,
                              line=_line(config, param.name))


def merge(config: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """Flags given explicitly (not None) override the config file."""
    merged = dict(config)
    merged.update({key: value for key, value in flags.items() if value is not None})
    return merged
