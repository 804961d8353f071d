"""Config files and the --config option: safe YAML, flags override, unknown keys fail."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from detkit.cli.app import handle_errors
from detkit.cli.options import Config, InputSize
from detkit.config import check_keys, load_config, merge, normalize_key
from detkit.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_keys_normalized_dashes_and_underscores(tmp_path):
    config = load_config(write(tmp_path, "input-size: 320\nbatch_size: 4\n"))
    assert config == {"input_size": 320, "batch_size": 4}
    assert normalize_key("--multi-anchor-iou") == "multi_anchor_iou"


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
    with pytest.raises(ConfigError, match="'input_sise'.*did you mean 'input_size'"):
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
