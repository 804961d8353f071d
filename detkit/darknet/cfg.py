"""Darknet ``.cfg`` files: sections with their options and line numbers.

A cfg is a sequence of ``[type]`` headers, each followed by ``key=value`` lines; ``#``
and ``;`` start comment lines. The first section is ``[net]``; the others are layers,
numbered from 0 in file order (the indices ``[route]`` and ``[shortcut]`` refer to).
Every error names the file and the line. A leading UTF-8 byte-order mark is dropped;
bytes that are not UTF-8 are accepted in comment lines only (Darknet reads bytes).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from detkit.anchors import BOM
from detkit.errors import DataError

#: Section names Darknet accepts for each type detkit reads (aliases -> type).
SECTION_TYPES = {
    "net": "net", "network": "net",
    "convolutional": "convolutional", "conv": "convolutional",
    "maxpool": "maxpool", "max": "maxpool",
    "route": "route", "shortcut": "shortcut", "upsample": "upsample", "yolo": "yolo",
    # The tail of the darknet53 ImageNet classifier (read, never mapped onto detkit).
    "avgpool": "avgpool", "avg": "avgpool", "softmax": "softmax", "soft": "softmax",
    "cost": "cost",
}
COMMENT_CHARS = "#;"
#: The byte-order mark some editors (Windows Notepad) write first.
#: ``surrogateescape`` decodes a byte ``b`` that is not UTF-8 as ``chr(0xDC00 + b)``.
ESCAPED_BYTES = range(0xDC80, 0xDD00)


@dataclasses.dataclass
class Section:
    """One ``[type]`` block of a cfg.

    Attributes:
        type: the normalized type (``conv`` -> ``convolutional``, ``network`` -> ``net``).
        line: 1-based line of the ``[type]`` header.
        index: layer index (0 for the first layer after ``[net]``; -1 for ``[net]``).
        options: ``key -> value`` as written (whitespace removed, as Darknet does).
        option_lines: ``key -> line`` of each option.
        path: the cfg file (for error messages).
    """

    type: str
    line: int
    index: int
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    option_lines: dict[str, int] = dataclasses.field(default_factory=dict)
    path: str | None = None

    @property
    def label(self) -> str:
        """``[convolutional] (layer 12)`` or ``[net]``."""
        return f"[{self.type}]" if self.index < 0 else f"[{self.type}] (layer {self.index})"

    def error(self, message: str, key: str | None = None) -> DataError:
        """A :class:`DataError` at this section's line (or at option ``key``'s line)."""
        line = self.option_lines.get(key, self.line) if key else self.line
        return DataError(f"{self.label}: {message}", path=self.path, line=line)

    def get_int(self, key: str, default: int | None = None) -> int:
        """Option ``key`` as an int (``default`` when absent).

        Raises:
            DataError: absent without a default, or not an integer (naming the line).
        """
        return int(self._get(key, default, int, "an integer"))

    def get_float(self, key: str, default: float | None = None) -> float:
        """Option ``key`` as a float (``default`` when absent)."""
        return float(self._get(key, default, float, "a number"))

    def get_str(self, key: str, default: str | None = None) -> str:
        """Option ``key`` as written (``default`` when absent)."""
        return str(self._get(key, default, str, "text"))

    def get_ints(self, key: str, default: list[int] | None = None) -> list[int]:
        """Comma-separated integers, e.g. ``layers=-1, 61`` -> ``[-1, 61]``."""
        return [int(v) for v in self._get_list(key, default, int, "integers")]

    def get_floats(self, key: str, default: list[float] | None = None) -> list[float]:
        """Comma-separated numbers, e.g. ``anchors=10,13, 16,30`` -> ``[10.0, ...]``."""
        return [float(v) for v in self._get_list(key, default, float, "numbers")]

    def _get(self, key, default, convert, kind):
        if key not in self.options:
            if default is None:
                raise self.error(f"option {key!r} is missing")
            return default
        try:
            return convert(self.options[key])
        except ValueError:
            raise self.error(f"option {key}={self.options[key]!r} is not {kind}",
                             key) from None

    def _get_list(self, key, default, convert, kind):
        if key not in self.options:
            if default is None:
                raise self.error(f"option {key!r} is missing")
            return list(default)
        items = [item for item in self.options[key].split(",") if item]
        try:
            return [convert(item) for item in items]
        except ValueError:
            raise self.error(f"option {key}={self.options[key]!r} is not a list of {kind}",
                             key) from None


def parse_cfg(text: str, *, path: str | os.PathLike | None = None) -> list[Section]:
    """Split cfg text into sections, ``[net]`` first.

    Raises:
        DataError: an unknown layer type, an option outside a section or without
            ``=``, an option given twice, no ``[net]`` first, no layers, or a byte that
            is not UTF-8 outside a comment line.
    """
    where = None if path is None else os.fspath(path)
    sections: list[Section] = []
    for number, raw in enumerate(text.removeprefix(BOM).splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in COMMENT_CHARS:
            continue
        _check_bytes(raw, where, number)
        if line.startswith("["):
            if not line.endswith("]"):
                raise DataError(f"section header {raw.strip()!r} lacks its closing ']'",
                                path=where, line=number)
            name = line[1:-1].lower()
            if name not in SECTION_TYPES:
                raise DataError(f"unknown layer type [{line[1:-1]}]: detkit imports "
                                f"[convolutional], [maxpool], [route], [shortcut], "
                                f"[upsample] and [yolo] layers", path=where, line=number)
            kind = SECTION_TYPES[name]
            index = len(sections) - 1 if sections else 0
            if not sections and kind != "net":
                raise DataError(f"the cfg must start with [net], found [{line[1:-1]}]",
                                path=where, line=number)
            if sections and kind == "net":
                raise DataError("a second [net] section", path=where, line=number)
            sections.append(Section(kind, number, -1 if kind == "net" else index,
                                    path=where))
            continue
        if not sections:
            raise DataError(f"option {raw.strip()!r} before the first [section]",
                            path=where, line=number)
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise DataError(f"expected key=value, found {raw.strip()!r}", path=where,
                            line=number)
        section = sections[-1]
        if key in section.options:
            raise DataError(f"{section.label}: option {key!r} given twice (first at line "
                            f"{section.option_lines[key]})", path=where, line=number)
        section.options[key] = value
        section.option_lines[key] = number
    if not sections:
        raise DataError("no [net] section: not a Darknet cfg", path=where)
    if len(sections) == 1:
        raise DataError("the cfg has no layers after [net]", path=where)
    return sections


def _check_bytes(raw: str, where: str | None, number: int) -> None:
    """Refuse a non-comment line holding a byte that is not UTF-8 (see :func:`decode`)."""
    for char in raw:
        if ord(char) in ESCAPED_BYTES:
            raise DataError(f"byte 0x{ord(char) - 0xDC00:02x} is not UTF-8 text (only "
                            f"comment lines, starting with # or ;, may hold such bytes)",
                            path=where, line=number)


def decode(data: bytes) -> str:
    """cfg bytes -> text: UTF-8 without a leading BOM; bytes that are not UTF-8 become
    surrogate escapes, which :func:`parse_cfg` accepts in comment lines only."""
    return data.decode("utf-8-sig", errors="surrogateescape")


def read_cfg(path: str | os.PathLike) -> list[Section]:
    """Read and parse a cfg file (see :func:`parse_cfg`).

    Raises:
        DataError: missing or unreadable file, or a malformed cfg.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("cfg file not found", path=path) from None
    except OSError as err:
        raise DataError(f"cannot read the cfg: {err}", path=path) from None
    return parse_cfg(decode(data), path=path)
