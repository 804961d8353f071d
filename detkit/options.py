"""Declaring a command's options once: a dataclass field per option.

A command's ``Options`` is a keyword-only dataclass whose fields are made with
:func:`argument` (a positional path) or :func:`option` (a ``--flag``). Each field holds its
type, default, help text and validation in one place; the Typer signature, ``--config``
keys and the config recorded in manifests are all derived from these fields, so adding an
option means adding one field. Groups shared by several commands (dataset, model,
training) are dataclasses the command's ``Options`` inherits from.

This module is a foundation: it knows nothing of Typer (the CLI reads the metadata).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from detkit.errors import UsageError

#: Key of the per-field :class:`Spec` in ``dataclasses.Field.metadata``.
SPEC = "detkit.option"
#: What a path option is to its command (``None``: not a path it reads or writes).
ROLES = (None, "input", "output")
#: How a help text starts telling what an option not given becomes.
NOT_GIVEN = "Not given:"


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one field reads on the command line and what values it accepts.

    Attributes:
        help: the ``--help`` text.
        flag: ``--name`` (derived from the field name when not given).
        positional: a positional argument instead of a flag.
        toggle: a boolean shown as ``--flag/--no-flag``.
        choices: allowed values (``None``: any).
        low, high: inclusive numeric bounds (``None``: unbounded).
        above: exclusive lower bound.
        integer: the value must be a whole number.
        multiple: the value must be a positive multiple of this (the input side: 32).
        role: ``"input"`` (a file or folder the command reads) or ``"output"`` (one it
            writes); an output may never be, or link to, an input (:func:`io_paths`,
            checked by :func:`detkit.artifacts.check_outputs` before the command runs).
        folder: an output that is a folder (else a file).
        writes: for an output, ``writes(path)`` lists every path written for it (the
            default: the path and its ``NAME.manifest.json``; a folder: the files
            written inside it).
    """

    help: str
    flag: Optional[str] = None
    positional: bool = False
    toggle: bool = False
    choices: Optional[tuple[Any, ...]] = None
    low: Optional[float] = None
    high: Optional[float] = None
    above: Optional[float] = None
    integer: bool = False
    multiple: Optional[int] = None
    role: Optional[str] = None
    folder: bool = False
    writes: Optional[Callable[[Path], Iterable[Path]]] = None

    @property
    def tells_default(self) -> bool:
        """The help says what an unset value becomes (``Not given: ...``): ``--help``
        shows no ``[default: ...]`` beside it (that value is only the last fallback)."""
        return NOT_GIVEN in self.help

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")

    def check(self, value: Any) -> None:
        """Raise :class:`UsageError` naming the flag when ``value`` is out of bounds."""
        if value is None:
            return
        name = self.flag
        if self.choices is not None and value not in self.choices:
            hint = ("; a weights file or an export is given with --weights"
                    if name == "--model" and _looks_like_a_path(value) else "")
            raise UsageError(f"{name} must be one of {', '.join(map(str, self.choices))}, "
                             f"got {value!r}{hint}")
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric:
            return
        if self.integer and int(value) != value:
            raise UsageError(f"{name} must be an integer, got {value!r}")
        if self.multiple is not None and (value <= 0 or value % self.multiple):
            raise UsageError(f"{name} must be a multiple of {self.multiple}, "
                             f"got {value!r}")
        if not math.isfinite(value):
            raise UsageError(f"{name} must be a finite number, got {value!r}")
        lower = self.low if self.above is None else self.above
        closed = "[" if self.above is None else "("
        too_low = ((self.low is not None and value < self.low)
                   or (self.above is not None and not value > self.above))
        too_high = self.high is not None and value > self.high
        if (too_low or too_high) and lower is not None and self.high is not None:
            raise UsageError(f"{name} must be in {closed}{lower:g}, {self.high:g}], "
                             f"got {value!r}")
        if too_low and self.above == 0:
            raise UsageError(f"{name} must be a positive number, got {value!r}")
        if too_low:
            relation = ">=" if self.above is None else ">"
            raise UsageError(f"{name} must be {relation} {lower:g}, got {value!r}")
        if too_high:
            raise UsageError(f"{name} must be <= {self.high:g}, got {value!r}")


def _looks_like_a_path(value: Any) -> bool:
    """A file name or path (``runs/s2/best.weights.h5``, ``model.tflite``), not a name."""
    text = str(value)
    return "/" in text or os.sep in text or Path(text).suffix.lower() in (
        ".h5", ".keras", ".tflite", ".onnx", ".weights", ".pb")


