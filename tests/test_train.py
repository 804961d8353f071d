"""Training: schedule, targets, loss wrapper, callbacks, and the ``train`` command end to end.

Real training runs (tiny yolov3-tiny at 64 px, a few steps) are marked slow.
"""

import csv
import dataclasses
import json
import math
import re

import h5py
import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.anchors import save_anchors
from detkit.cli import app
from detkit.losses import YoloV3Loss
from detkit.keras_compat import ema_variable_pairs
from detkit.training.callbacks import NanGuard, ema_weights, read_history, read_state
from detkit.training.model import YoloTrainingModel
from detkit.training.schedule import WarmupCosine
from detkit.training.targets import YoloTrainingTargets

ANCHORS = np.float32([[8, 8], [12, 16], [16, 12], [20, 24], [28, 28], [40, 40]])
SIZE = 64
WIDTH = "0.0625"
runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(synth_with_anchors):
    return synth_with_anchors(ANCHORS)


def base_args(dataset, out, *extra):
    return ["train", str(dataset / "train.txt"), "--model", "yolov3-tiny", "--width", WIDTH,
            "--anchors", str(dataset / "anchors.txt"), "--input-size", str(SIZE),
            "--batch-size", "4", "--steps-per-epoch", "2", "--out", str(out), *extra]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def layer_arrays(path):
    """``{layer name path: [arrays]}`` of a weights file (by layer *name*)."""
    from detkit.models.weights import file_layer_arrays

    return file_layer_arrays(path)


# ---------------------------------------------------------------------------------------
# Units (fast)
# ---------------------------------------------------------------------------------------

def test_warmup_cosine_hand_values():
    schedule = WarmupCosine(1e-3, total_steps=14, warmup_steps=4, floor=0.1)
    values = [float(schedule(step)) for step in range(16)]
    np.testing.assert_allclose(values[:4], [2.5e-4, 5e-4, 7.5e-4, 1e-3], rtol=1e-6)
    # Decay over 10 steps: the midpoint (step 9) is halfway between peak and floor.
    np.testing.assert_allclose(values[9], 1e-3 * (0.1 + 0.9 * 0.5), rtol=1e-5)
    np.testing.assert_allclose(values[14:], [1e-4, 1e-4], rtol=1e-5)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    clone = WarmupCosine(**schedule.get_config())
    np.testing.assert_allclose(float(clone(7)), values[7], rtol=1e-7)


def test_training_targets_carry_normalized_padded_boxes():
    encoder = YoloTrainingTargets(ANCHORS, SIZE, num_classes=2)
    boxes = np.zeros((2, 3, 4), np.float32)
    classes = np.full((2, 3), -1, np.int32)
    boxes[0, 0], classes[0, 0] = [8, 16, 40, 48], 1
    boxes[0, 1], classes[0, 1] = [0, 0, 10, 10], 5          # class out of range: dropped
    y = encoder(boxes, classes)
    assert [t.shape for t in y["targets"]] == [(2, 2, 2, 3, 6), (2, 4, 4, 3, 6)]
    np.testing.assert_allclose(y["boxes"][0, 0], [0.125, 0.25, 0.625, 0.75])
    np.testing.assert_array_equal(y["boxes"][0, 1:], 0)
    np.testing.assert_array_equal(y["boxes"][1], 0)
    assert sum(float(t[..., 4].sum()) for t in y["targets"]) == 1.0


def _tiny_training_model(box_loss="mse"):
    from detkit.models import build_model

    keras.utils.set_random_seed(1)
    detector = build_model("yolov3-tiny", 2, 0.0625, SIZE)
    loss = YoloV3Loss(ANCHORS, 2, SIZE, box_loss=box_loss)
    return YoloTrainingModel(detector, loss), loss


def test_training_model_loss_is_batch_mean_plus_weight_decay_and_logs_terms():
    """Training: the batch mean plus the weight decay; evaluation: the mean alone."""
    model, loss = _tiny_training_model()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.zeros((2, 4, 4), np.float32)
    classes = np.full((2, 4), -1, np.int32)
    boxes[0, :2] = [[4, 4, 30, 40], [30, 20, 60, 60]]
    classes[0, :2] = [0, 1]
    y = YoloTrainingTargets(ANCHORS, SIZE, 2)(boxes, classes)
    y_pred = model(images)
    total = float(model.compute_loss(images, y, y_pred))
    expected_data = float(loss(y, y_pred))
    reg = float(sum(float(keras.ops.sum(l)) for l in model.losses))
    assert reg > 0  # the detector has L2 weight decay
    np.testing.assert_allclose(total, expected_data + reg, rtol=1e-5)
    # val_loss: the data loss alone (the decay is no property of the validation images)
    np.testing.assert_allclose(float(model.compute_loss(images, y, y_pred, training=False)),
                               expected_data, rtol=1e-5)
    results = {m.name: float(m.result()) for m in model.term_trackers}
    assert list(results) == ["xy", "wh", "obj", "cls", "reg"]
    np.testing.assert_allclose(sum(results[n] for n in ("xy", "wh", "obj", "cls")),
                               expected_data, rtol=1e-5)
    np.testing.assert_allclose(results["reg"], reg, rtol=1e-5)
    # Those trackers are what fit() logs.
    assert {"xy", "wh", "obj", "cls", "reg"} <= {m.name for m in model.metrics}


