"""``--monitor`` and ``--eval-every``: which epoch best.weights.h5 holds, usage errors,
and ``--resume`` keeping the monitor."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.cli import app

ANCHORS = np.float32([[8, 8], [12, 16], [16, 12], [20, 24], [28, 28], [40, 40]])
runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(synth_with_anchors):
    return synth_with_anchors(ANCHORS)


def args(dataset, out, *extra):
    return ["train", str(dataset / "train.txt"), "--model", "yolov3-tiny", "--width",
            "0.0625", "--anchors", str(dataset / "anchors.txt"), "--input-size", "64",
            "--batch-size", "4", "--steps-per-epoch", "2", "--freeze", "none",
            "--no-plots", "--out", str(out), *extra]


@pytest.mark.parametrize("extra,message", [
    (["--monitor", "map50"], "--monitor map50 needs --eval-every N (N >= 1) and --val"),
    (["--monitor", "fitness", "--eval-every", "1"], "--eval-every 1 needs --val"),
    (["--monitor", "map", "--val", "VAL"], "--monitor map needs --eval-every N"),
    (["--eval-every", "-1", "--val", "VAL"], "--eval-every"),
    (["--monitor", "ap", "--val", "VAL"], "--monitor"),
])
def test_monitor_usage_errors_name_the_flags(dataset, tmp_path, extra, message):
    extra = [str(dataset / "val.txt") if e == "VAL" else e for e in extra]
    result = runner.invoke(app, args(dataset, tmp_path / "run", "--epochs", "1", *extra))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_checkpoint_keeps_the_highest_map_and_skips_unevaluated_epochs():
    from detkit.training.monitor import improves, monitor_mode, worst_value

    assert monitor_mode("val_map50") == "max" and monitor_mode("val_loss") == "min"
    best = worst_value("val_map50")
    picked = None
    for epoch, value in enumerate([0.1, None, 0.3, 0.2], start=1):
        if value is not None and improves(value, best, "val_map50"):
            best, picked = value, epoch
    assert (best, picked) == (0.3, 3)
    assert improves(1.0, 2.0, "val_loss") and not improves(2.0, 2.0, "val_loss")


@pytest.mark.slow
def test_monitor_map50_picks_the_best_val_map50_epoch_and_resumes(dataset, tmp_path):
    out = tmp_path / "run"
    val = ["--val", str(dataset / "val.txt"), "--eval-every", "1", "--monitor", "map50"]
    result = runner.invoke(app, args(dataset, out, "--epochs", "3", "--lr", "0.01", *val))
    assert result.exit_code == 0, result.output
    with open(out / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    values = [float(row["val_map50"]) for row in rows]
    expected = int(np.argmax(values)) + 1  # the first of equal values, as the checkpoint
    state = json.loads((out / "state.json").read_text())
    assert state["monitor"] == "val_map50" and state["best_epoch"] == expected
    np.testing.assert_allclose(state["best"], values[expected - 1], rtol=1e-5)
    manifest = json.loads((out / "best.weights.h5.manifest.json").read_text())
    assert manifest["epoch"] == expected
    assert f"best val_map50: {values[expected - 1]:.4g} at epoch {expected}" in result.output

    # --resume continues with the same monitor and best; another monitor is refused.
    other = runner.invoke(app, args(dataset, out, "--epochs", "4", "--resume", "--monitor",
                                    "fitness"))
    assert other.exit_code == 1 and "monitor" in other.output, other.output
    resumed = runner.invoke(app, args(dataset, out, "--epochs", "4", "--lr", "0.01",
                                      "--resume", *val))
    assert resumed.exit_code == 0, resumed.output
    with open(out / "history.csv", newline="") as handle:
        values = [float(row["val_map50"]) for row in csv.DictReader(handle)]
    state = json.loads((out / "state.json").read_text())
    assert len(values) == 4 and state["best_epoch"] == int(np.argmax(values)) + 1
