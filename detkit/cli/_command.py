"""Registering a command from its ``Options`` dataclass, ``run`` and a renderer.

:func:`register` derives the Typer signature from the fields of ``Options`` (flag, type,
default, help), adds ``--config``, builds the options from what Typer parsed, validates
them (errors name the flag), checks the outputs (none is an input, each can be written:
:func:`detkit.artifacts.check_outputs`), runs the command with a Rich progress display, and renders
the result. A command module in ``cli/`` is then one :func:`register` call and its
renderer.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from typing_extensions import Annotated

from detkit.cli._catalog import COMMANDS
from detkit.cli.app import Command, app, config_option, handle_errors
from detkit.cli._display import RichProgress
from detkit.options import check, specs

Config = Annotated[Optional[Path], config_option()]
#: Characters at most of the choices shown as an option's value in ``--help``.
MAX_CHOICES_SHOWN = 20
#: The ``--help`` panel of the ``--flag/--no-flag`` options.
SWITCHES_PANEL = "Switches"
#: The command's parameter that receives Typer's context (where each value came from).
CONTEXT = "_context"


def _metavar(spec, kind: Any) -> Optional[str]:
    """What ``--help`` shows as an option's value: nothing for a flag, a few short choices
    (``letterbox|stretch``; longer lists are in the help text), else Typer's type
    (``<int>``)."""
    if kind is bool:
        return ""
    choices = "|".join(map(str, spec.choices or ()))
    return choices if spec.choices and len(choices) <= MAX_CHOICES_SHOWN else None


def _parameter(field: dataclasses.Field, spec, kind: Any) -> inspect.Parameter:
    """The Typer parameter of one options field of type ``kind``."""
    if type(kind) is types.UnionType:  # ``X | None``, spelled as Typer reads it
        kind = typing.Union[kind.__args__]
    position = inspect.Parameter.POSITIONAL_OR_KEYWORD
    if spec.positional:
        info = typer.Argument(help=spec.help, show_default=False, metavar=spec.flag)
        return inspect.Parameter(field.name, position, annotation=Annotated[kind, info])
    names = [f"{spec.flag}/--no-{spec.flag[2:]}"] if spec.toggle else [spec.flag]
    # Switches get their own panel: its --no-x column would narrow every option's help.
    info = typer.Option(*names, help=spec.help, metavar=_metavar(spec, kind),
                        show_default=not spec.tells_default,
                        rich_help_panel=SWITCHES_PANEL if spec.toggle else None)
    return inspect.Parameter(field.name, position, annotation=Annotated[kind, info],
                             default=field.default)


def signature(options_cls: type) -> inspect.Signature:
    """Typer's view of ``options_cls``: one parameter per field, then ``--config`` and
    the context (:data:`CONTEXT`)."""
    hints = typing.get_type_hints(options_cls)
    fields = sorted(specs(options_cls), key=lambda pair: not pair[1].positional)
    params = [_parameter(field, spec, hints[field.name]) for field, spec in fields]
    params.append(inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=Config, default=None))
    params.append(inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY,
                                    annotation=typer.Context))
    return inspect.Signature(params)


def _given(options_cls: type, context: typer.Context) -> dict[str, frozenset[str]]:
    """``{"given": names}`` of the options set by flag or ``--config`` (Click's
    ``DEFAULT_MAP``) in this command line, for an ``Options`` with a ``given`` field
    (:func:`detkit.options.is_given`)."""
    if "given" not in {field.name for field in dataclasses.fields(options_cls)}:
        return {}
    sources = {field.name: context.get_parameter_source(field.name)
               for field, _ in specs(options_cls)}
    return {"given": frozenset(name for name, source in sources.items()
                               if source is not None and source.name != "DEFAULT")}


def register(name: str, options_cls: type, run: Callable[..., Any],
             render: Callable[[Any], None]) -> Callable[..., None]:
    """Add the command ``name`` to the app.

    Args:
        name: the subcommand (``kmeans-anchors``), an entry of
            :data:`detkit.cli._catalog.COMMANDS` (which holds its help text).
        options_cls: the command's ``Options`` dataclass (fields from
            :func:`detkit.options.option`).
        run: ``run(options, progress) -> result`` (the command's library entry point).
        render: prints the result (tables, files written).
    """

    def command(**values: Any) -> None:
        config = values.pop("config", None)  # already applied to the defaults
        context = values.pop(CONTEXT)
        with handle_errors(), RichProgress() as progress:
            from detkit.artifacts import check_outputs
            from detkit.commands.groups import input_size_of_anchors

            options = options_cls(**values, **_given(options_cls, context))
            check(options)                        # the values typed, before any note
            options = input_size_of_anchors(options)
            check(options)                        # and the size taken from --anchors
            check_outputs(options, extra_inputs=[("--config", config)] if config else [],
                          command=name)
            result = run(options, progress)
        render(result)

    command.__signature__ = signature(options_cls)
    command.__annotations__ = {param.name: param.annotation
                               for param in command.__signature__.parameters.values()}
    command.__doc__ = COMMANDS[name].help
    command.__name__ = name.replace("-", "_")
    app.command(name, cls=Command)(command)
    return command
