"""The Typer application, error rendering and the ``--config`` mechanism.

Commands live one per module in this package: each registers the ``Options`` and
``run`` of its :mod:`detkit.commands` module on :data:`app` (:mod:`detkit.cli._command`
derives the flags, runs it inside :func:`handle_errors`) and renders the result. A
command's module is imported only when that command runs or shows its own help
(:class:`LazyGroup`): ``detkit --help`` lists :data:`detkit.cli._catalog.COMMANDS`
without loading NumPy or Keras. No pipeline logic here.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from detkit.cli._catalog import COMMANDS
from detkit.errors import DetkitError, interrupted


#: The command-line parser's own errors (Typer 0.29 carries its own copy of Click).
USAGE_MISTAKES: tuple[type[Exception], ...] = (click.ClickException,)
try:
    from typer._click.exceptions import ClickException as _TyperClickException
    USAGE_MISTAKES += (_TyperClickException,)
except ImportError:                      # Typer on Click itself
    pass


def _help_of(argv) -> str:
    """``detkit CMD --help`` for the command ``argv`` names (Click's errors about an
    option's value carry no context), else ``detkit --help``."""
    name = next((token for token in argv or () if not str(token).startswith("-")), None)
    return f"detkit {name} --help" if name in COMMANDS else "detkit --help"


class _UntypedHelp:
    """``--help`` listed without a value type (Typer shows every option's, ``<bool>``
    for a flag that takes no value)."""

    def get_help_option(self, ctx: click.Context):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class Command(_UntypedHelp, TyperCommand):
    """A detkit subcommand (see :class:`_UntypedHelp`)."""


class LazyGroup(_UntypedHelp, TyperGroup):
    """The command group: a command's module is imported the first time it is needed."""

    #: True while the group's own help is drawn: commands not loaded yet are listed from
    #: the catalog instead of being imported.
    listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None or name in self.commands:
            return self.commands.get(name)
        if self.listing:
            return click.Command(name, help=entry.help)
        importlib.import_module(f"detkit.cli.{entry.module}")
        info = next(info for info in app.registered_commands if info.name == name)
        self.commands[name] = typer.main.get_command_from_info(
            info, pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=app.rich_markup_mode)
        return self.commands[name]

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """Click's, with ``did you mean 'kmeans-anchors'?`` for a near miss of a command
        name (Typer's own suggestion sees only the commands loaded so far)."""
        try:
            return super().resolve_command(ctx, args)
        except USAGE_MISTAKES as err:
            message = getattr(err, "message", "")
            near = difflib.get_close_matches(args[0], list(COMMANDS), n=1) if args else []
            if message.startswith("No such command"):   # Typer's own hint replaced
                err.message = f"No such command {args[0]!r}" + (
                    f"; did you mean {near[0]!r}?" if near else ".")
            raise

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """Typer's ``main``, with a command-line mistake (unknown option or command, a
        missing argument, a value of the wrong type) told as one ``error:`` line naming
        where the help is, exit code 2, instead of Typer's boxed usage panel."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except USAGE_MISTAKES as err:
            if not err.format_message():     # `detkit` alone: the help was the answer
                sys.exit(err.exit_code)
            if getattr(err, "possibilities", None):  # Click's near misses, less --help:
                # a mistyped option is never --help (the line names the help anyway)
                err.possibilities = [p for p in err.possibilities if p != "--help"]
            context = getattr(err, "ctx", None)
            where = (f"{context.command_path} --help" if context is not None
                     else _help_of(kwargs.get("args", args[0] if args else sys.argv[1:])))
            _error(f"{err.format_message().rstrip('.')} (see '{where}')")
            sys.exit(err.exit_code)
        sys.exit(code if isinstance(code, int) else 0)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(
    cls=LazyGroup,
    name="detkit",
    help="Train YOLO-style object detectors from the shell, one pipeline stage per command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Results and tables go to stdout; warnings, progress and errors to stderr.
console = Console()
err_console = Console(stderr=True)


def _error(message: str) -> None:
    # Messages quote cfg sections ("[yolo]") and file names: never Rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True,
                      highlight=False, soft_wrap=True)


def os_error_message(err: OSError) -> str:
    """One line for an operating-system error: the path(s), then what went wrong."""
    reason = err.strerror or " ".join(str(err).split()) or type(err).__name__
    names = [os.fsdecode(name) for name in (err.filename, err.filename2) if name]
    return f"{' -> '.join(names)}: {reason}" if names else reason


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Turn a :class:`DetkitError` into ``error: ...`` on stderr and its exit code.

    An ``OSError`` (a full disk, an unwritable folder) is one line naming the path, exit
    code 1. Ctrl-C, and an error a library raised while Ctrl-C unwound, exit 130. A
    :class:`detkit.artifacts.DetkitWarning` raised meanwhile is printed once as
    ``warning: ...``; other warnings go their usual way.
    """
    from detkit.artifacts import DetkitWarning

    shown: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", DetkitWarning)
        previous = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if not issubclass(category, DetkitWarning):
                return previous(message, category, *args, **kwargs)
            if str(message) not in shown:
                shown.add(str(message))
                warn(message.args[0] if getattr(message, "args", None) else str(message))

        warnings.showwarning = show
        try:
            yield
        except DetkitError as err:
            _error(str(err))
            raise typer.Exit(err.exit_code) from None
        except OSError as err:
            _error(os_error_message(err))
            raise typer.Exit(1) from None
        except KeyboardInterrupt as err:
            told = f": {escape(str(err))}" if str(err) else ""
            err_console.print(f"[bold red]interrupted[/]{told}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(130) from None
        except Exception as err:             # raised while Ctrl-C unwound (a library's)
            if not interrupted(err):
                raise
            err_console.print("[bold red]interrupted[/]", highlight=False)
            raise typer.Exit(130) from None


def _config_callback(ctx: typer.Context, param: typer.CallbackParam,
                     value: Optional[Path]) -> Optional[Path]:
    """Load ``--config`` before the other options so its values become their defaults."""
    if value is None:
        return value
    from detkit.config import check_keys, check_types, load_config

    with handle_errors():
        config = load_config(value)
        params = [p for p in ctx.command.params if p.name != "config"]
        check_keys(config, [p.name for p in params], path=value)
        check_types(config, params, path=value)
    ctx.default_map = {**(ctx.default_map or {}), **config}
    return value


def config_option() -> typer.models.OptionInfo:
    """The ``--config FILE.yaml`` option (for ``Annotated``; eager: read first)."""
    return typer.Option(
        "--config", is_eager=True, callback=_config_callback,
        help="YAML file of option values (keys are long option names; paths in it are "
             "read from the working directory, as on the command line); flags override "
             "it.",
        exists=False, dir_okay=False)


@app.callback()
def _root() -> None:
    """Train YOLO-style object detectors from the shell, one pipeline stage per command."""


def warn(message: str | None) -> None:
    """Print a one-line warning on stderr, or a ``note:`` for a
    :class:`detkit.artifacts.Note` (nothing for ``None`` or empty)."""
    from detkit.artifacts import Note

    if message:
        label = "note:" if isinstance(message, Note) else "[yellow]warning:[/]"
        err_console.print(f"{label} {escape(str(message))}", highlight=False,
                          soft_wrap=True)
