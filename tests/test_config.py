"""Config files and the --config option: safe YAML, flags override, unknown keys fail."""

import dataclasses
from pathlib import Path
from typing import List, Optional

import pytest
import typer
from typing_extensions import Annotated
from typer.testing import CliRunner

from detkit.cli.app import handle_errors
from detkit.cli._command import Config
from detkit.config import (check_keys, check_types, load_config, merge, normalize_key,
                           option_kind)
from detkit.errors import ConfigError

InputSize = Annotated[int, typer.Option("--input-size", help="Network input side.")]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_keys_normalized_dashes_and_underscores(tmp_path):
    config = load_config(write(tmp_path, "input-size: 320\nbatch_size: 4\n"))
    assert config == {"input_size": 320, "batch_size": 4}
    assert normalize_key("--multi-anchor-iou") == "multi_anchor_iou"


def test_exponents_without_a_dot_are_numbers(tmp_path):
    """As the docs write them on the command line (YAML 1.2; PyYAML gave '2e-3')."""
    config = load_config(write(tmp_path, "lr: 2e-3\nmin-lr: 1E-6\nname: 2e\nk: 9\n"))
    assert config == {"lr": 0.002, "min_lr": 1e-6, "name": "2e", "k": 9}


def test_empty_file_is_empty_config(tmp_path):
    assert load_config(write(tmp_path, "")) == {}


def test_yaml_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "k: 9\nseed: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and err.value.line is not None


def test_not_a_mapping_and_duplicate_keys(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="twice"):
        load_config(write(tmp_path, "input-size: 1\ninput_size: 2\n"))


def test_safe_load_refuses_python_objects(tmp_path):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, "k: !!python/object/apply:os.system ['true']\n"))


def test_unknown_key_names_key_and_suggests(tmp_path):
    """Keys are told as the docs and flags spell them (dashes), however they were typed."""
    with pytest.raises(ConfigError, match="unknown key 'input-sise' \\(did you mean "
                                          "'input-size'\\?\\); known keys: input-size, seed"):
        check_keys({"input_sise": 3}, ["input_size", "seed"], path="c.yaml")


def test_merge_flags_override_and_none_keeps_file():
    assert merge({"k": 9, "seed": 1}, {"k": 6, "seed": None}) == {"k": 6, "seed": 1}


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def run(input_size: InputSize = 416, seed: int = 0, config: Config = None):
        with handle_errors():
            print(f"input_size={input_size} seed={seed}")

    @app.callback()
    def root():
        pass

    return app