def test_nan_guard_stops_and_names_the_batch():
    model, _ = _tiny_training_model()
    guard = NanGuard(lambda batch: [f"img{batch}_{i}.jpg" for i in range(2)])
    guard.set_model(model)
    model.stop_training = False  # what fit() sets
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 3.5})
    assert guard.failure is None and not model.stop_training
    guard.on_train_batch_end(4, {"loss": float("nan")})
    guard.on_train_batch_end(5, {"loss": float("inf")})   # the first one is kept
    assert model.stop_training
    message = guard.failure.describe()
    assert "epoch 3, batch 5" in message and "img4_0.jpg" in message and "nan" in message


def test_ema_weights_swaps_in_the_averages_and_back():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    for _ in range(3):  # not fit(): it ends by copying the averages into the weights
        model.train_on_batch(np.ones((4, 3)), np.ones((4, 2)))
    raw = [v.numpy().copy() for v in model.trainable_variables]
    averages = [v.numpy().copy() for _, v in ema_variable_pairs(model.optimizer)]
    assert not np.allclose(raw[0], averages[0])
    with ema_weights(model) as swapped:
        assert swapped
        for variable, average in zip(model.trainable_variables, averages):
            np.testing.assert_allclose(variable.numpy(), average)
    for variable, value in zip(model.trainable_variables, raw):
        np.testing.assert_allclose(variable.numpy(), value)


