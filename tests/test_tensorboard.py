"""TensorBoard logs, results.png and the PR/F1 curves of a training run.

The event files are read back with tensorboard's own ``EventAccumulator``.
"""

import csv
import math
import types

import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.cli import app

ANCHORS = np.float32([[8, 8], [12, 16], [16, 12], [20, 24], [28, 28], [40, 40]])
runner = CliRunner()


def accumulator(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_event_file_round_trips_scalars_and_images(tmp_path):
    from detkit.training.event_file import EventFile

    writer = EventFile(tmp_path / "tb")
    writer.scalars(1, {"train/loss": 2.5, "lr": 1e-3, "skipped": float("nan")})
    image = np.zeros((6, 8, 3), np.uint8)
    image[1:3, 2:5] = (255, 0, 0)
    writer.images(1, {"val_images/0": image})
    writer.scalars(2, {"train/loss": 1.5})
    writer.close()
    events = accumulator(tmp_path / "tb")
    assert sorted(events.Tags()["scalars"]) == ["lr", "train/loss"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2]
    np.testing.assert_allclose([e.value for e in loss], [2.5, 1.5])
    (shown,) = events.Images("val_images/0")
    assert (shown.step, shown.width, shown.height) == (1, 8, 6)
    import cv2

    decoded = cv2.imdecode(np.frombuffer(shown.encoded_image_string, np.uint8),
                           cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), image)


def test_scalar_tags_name_train_val_metrics_and_lr():
    from detkit.training.board import scalar_tags

    tags = scalar_tags({"loss": 3.0, "xy": 1.0, "val_loss": 4.0, "val_map50": 0.5,
                        "learning_rate": 9.0}, lr=0.01)
    assert tags == {"lr": 0.01, "train/loss": 3.0, "train/xy": 1.0, "val/loss": 4.0,
                    "metrics/map50": 0.5}


def test_missing_matplotlib_is_one_note_and_no_pictures(tmp_path, monkeypatch):
    from detkit.errors import UsageError
    from detkit.training import results

    def no_pyplot():
        raise UsageError("no matplotlib")

    monkeypatch.setattr(results, "require_pyplot", no_pyplot)
    ctx = types.SimpleNamespace(notes=[], run_dir=tmp_path)
    assert results.write_run_plots(ctx, [{"epoch": 1.0, "lr": 0.1, "loss": 2.0}]) == ([],
                                                                                        None)
    assert ctx.notes == [results.NO_MATPLOTLIB] and "matplotlib" in ctx.notes[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_train_writes_tensorboard_logs_results_and_curves(synth_with_anchors, tmp_path):
    dataset = synth_with_anchors(ANCHORS)
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "train", str(dataset / "train.txt"), "--model", "yolov3-tiny", "--width", "0.0625",
        "--anchors", str(dataset / "anchors.txt"), "--input-size", "64", "--batch-size",
        "4", "--steps-per-epoch", "2", "--epochs", "2", "--freeze", "none", "--val",
        str(dataset / "val.txt"), "--eval-every", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "best val_fitness" in result.output  # the default monitor with --eval-every
    assert "best weights on --val: AP" in result.output

    events = accumulator(out / "tensorboard")
    scalars = events.Tags()["scalars"]
    for tag in ("lr", "train/loss", "train/xy", "train/obj", "val/loss", "val/cls",
                "metrics/map", "metrics/map50", "metrics/fitness"):
        assert tag in scalars, tag
    with open(out / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    np.testing.assert_allclose([e.value for e in events.Scalars("train/loss")],
                               [float(r["loss"]) for r in rows], rtol=1e-5)
    # mAP and images only at the evaluated epoch (2); history.csv leaves epoch 1 blank.
    (map50,) = events.Scalars("metrics/map50")
    assert map50.step == 2
    np.testing.assert_allclose(map50.value, float(rows[1]["val_map50"]), rtol=1e-5)
    assert rows[0]["val_map50"] == "" and math.isfinite(float(rows[1]["val_fitness"]))
    np.testing.assert_allclose(float(rows[1]["val_fitness"]),
                               0.1 * float(rows[1]["val_map50"])
                               + 0.9 * float(rows[1]["val_map"]), rtol=1e-4, atol=1e-8)
    images = events.Tags()["images"]
    assert images and all(tag.startswith("val_images/") for tag in images)
    assert [e.step for e in events.Images(images[0])] == [2]
    assert events.Images(images[0])[0].width == 64

    for name in ("results.png", "pr_curve.png", "f1_curve.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name
