"""The one exception family of detkit.

The library raises these; only the CLI turns them into a message and an exit code
(``exit_code``: 1 for a failed run, 2 for bad usage). A traceback means a bug.
"""

from __future__ import annotations

import os


class DetkitError(Exception):
    """Base class: an expected failure with a message for the user.

    Args:
        message: what went wrong, in words a user can act on.
        path: the file the problem is in, if any.
        line: the 1-based line (or record number) in ``path``, if known.
    """

    exit_code = 1

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 line: int | None = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return where + self.message


class UsageError(DetkitError):
    """Bad options or config values (exit code 2)."""

    exit_code = 2


def lookup(table, name: str, what: str):
    """``table[name]``; an unknown name is a :class:`UsageError` listing the known ones
    (``what``: ``"model"``, ``"backbone"``...)."""
    try:
        return table[name]
    except KeyError:
        raise UsageError(f"unknown {what} {name!r}; choose one of: "
                         f"{', '.join(table)}") from None


def invalid_yaml(err: Exception, error: type, path) -> DetkitError:
    """``error`` (a :class:`DetkitError` class) for a YAML parse error of file ``path``:
    ``path:LINE: invalid YAML: PROBLEM`` (PyYAML marks where it stopped)."""
    mark = getattr(err, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(err, "problem", None) or str(err)
    return error(f"invalid YAML: {problem}", path=path, line=line)


class ConfigError(UsageError):
    """A config file that cannot be read or names an unknown key."""


class DataError(DetkitError):
    """A dataset, image or annotation file that cannot be used."""


class ArtifactError(DetkitError):
    """A missing, corrupt or incomplete artifact (npz, h5, weights)."""


class ArtifactMismatchError(ArtifactError):
    """Two artifacts (or an artifact and the command) disagree on settings."""


class TrainingError(DetkitError):
    """Training stopped: NaN/Inf loss, no data, incompatible weights."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a long stage, with what was kept and how to continue (the CLI prints
    ``interrupted: <message>``, exit code 130)."""


def interrupted(err: BaseException) -> bool:
    """Whether ``err`` is Ctrl-C, or an error raised while Ctrl-C unwound (TensorFlow's
    ``Exiting device scope without proper scope nesting`` when the signal lands inside
    a device scope): its chain of causes and contexts holds a ``KeyboardInterrupt``."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False