@pytest.mark.parametrize("argv,expected", [
    ([], "input_size=320 seed=7"),
    (["--seed", "3"], "input_size=320 seed=3"),
    (["--input-size", "640"], "input_size=640 seed=7"),
])
def test_config_option_sets_defaults_and_flags_win(tmp_path, argv, expected):
    path = write(tmp_path, "input-size: 320\nseed: 7\n")
    result = CliRunner().invoke(_app(), ["run", *argv, "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert expected in result.output


def test_config_option_unknown_key_exits_2(tmp_path):
    path = write(tmp_path, "input-size: 320\nsede: 7\n")
    result = CliRunner().invoke(_app(), ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "unknown key 'sede'" in result.output


def test_config_option_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(_app(), ["run", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "config file not found" in result.output


def test_duplicate_key_names_both_lines(tmp_path):
    path = write(tmp_path, "k: 6\nseed: 1\nk: 9\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:3: key 'k' is given twice (first on line 1)"
    path = write(tmp_path, "input-size: 1\nseed: 2\ninput_size: 2\n")
    with pytest.raises(ConfigError, match=r":3: key 'input_size' is given twice \(first on "
                                          r"line 1\)"):
        load_config(path)


def test_duplicate_key_in_nested_mapping_and_merge_keys(tmp_path):
    with pytest.raises(ConfigError, match=r":3: key 'a' is given twice"):
        load_config(write(tmp_path, "k:\n  a: 1\n  a: 2\n"))
    config = load_config(write(tmp_path, "base: &b {k: 3, seed: 1}\nother:\n  <<: *b\n"
                                         "  k: 4\n"))
    assert config["other"] == {"k": 4, "seed": 1}


def test_key_lines_and_bom(tmp_path):
    config = load_config(write(tmp_path, "\ufeff# comment\nk: 6\n\nseed: 1\n"))
    assert config == {"k": 6, "seed": 1} and config.lines == {"k": 2, "seed": 4}
    with pytest.raises(ConfigError, match=r"cfg\.yaml:4: unknown key 'sede'"):
        check_keys(load_config(write(tmp_path, "k: 6\n\n\nsede: 1\n")), ["k", "seed"],
                   path=tmp_path / "cfg.yaml")


@dataclasses.dataclass
class _Param:
    """A click-like parameter: ``name`` and ``type`` (a ParamType-like object)."""

    name: str
    type: object
    multiple: bool = False
    nargs: int = 1


@dataclasses.dataclass
class _Type:
    """click's ParamType as config reads it: its ``name`` (and a tuple's ``types``)."""

    name: str
    types: Optional[list] = None


INT, FLOAT, BOOL = _Type("integer"), _Type("float"), _Type("boolean")
PAIR = _Type("<float float>", [FLOAT, FLOAT])


@pytest.mark.parametrize("param, value, ok", [
    (_Param("k", INT), 3, True),
    (_Param("k", INT), True, False),
    (_Param("k", _Type("integer range")), 2.0, False),
    (_Param("k", INT), "3", False),
    (_Param("lr", FLOAT), 3, True),
    (_Param("lr", _Type("float range")), False, False),
    (_Param("resume", BOOL), 1, False),
    (_Param("resume", BOOL), False, True),
    (_Param("out", _Type("path")), "a.txt", True),
    (_Param("out", _Type("path")), ["a.txt"], False),
    (_Param("out", _Type("text")), {"a": 1}, False),
    (_Param("format", _Type("choice")), False, False),
    (_Param("scale", PAIR), [0.5, 1.5], True),
    (_Param("scale", PAIR), [0.5, 1.5, 2], False),
    (_Param("scale", PAIR), 0.5, False),
    (_Param("reports", _Type("path"), nargs=-1), ["a.json", "b.json"], True),
    (_Param("reports", _Type("path"), multiple=True), "a.json", False),
    (_Param("k", INT), None, True),
])
def test_check_types_click_params(param, value, ok):
    config = {param.name: value}
    if ok:
        check_types(config, [param], path="c.yaml")
        return
    with pytest.raises(ConfigError, match=rf"^c\.yaml: key '{param.name}' must be "):
        check_types(config, [param], path="c.yaml")


@pytest.mark.parametrize("text, message", [
    ("seed: true\n", "cfg.yaml:1: key 'seed' must be an integer, got true (a boolean)"),
    ("input-size: 320\nseed: 1.5\n", "cfg.yaml:2: key 'seed' must be an integer, got 1.5"),
    ("seed: [1, 2]\n", "cfg.yaml:1: key 'seed' must be an integer, got [1, 2] (a list)"),
    ("seed: 1\nseed: 2\n", "cfg.yaml:2: key 'seed' is given twice (first on line 1)"),
])
def test_config_option_wrong_type_exits_2_naming_line(tmp_path, text, message):
    path = write(tmp_path, text)
    result = CliRunner().invoke(_app(), ["run", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_option_kind_of_typer_annotations():
    from typer.main import get_command

    app = typer.Typer()

    @app.command()
    def run(k: int = 1, lr: float = 0.1, on: bool = False, out: Optional[Path] = None,
            scale: tuple[float, float] = (0.5, 1.5), names: Optional[List[str]] = None,
            config: Config = None):
        pass

    @app.callback()
    def root():
        pass

    kinds = {p.name: option_kind(p) for p in get_command(app).commands["run"].params}
    assert kinds == {"k": ("integer", False), "lr": ("number", False),
                     "on": ("boolean", False), "out": ("string", False),
                     "scale": (["number", "number"], False), "names": ("string", True),
                     "config": ("string", False)}