def option(default: Any = None, help: str = "", *, flag: Optional[str] = None,
           toggle: bool = False, choices: Optional[Sequence[Any]] = None,
           low: Optional[float] = None, high: Optional[float] = None,
           above: Optional[float] = None, integer: bool = False,
           multiple: Optional[int] = None, role: Optional[str] = None, folder: bool = False,
           writes: Optional[Callable[[Path], Iterable[Path]]] = None) -> Any:
    """A ``--flag`` field (``flag`` defaults to the field name with dashes).

    Args:
        default: the default value (immutable: paths, numbers, strings, tuples).
        help: the ``--help`` text.
        toggle: a boolean shown as ``--flag/--no-flag``.
        choices, low, high, above, integer, multiple: validation (see :class:`Spec`).
        role, folder, writes: what the path is to the command (see :class:`Spec`).
    """
    spec = Spec(help=help, flag=flag, toggle=toggle,
                choices=None if choices is None else tuple(choices), low=low, high=high,
                above=above, integer=integer, multiple=multiple, role=role, folder=folder,
                writes=writes)
    return dataclasses.field(default=default, metadata={SPEC: spec})


def retold(owner: type, name: str, help: str) -> Any:
    """``owner``'s option ``name`` (same flag, default and checks) with another ``--help``
    text: for a command that lacks what the shared text speaks of (``--weights``)."""
    field = next(f for f in dataclasses.fields(owner) if f.name == name)
    spec = dataclasses.replace(field.metadata[SPEC], help=help)
    return dataclasses.field(default=field.default, metadata={SPEC: spec})


def argument(help: str, *, role: Optional[str] = None, folder: bool = False,
             writes: Optional[Callable[[Path], Iterable[Path]]] = None) -> Any:
    """A required positional argument (``role`` etc.: see :class:`Spec`)."""
    spec = Spec(help=help, positional=True, role=role, folder=folder, writes=writes)
    return dataclasses.field(metadata={SPEC: spec})


def given_field() -> Any:
    """The ``given`` field of an ``Options`` (not an option itself): the names of the
    options the user set, by flag or in ``--config``, as the command line recorded them;
    ``None`` when not known (the Python API). See :func:`is_given`."""
    return dataclasses.field(default=None, compare=False, repr=False)


def is_given(opts: Any, name: str) -> bool:
    """Whether the user set option ``name`` of ``opts``: named in ``opts.given`` when
    the command line recorded it (so ``--width 1.0`` typed is given although 1.0 is the
    default), else when its value differs from the default."""
    given = getattr(opts, "given", None)
    if given is not None:
        return name in given
    default = {field.name: field.default for field in dataclasses.fields(opts)}[name]
    return getattr(opts, name) != default


def specs(cls_or_obj: Any) -> list[tuple[dataclasses.Field, Spec]]:
    """Every option field of an ``Options`` class with its :class:`Spec`, in order."""
    found = []
    for field in dataclasses.fields(cls_or_obj):
        spec = field.metadata.get(SPEC)
        if spec is not None:
            flag = spec.flag or (field.name.upper() if spec.positional
                                 else "--" + field.name.replace("_", "-"))
            found.append((field, dataclasses.replace(spec, flag=flag)))
    return found


def flag_of(cls_or_obj: Any, name: str) -> str:
    """The command-line name of field ``name`` (``--input-size`` or ``DATA``)."""
    for field, spec in specs(cls_or_obj):
        if field.name == name:
            return spec.flag
    raise KeyError(name)


def check(opts: Any) -> None:
    """Validate every field of ``opts`` against its :class:`Spec`.

    Raises:
        UsageError: naming the first flag whose value is out of bounds.
    """
    for field, spec in specs(opts):
        spec.check(getattr(opts, field.name))


@dataclasses.dataclass(frozen=True)
class RolePath:
    """One path an option names, with the option's flag and :class:`Spec`."""

    flag: str
    path: Path
    spec: Spec


def io_paths(opts: Any) -> tuple[list[RolePath], list[RolePath]]:
    """The ``(inputs, outputs)`` that the path options of ``opts`` name (unset: skipped).

    A field whose value is a list of paths (e.g. several reports) gives one entry each.
    """
    found: dict[str, list[RolePath]] = {"input": [], "output": []}
    for field, spec in specs(opts):
        if spec.role is None:
            continue
        value = getattr(opts, field.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, (str, os.PathLike)) and os.fspath(item) != "":
                found[spec.role].append(RolePath(spec.flag, Path(item), spec))
    return found["input"], found["output"]


def plain(value: Any) -> Any:
    """A value as recorded in JSON: paths as strings, tuples as lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    return value


def as_config(opts: Any) -> dict[str, Any]:
    """The resolved options as recordable values, keyed by field name."""
    return {field.name: plain(getattr(opts, field.name)) for field, _ in specs(opts)}


def from_mapping(cls: type, values: Mapping[str, Any]) -> Any:
    """Build ``cls`` from keyword values; paths given as strings become :class:`Path`.

    Raises:
        TypeError: a key that is not an option of ``cls``.
    """
    known = {field.name: field for field, _ in specs(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    return cls(**{key: recorded_value(known[key], value) for key, value in values.items()})


def recorded_value(field: dataclasses.Field, value: Any) -> Any:
    """An option's value as :func:`as_config` recorded it, back in the field's type:
    paths from strings, tuples from lists."""
    if "Path" in str(field.type) and isinstance(value, str):
        return Path(value)
    return tuple(value) if isinstance(value, list) else value

