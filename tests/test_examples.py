"""The shipped examples stay valid: config keys are options, the demo Makefile parses."""

import shutil
import subprocess
from pathlib import Path

import pytest
import typer

from detkit.cli import app
from detkit.config import check_keys, load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def command_params(name: str) -> list[str]:
    group = typer.main.get_command(app)
    command = group.get_command(None, name)
    return [param.name for param in command.params]


def test_train_config_example_has_only_train_options():
    config = load_config(EXAMPLES / "train_stage2.yaml")
    assert config["stage"] == 2 and config["input_size"] == 256
    check_keys(config, command_params("train"), path="train_stage2.yaml")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_demo_makefile_dry_run_lists_every_stage(tmp_path):
    run = subprocess.run(["make", "-n", "-f", str(EXAMPLES / "demo.mk"), f"DEMO={tmp_path}"],
                         capture_output=True, text=True, check=True)
    for command in ("synth", "kmeans-anchors", "encode-labels", "cache-bottlenecks",
                    "train", "distill", "eval-map", "compare"):
        assert f"detkit {command}" in run.stdout, command


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_demo_starts_from_the_shipped_pretrained_models_without_rebuilding_them(tmp_path):
    shipped = sorted((EXAMPLES / "pretrained").glob("*.weights.h5"))
    assert [p.name for p in shipped] == ["yolov3-tiny-w0.125.weights.h5",
                                         "yolov3-tiny-w0.25.weights.h5"]
    for path in shipped:
        assert path.with_name(path.name + ".manifest.json").is_file()
        assert path.stat().st_size < 4_000_000
    run = subprocess.run(["make", "-n", "-f", str(EXAMPLES / "demo.mk"), f"DEMO={tmp_path}"],
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    pretrained = EXAMPLES / "pretrained"
    assert f"--weights {pretrained}/yolov3-tiny-w0.25.weights.h5" in run.stdout
    assert f"--weights {pretrained}/yolov3-tiny-w0.125.weights.h5" in run.stdout
    assert "runs/pretrain" not in run.stdout  # the source dataset is never made