def test_ema_weights_are_the_raw_ones_before_any_step_is_applied():
    """A mixed-precision loss scale skips the first steps (their gradients overflow):
    until one step is applied the averages are zeros, and the weights saved must be the
    raw ones, not zeros."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.Adam(0.1, use_ema=True, ema_momentum=0.5))
    model.compile(optimizer, loss="mse")
    optimizer.build(model.trainable_variables)
    raw = [v.numpy().copy() for v in model.trainable_variables]
    assert all(not np.any(v.numpy()) for _, v in ema_variable_pairs(optimizer.inner_optimizer))
    with ema_weights(model) as swapped:
        assert not swapped
        for variable, value in zip(model.trainable_variables, raw):
            np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.parametrize("extra,code,message", [
    (["--schedule", "linear"], 2, "--schedule must be one of cosine, plateau"),
    (["--stage", "3"], 2, "--stage must be one of 1, 2"),
    (["--box-loss", "giou"], 2, "--box-loss must be one of mse, huber, ciou"),
    (["--freeze", "head"], 2, "--freeze must be one of"),
    (["--lr", "-1"], 2, "--lr must be a positive number"),
    (["--input-size", "50"], 2, "multiple of 32"),
    (["--strategy", "tpu"], 2, "--strategy must be one of"),
    (["--aug-scale", "1.5", "0.5"], 2, "scale must be (low, high) with 0 < low <= high"),
    (["--aug-jitter", "1.2"], 2, "--aug-jitter 1.2"),
])
def test_cli_rejects_bad_options(dataset, tmp_path, extra, code, message):
    result = runner.invoke(app, base_args(dataset, tmp_path / "run", *extra))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (tmp_path / "run").exists()


def test_cli_reports_bad_inputs(dataset, tmp_path):
    result = runner.invoke(app, base_args(dataset, tmp_path / "run", "--model", "yolov3"))
    assert result.exit_code == 1
    assert "yolov3 needs 9 anchors, the anchors file has 6" in result.output
    args = base_args(dataset, tmp_path / "run")
    args[1] = str(dataset / "missing.txt")
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "missing.txt: dataset not found" in result.output


# ---------------------------------------------------------------------------------------
# Real training (slow)
# ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_stages_end_to_end_with_freezing(dataset, tmp_path):
    from detkit.models import build_model

    keras.utils.set_random_seed(5)
    init = tmp_path / "init.weights.h5"
    build_model("yolov3-tiny", 2, 0.0625, SIZE).save_weights(init)
    stage1 = tmp_path / "stage1"
    result = runner.invoke(app, base_args(dataset, stage1, "--stage", "1", "--epochs", "2",
                                          "--weights", str(init), "--val",
                                          str(dataset / "val.txt"),
                                          "--aug-scale", "0.6", "1.4"))
    assert result.exit_code == 0, result.output
    assert "best val_loss" in result.output
    told = re.search(r"note: --freeze body: ([\d,]+) of ([\d,]+) parameters train",
                     " ".join(result.output.split()))
    assert told and 0 < int(told[1].replace(",", "")) < int(told[2].replace(",", "")), \
        result.output
    for name in ("best.weights.h5", "last.weights.h5", "history.csv", "manifest.json",
                 "state.json", "best.weights.h5.manifest.json"):
        assert (stage1 / name).is_file(), name
    rows = read_csv(stage1 / "history.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0])[:8] == ["epoch", "lr", "loss", "xy", "wh", "obj", "cls", "reg"]
    assert "val_loss" in rows[0] and "val_obj" in rows[0]
    for row in rows:
        assert all(math.isfinite(float(v)) for v in row.values())
    manifest = json.loads((stage1 / "manifest.json").read_text())
    assert manifest["model"] == "yolov3-tiny" and manifest["stage"] == 1
    assert manifest["class_names"] == (dataset / "classes.txt").read_text().split()
    np.testing.assert_allclose(manifest["anchors"], ANCHORS)
    assert manifest["config"]["freeze"] == "body" and "versions" in manifest
    assert manifest["config"]["aug_scale"] == [0.6, 1.4]
    assert manifest["config"]["aug_jitter"] == 0.2

    # Stage 1 froze the body: its weights (BN statistics included) are the initial ones;
    # the heads moved.
    before, after = layer_arrays(init), layer_arrays(stage1 / "last.weights.h5")
    body = [k for k in before if k.startswith("body/")]
    heads = [k for k in before if k.startswith("heads/")]
    assert body and heads
    for key in body:
        for a, b in zip(before[key], after[key]):
            np.testing.assert_array_equal(a, b, err_msg=key)
    assert any(not np.allclose(a, b) for key in heads
               for a, b in zip(before[key], after[key]))

    # stage 2 continues stage 1: model, width, anchors and input size come from the
    # manifest of its --weights
    stage2 = tmp_path / "stage2"
    result = runner.invoke(app, ["train", str(dataset / "train.txt"), "--stage", "2",
                                 "--epochs", "1", "--batch-size", "4", "--steps-per-epoch",
                                 "2", "--weights", str(stage1 / "best.weights.h5"),
                                 "--out", str(stage2)])
    assert result.exit_code == 0, result.output
    continued = json.loads((stage2 / "manifest.json").read_text())
    assert (continued["model"], continued["width"], continued["input_size"]) == (
        "yolov3-tiny", float(WIDTH), SIZE)
    np.testing.assert_allclose(continued["anchors"], ANCHORS)
    tuned = layer_arrays(stage2 / "last.weights.h5")
    assert any(not np.allclose(a, b) for key in body for a, b in zip(after[key], tuned[key]))
    assert json.loads((stage2 / "manifest.json").read_text())["config"]["freeze"] == "none"
    assert "best loss" in result.output  # no --val: best tracks the training loss
    # the load of --weights is told once, as a note, before the first epoch
    loaded = [i for i, line in enumerate(result.output.splitlines())
              if line.startswith("note: loaded ") and "best.weights.h5" in line]
    first_epoch = next(i for i, line in enumerate(result.output.splitlines())
                       if line.startswith("epoch 1/"))
    assert len(loaded) == 1 and loaded[0] < first_epoch, result.output

    # Stage 2 refuses weights trained with other anchors.
    other = tmp_path / "other_anchors.txt"
    save_anchors(other, ANCHORS * 2)
    args = base_args(dataset, tmp_path / "stage2b", "--stage", "2", "--weights",
                     str(stage1 / "best.weights.h5"))
    args[args.index("--anchors") + 1] = str(other)
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "anchors" in result.output and "disagree" in result.output


def _run(dataset, out, **options):
    from detkit.commands.train import Options, run

    base = dict(model="yolov3-tiny", width=0.0625, anchors=dataset / "anchors.txt",
                input_size=SIZE, batch_size=4, steps_per_epoch=2, freeze="none", out=out)
    base.update(options)
    return run(Options(data=dataset / "train.txt", **base))


@pytest.mark.slow
def test_resume_continues_exactly(dataset, tmp_path):
    straight = _run(dataset, tmp_path / "straight", epochs=2)
    first = _run(dataset, tmp_path / "resumed", epochs=1)
    assert first.total_epochs == 1 and read_state(tmp_path / "resumed")["epoch"] == 1
    resumed = _run(dataset, tmp_path / "resumed", epochs=2, resume=True)
    assert (resumed.start_epoch, resumed.epochs_run, resumed.total_epochs) == (1, 1, 2)
    assert [row["epoch"] for row in resumed.history] == [1.0, 2.0]
    np.testing.assert_allclose([r["loss"] for r in resumed.history],
                               [r["loss"] for r in straight.history], rtol=1e-4)
    a = layer_arrays(tmp_path / "straight" / "last.weights.h5")
    b = layer_arrays(tmp_path / "resumed" / "last.weights.h5")
    for key in a:
        for x, y in zip(a[key], b[key]):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=key)
    with h5py.File(tmp_path / "resumed" / "state.weights.h5") as handle:
        assert int(handle.attrs["detkit_epoch"]) == 2
    # A complete run has nothing left to do; other settings are refused.
    again = _run(dataset, tmp_path / "resumed", epochs=2, resume=True)
    assert again.epochs_run == 0 and "nothing to do" in again.notes[-1]
    from detkit.errors import ArtifactMismatchError

    with pytest.raises(ArtifactMismatchError, match="width"):
        _run(dataset, tmp_path / "resumed", epochs=3, resume=True, width=0.125)


@pytest.mark.slow
def test_nan_guard_keeps_last_good_epoch(dataset, tmp_path, monkeypatch):
    """A NaN batch in epoch 2 stops the run naming it; epoch 1's files stay."""
    from detkit.data.loader import DetectionBatches

    original = DetectionBatches.__getitem__

    def poisoned(self, batch):
        images, targets = original(self, batch)
        if self.augment and self.epoch == 1 and batch == 1:
            images = np.full_like(images, np.nan)
        return images, targets

    monkeypatch.setattr(DetectionBatches, "__getitem__", poisoned)
    out = tmp_path / "run"
    # Also exercises the other options: EMA, plateau schedule, CIoU and focal losses.
    result = runner.invoke(app, base_args(dataset, out, "--epochs", "3", "--freeze", "none",
                                          "--ema", "--schedule", "plateau", "--box-loss",
                                          "ciou", "--obj-loss", "focal"))
    assert result.exit_code == 1, result.output
    assert "loss became nan at epoch 2, batch 2 (images:" in result.output
    assert "weights of epoch 1 are kept" in result.output
    assert read_state(out)["epoch"] == 1
    rows = read_csv(out / "history.csv")
    assert rows[0]["epoch"] == "1" and math.isfinite(float(rows[0]["loss"]))
    assert list(rows[0])[:6] == ["epoch", "lr", "loss", "box", "obj", "cls"]
    for arrays in layer_arrays(out / "last.weights.h5").values():
        for array in arrays:
            assert np.all(np.isfinite(array))
    manifest = json.loads((out / "last.weights.h5.manifest.json").read_text())
    assert manifest["epoch"] == 1


@pytest.mark.slow
def test_mixed_precision_run_is_finite_and_restores_the_policy(dataset, tmp_path):
    result = _run(dataset, tmp_path / "mp", epochs=1, steps_per_epoch=1,
                  mixed_precision=True)
    assert math.isfinite(result.history[0]["loss"])
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_bfloat16_precision_trains_without_loss_scaling(dataset, tmp_path):
    result = _run(dataset, tmp_path / "bf16", epochs=1, steps_per_epoch=1,
                  precision="mixed_bfloat16")
    assert math.isfinite(result.history[0]["loss"])
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["config"]["precision"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"


def test_precision_and_its_alias_must_agree(dataset, tmp_path):
    from detkit.errors import UsageError

    with pytest.raises(UsageError, match="contradicts --precision mixed_bfloat16"):
        _run(dataset, tmp_path / "x", epochs=1, mixed_precision=True,
             precision="mixed_bfloat16")


def test_run_table_shows_the_evaluation_that_picks_the_best_weights():
    """--eval-every 2: val_map, val_map50 and val_fitness are columns (``-`` in the epochs
    not evaluated); the per-term validation values are not."""
    import io

    from rich.console import Console

    from detkit.cli._run_table import epochs_table

    rows = [{"epoch": float(epoch), "loss": 2.0 / epoch, "val_loss": 3.0 / epoch,
             "val_obj": 1.5, **({"val_map": 0.1 * epoch, "val_map50": 0.2 * epoch,
                                 "val_fitness": 0.11 * epoch} if epoch % 2 == 0 else
                                {"val_map": float("nan")})}
            for epoch in range(1, 5)]
    console = Console(file=io.StringIO(), width=200)
    console.print(epochs_table(console, "train: run", rows))
    lines = console.file.getvalue().splitlines()
    assert lines[2].replace("┃", " ").split() == ["epoch", "loss", "val_loss", "val_map",
                                                  "val_map50", "val_fitness"]
    assert lines[4].replace("│", " ").split() == ["1", "2", "3", "-", "-", "-"]
    assert lines[5].replace("│", " ").split() == ["2", "1", "1.5", "0.2", "0.4", "0.22"]


@pytest.mark.parametrize("width, transposed", [(200, False), (80, True)])
def test_run_table_keeps_every_value_readable_at_any_terminal_width(width, transposed):
    """One row per epoch when it fits; else one row per value, the last epochs that fit
    (distill's 12 columns on 80: no value is cut to an ellipsis)."""
    import io

    from rich.console import Console

    from detkit.cli._run_table import epochs_table

    names = ["lr", "loss", "xy", "wh", "obj", "noobj", "cls", "d_obj", "d_xy", "d_wh",
             "d_cls", "reg", "val_xy"]
    rows = [{"epoch": float(epoch), **{name: 1.234567 * (i + 1) * epoch
                                       for i, name in enumerate(names)}}
            for epoch in range(1, 11)]
    console = Console(file=io.StringIO(), width=width)
    console.print(epochs_table(console, "distill: run", rows))
    text = console.file.getvalue()
    lines = text.splitlines()
    assert "…" not in text and max(len(line) for line in lines) <= width
    assert "val_xy" not in text                           # kept in history.csv only
    assert f"{1.234567 * 12 * 10:.4g}" in text            # reg of the last epoch
    header = lines[2].replace("┃", " ").split()
    if transposed:
        assert header[0] == "epoch" and header[-1] == "10" and 3 <= len(header) <= 10
        assert [line.replace("│", " ").split()[0] for line in lines[4:-1]] == names[:-1]
    else:
        assert header == ["epoch", *names[:-1]] and len(lines) == 3 + 1 + 10 + 1


def test_stage2_at_another_input_size_than_stage1_says_so(tmp_path):
    """Stage 2 may train at another size than stage 1 (the networks are fully
    convolutional); the run's notes say so, naming both sizes."""
    from detkit.artifacts import write_manifest
    from detkit.commands.train import Options

    weights = tmp_path / "best.weights.h5"
    weights.write_bytes(b"weights")
    write_manifest(weights, command="train", config={}, inputs=[],
                   extra={"model": "yolov3-tiny", "width": 0.0625, "input_size": 64})
    opts = Options(data=tmp_path / "train.txt", stage=2, weights=weights, input_size=96,
                   out=tmp_path / "run")
    assert opts.start_notes() == [
        "running at input 96; the weights were trained at 64 "
        "(best.weights.h5.manifest.json)"]
    assert opts.resolved().input_size == 96 and opts.resolved().width == 0.0625
    same = dataclasses.replace(opts, input_size=416)     # the default: not given (API)
    assert same.start_notes() == [] and same.resolved().input_size == 64
    typed = dataclasses.replace(same, given=frozenset({"input_size"}))   # typed on the CLI
    assert typed.start_notes()[0].startswith("running at input 416;")
    assert dataclasses.replace(opts, stage=1).start_notes() == []


def test_ultralytics_dataset_file_trains_on_train_and_validates_on_val(dataset, tmp_path):
    """``detkit train data.yaml``: its train split, its names, and without --val its val
    split (as Ultralytics' ``data=``)."""
    classes = (dataset / "classes.txt").read_text().split()
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text(f"path: {dataset}\ntrain: train.txt\nval: val.txt\n"
                         f"names: {classes}\n")
    out = tmp_path / "run"
    args = base_args(dataset, out, "--epochs", "1", "--eval-every", "1")  # mAP on it too
    args[1] = str(yaml_file)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"validating on the val split of {yaml_file}" in result.output
    row = read_csv(out / "history.csv")[0]
    assert math.isfinite(float(row["val_loss"])) and math.isfinite(float(row["val_map"]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == classes
    assert manifest["validation"] == str(dataset / "val.txt")
    assert set(manifest["inputs"]) >= {str(yaml_file), str(dataset / "val.txt")}


def test_dataset_files_val_split_of_images_only_is_not_validated_on(dataset, tmp_path):
    """A val split without labels (a folder of images) leaves the run without validation,
    saying so, rather than failing it."""
    from types import SimpleNamespace

    from detkit.training.run import _own_val_split

    images = tmp_path / "unlabelled"
    images.mkdir()
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text(f"train: {dataset / 'train.txt'}\nval: {images}\n")
    notes = []
    opts = SimpleNamespace(data=yaml_file, format=None)
    assert _own_val_split(opts, ["circle", "rectangle"], notes) is None
    assert notes[0].startswith(f"not validating: the val split of {yaml_file} is not a "
                               "dataset (cannot tell the dataset format of")



def test_an_error_raised_while_ctrl_c_unwound_is_an_interruption(capsys):
    """A library's error raised while Ctrl-C unwound (TensorFlow's device scope) is told
    as an interruption, exit code 130, not a traceback; other errors stay errors."""
    import typer

    from detkit.cli.app import handle_errors
    from detkit.errors import interrupted

    caused = RuntimeError("raised from Ctrl-C")
    caused.__cause__ = KeyboardInterrupt()
    assert interrupted(KeyboardInterrupt()) and interrupted(caused)
    assert not interrupted(RuntimeError("a real error"))
    with pytest.raises(typer.Exit) as exit_info, handle_errors():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("Exiting device scope without proper scope nesting") \
                from None
    assert exit_info.value.exit_code == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    with pytest.raises(RuntimeError, match="a real error"), handle_errors():
        raise RuntimeError("a real error")


def test_ctrl_c_says_what_the_run_keeps_and_how_to_continue(dataset, tmp_path, capsys):
    """Ctrl-C during the epochs: the run directory keeps its finished epochs, and the
    message says so and names --resume (the CLI prints it, exit code 130)."""
    import keras
    import typer

    from detkit.cli.app import handle_errors
    from detkit.commands.train import Options
    from detkit.errors import Interrupted
    from detkit.training.run import run_training

    class CtrlC(keras.callbacks.Callback):
        """Ctrl-C inside a TensorFlow device scope, which unwinds as another error."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                try:
                    raise KeyboardInterrupt
                except KeyboardInterrupt:
                    raise RuntimeError("Exiting device scope without proper scope "
                                       "nesting") from None

    out = tmp_path / "run"
    opts = Options(data=dataset / "train.txt", model="yolov3-tiny", width=0.0625,
                   anchors=dataset / "anchors.txt", input_size=SIZE, batch_size=4,
                   steps_per_epoch=2, freeze="none", epochs=3, out=out)
    with pytest.raises(Interrupted) as caught:
        run_training(opts, callbacks=[CtrlC()])
    assert str(caught.value) == (f"{out} keeps 1 of 3 epochs; the same command with "
                                 "--resume continues it")
    assert read_state(out)["epoch"] == 1
    with pytest.raises(typer.Exit) as exit_info, handle_errors():
        raise caught.value
    assert exit_info.value.exit_code == 130
    assert "interrupted: " + str(caught.value) in " ".join(capsys.readouterr().err.split())

    class CtrlCFirst(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            raise KeyboardInterrupt

    fresh = tmp_path / "fresh"                    # a new run stopped before any epoch
    with pytest.raises(Interrupted, match="no epoch finished: nothing of this run is kept"):
        run_training(dataclasses.replace(opts, out=fresh), callbacks=[CtrlCFirst()])
    assert not fresh.exists()                     # not even its manifest.json is left

    class CacheThenCtrlC(keras.callbacks.Callback):
        """A file not of the run lands in the new folder first (distill's --teacher-cache
        inside --out is written before the epochs)."""

        def on_epoch_begin(self, epoch, logs=None):
            (fresh / "teacher.h5").write_bytes(b"the user's cache")
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run_training(dataclasses.replace(opts, out=fresh), callbacks=[CacheThenCtrlC()])
    assert sorted(p.name for p in fresh.iterdir()) == ["teacher.h5"]  # only the run's go


def test_ctrl_c_while_an_epoch_is_saved_keeps_its_files_together(dataset, tmp_path,
                                                                 monkeypatch):
    """Ctrl-C (a real SIGINT) arriving while the epoch's weights are written waits for
    the resume state: weights, state and history then all hold the same epochs."""
    import os
    import signal

    from detkit.commands.train import Options
    from detkit.errors import Interrupted
    from detkit.training import callbacks
    from detkit.training.run import run_training

    real = callbacks.RunCheckpoint._save_network

    def save_then_ctrl_c(self, path, epoch, logs):
        real(self, path, epoch, logs)
        if epoch == 1 and path.name == "last.weights.h5":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(callbacks.RunCheckpoint, "_save_network", save_then_ctrl_c)
    out = tmp_path / "run"
    opts = Options(data=dataset / "train.txt", model="yolov3-tiny", width=0.0625,
                   anchors=dataset / "anchors.txt", input_size=SIZE, batch_size=4,
                   steps_per_epoch=2, freeze="none", epochs=3, out=out, plots=False)
    with pytest.raises(Interrupted, match="keeps 2 of 3 epochs"):
        run_training(opts)
    assert read_state(out)["epoch"] == 2
    assert json.loads((out / "last.weights.h5.manifest.json").read_text())["epoch"] == 2
    assert [row["epoch"] for row in read_history(out / "history.csv")[1]] == ["1", "2"]


def test_history_is_trimmed_to_the_epochs_a_run_keeps(tmp_path):
    from detkit.training.callbacks import trim_history

    path = tmp_path / "history.csv"
    path.write_text("epoch,lr,loss\n1,0.1,3\n2,0.1,2\n3,0.1,1\n")
    trim_history(path, 2)
    assert path.read_text() == "epoch,lr,loss\n1,0.1,3\n2,0.1,2\n"
    trim_history(path, 5)
    assert path.read_text() == "epoch,lr,loss\n1,0.1,3\n2,0.1,2\n"


def test_resume_alone_continues_the_run_as_it_was_started(dataset, tmp_path):
    """`train DATA --out run --resume` needs none of the run's flags: the run's state
    records its architecture and anchors, its manifest every other option (learning
    rate, schedule, freezing, batch size...)."""
    out = tmp_path / "run"
    first = runner.invoke(app, base_args(dataset, out, "--epochs", "1", "--no-plots",
                                         "--freeze", "none", "--lr", "0.02",
                                         "--warmup-epochs", "0", "--schedule", "plateau"))
    assert first.exit_code == 0, first.output
    result = runner.invoke(app, ["train", str(dataset / "train.txt"), "--out", str(out),
                                 "--resume", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "history.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert float(rows[1]["lr"]) == pytest.approx(0.02)      # not the default 1e-3 decayed
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert (config["lr"], config["freeze"], config["schedule"], config["batch_size"],
            config["steps_per_epoch"], config["epochs"]) == (0.02, "none", "plateau", 4, 2, 2)
    assert [row["epoch"] for row in read_csv(out / "history.csv")] == ["1", "2"]
    manifest = json.loads((out / "manifest.json").read_text())
    started = json.loads((out / "best.weights.h5.manifest.json").read_text())
    assert (manifest["model"], manifest["width"], manifest["input_size"]) == (
        "yolov3-tiny", float(WIDTH), SIZE)
    assert manifest["anchors"] == started["anchors"]
    # a flag given against the run's state is still refused, naming both
    other = runner.invoke(app, ["train", str(dataset / "train.txt"), "--out", str(out),
                                "--resume", "--epochs", "3", "--width", "0.25"])
    assert other.exit_code == 1, other.output
    assert (f"{out}/state.json: --width 0.25 disagrees with the run's state, which records "
            f"{float(WIDTH)}") in " ".join(other.output.split())


def test_stage2_without_weights_says_it_trains_from_random_weights(dataset, tmp_path):
    """Stage 2 continues stage 1: run without --weights (a config file's stage: 2 alone)
    it trains from random weights, and says so before the epochs."""
    result = runner.invoke(app, base_args(dataset, tmp_path / "run", "--stage", "2",
                                          "--epochs", "1", "--no-plots"))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    note = ("warning: stage 2 without --weights trains from random weights; it continues "
            "stage 1: give stage 1's best.weights.h5")
    assert note in text and text.index(note) < text.index("epoch 1/1")


def test_default_coco_anchors_at_another_input_size_are_pointed_out(dataset, tmp_path):
    """Without --anchors a YOLO trains on the packaged COCO anchors, fitted at 416: at
    another input size the run says so, before the epochs, and how to fit its own."""
    args = base_args(dataset, tmp_path / "run", "--epochs", "1", "--no-plots")
    del args[args.index("--anchors"):args.index("--anchors") + 2]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (f"warning: the default anchors (yolov3-tiny_coco.txt) are COCO's at input 416, "
            f"this runs at {SIZE}: fit anchors to the boxes with kmeans-anchors "
            f"--input-size {SIZE} --k 6") in " ".join(result.output.split())


def test_resumed_options_come_from_the_run_unless_given(tmp_path):
    """with_run_options: options not given take the run's recorded values; a given option
    (or one that sets it, --mixed-precision for --precision) wins; anchors and weights
    stay the state's; a recorded input path not found from here is an error naming it."""
    from detkit.artifacts import DetkitWarning
    from detkit.commands.train import Options
    from detkit.errors import UsageError

    out = tmp_path / "run"
    out.mkdir()
    data = tmp_path / "train.txt"
    data.write_text("")
    val = tmp_path / "val.txt"
    val.write_text("")
    config = {"lr": 0.02, "precision": "float32", "freeze": "none", "aug_scale": [0.7, 1.3],
              "anchors": "gone.txt", "weights": "gone.weights.h5", "val": str(val)}
    (out / "manifest.json").write_text(json.dumps({"config": config}))

    def resumed(**given):
        opts = Options(data=data, out=out, resume=True, **given,
                       given=frozenset({"data", "out", "resume", *given}))
        return opts.with_run_options()

    plain = resumed()
    assert (plain.lr, plain.precision, plain.freeze, plain.aug_scale) == (
        0.02, "float32", "none", (0.7, 1.3))
    assert plain.anchors is None and plain.weights is None and plain.val == val
    with pytest.warns(DetkitWarning) as told:
        mixed = resumed(mixed_precision=True, lr=0.5)
    assert (mixed.precision, mixed.lr) == (None, 0.5)
    assert [str(w.message) for w in told] == [
        "--resume: --lr 0.5 replaces the run's 0.02 from its next epoch (its manifest.json "
        "records the change)"]
    val.unlink()
    with pytest.raises(UsageError, match=f"the run was started with --val {val}, which is "
                                         "not found from here"):
        resumed()
    assert Options(data=data, out=out).with_run_options().lr is None     # no --resume


@pytest.mark.parametrize("given, stage, expected", [
    ({}, 1, "none"),                                    # a random body trains
    ({"weights": "start.weights.h5"}, 1, "body"),       # a pretrained start is frozen
    ({"backbone_weights": "imagenet"}, 1, "body"),
    ({"backbone_weights": "none"}, 1, "none"),
    ({"bottlenecks": "cache.h5", "labels": "labels.npz"}, 1, "body"),
    ({"weights": "start.weights.h5"}, 2, "none"),
    ({"freeze": "body"}, 1, "body"),                    # given: as given
    ({"weights": "start.weights.h5", "freeze": "none"}, 1, "none"),
])
def test_stage_one_freezes_the_body_only_of_a_pretrained_start(tmp_path, given, stage,
                                                                expected):
    from detkit.commands.train import Options

    opts = Options(data=tmp_path / "train.txt", out=tmp_path / "run", stage=stage, **given,
                   given=frozenset({"data", "out", "stage", *given}))
    assert opts.checked().freeze == expected


def test_labels_without_bottlenecks_are_said_to_be_unused(tmp_path):
    """A Makefile chain encode-labels -> train: the labels file serves the --bottlenecks
    phase only, which a run on images is told (it encodes its targets per batch)."""
    import warnings

    from detkit.artifacts import DetkitWarning
    from detkit.commands.train import Options

    opts = Options(data=tmp_path / "train.txt", out=tmp_path / "run",
                   labels=tmp_path / "labels.npz", given=frozenset({"data", "out", "labels"}))
    with pytest.warns(DetkitWarning, match="labels.npz is read by the --bottlenecks phase "
                                           "only: this run trains on images"):
        opts.checked()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DetkitWarning)
        dataclasses.replace(opts, labels=None).checked()


def test_resumed_monitor_is_named_as_the_runs(tmp_path):
    """A monitor the run was started with, now without --eval-every: the message says it
    is the run's (the user never typed --monitor)."""
    from detkit.commands.train import Options
    from detkit.errors import UsageError

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {
        "monitor": "fitness", "eval_every": 1, "val": str(tmp_path)}}))
    opts = Options(data=tmp_path, out=run, resume=True, eval_every=0,
                   given=frozenset({"data", "out", "resume", "eval_every"}))
    with pytest.raises(UsageError, match="^the run's --monitor fitness needs --eval-every"):
        opts.with_run_options().resolved_monitor()
    typed = dataclasses.replace(opts, given=opts.given | {"monitor"}, monitor="map")
    with pytest.raises(UsageError, match="^--monitor map needs --eval-every"):
        typed.with_run_options().resolved_monitor()
