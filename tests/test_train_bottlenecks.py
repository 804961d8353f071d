"""``train --stage 1 --bottlenecks``: heads on cached features, then images, as one run."""

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.cli import app
from detkit.training.monitor import image_phase_best

runner = CliRunner()
SIZE, WIDTH = "64", "0.125"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A tiny dataset with anchors, labels.npz and a bottleneck cache."""
    root = tmp_path_factory.mktemp("chain")
    data = root / "data"
    steps = [
        ["synth", str(data), "--images", "20", "--size", SIZE, "--classes", "3",
         "--val-fraction", "0.25"],
        ["kmeans-anchors", str(data / "train.txt"), "--k", "6", "--input-size", SIZE,
         "--out", str(root / "anchors.txt")],
        ["encode-labels", str(data / "train.txt"), "--anchors", str(root / "anchors.txt"),
         "--input-size", SIZE, "--out", str(root / "labels.npz")],
        ["cache-bottlenecks", str(data / "train.txt"), "--model", "yolov3-tiny", "--width",
         WIDTH, "--anchors", str(root / "anchors.txt"), "--input-size", SIZE,
         "--out", str(root / "cache.h5")],
    ]
    for argv in steps:
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, (argv[0], result.output)
    # the last step, cache-bottlenecks without --weights, says its features are random
    assert "from a randomly initialized network" in " ".join(result.output.split())
    return root


def train_args(chain, out, *extra):
    return ["train", str(chain / "data" / "train.txt"), "--stage", "1", "--model",
            "yolov3-tiny", "--width", WIDTH, "--anchors", str(chain / "anchors.txt"),
            "--input-size", SIZE, "--bottlenecks", str(chain / "cache.h5"), "--labels",
            str(chain / "labels.npz"), "--batch-size", "8", "--out", str(out), *extra]


def history(run_dir):
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


def head_kernels(path):
    from detkit.models import build_model

    model = build_model("yolov3-tiny", 3, width=float(WIDTH))
    model.load_weights(path)
    heads = model.get_layer("heads")
    return {layer.name: np.array(layer.get_weights()[0]) for layer in heads.layers
            if layer.name.startswith("head_out")}, model


@pytest.mark.slow
def test_cache_phase_then_images_is_one_run(chain, tmp_path):
    out = tmp_path / "s1"
    result = runner.invoke(app, train_args(chain, out, "--bottleneck-epochs", "2",
                                           "--epochs", "1", "--val",
                                           str(chain / "data" / "val.txt")))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "holds features of a randomly initialized body" in text   # the cache's, no --weights
    assert "layers (" not in text        # the hand-over to images loads no user's --weights
    rows = history(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r["val_loss"])) for r in rows)
    # the heads moved away from the cache's initial weights, the body did not
    trained, model = head_kernels(out / "last.weights.h5")
    initial, init_model = head_kernels(chain / "cache.init.weights.h5")
    assert all(not np.allclose(trained[name], initial[name]) for name in trained)
    body, init_body = model.get_layer("body"), init_model.get_layer("body")
    for a, b in zip(body.get_weights(), init_body.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A cache from these trained weights at another size says so; none without weights
    # says its features are random.
    again = runner.invoke(app, ["cache-bottlenecks", str(chain / "data" / "train.txt"),
                                "--weights", str(out / "last.weights.h5"), "--input-size",
                                "96", "--anchors", str(chain / "anchors.txt"), "--out",
                                str(tmp_path / "c96.h5")])
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "the weights were trained at input 64; this cache is computed at 96" in text
    assert "randomly initialized" not in text and "did not load" not in text


@pytest.mark.slow
def test_resume_at_phase_boundary_continues_on_images(chain, tmp_path):
    out = tmp_path / "s1"
    first = runner.invoke(app, train_args(chain, out, "--bottleneck-epochs", "1",
                                          "--epochs", "0"))
    assert first.exit_code == 0, first.output
    assert len(history(out)) == 1
    second = runner.invoke(app, train_args(chain, out, "--bottleneck-epochs", "1",
                                           "--epochs", "1", "--resume"))
    assert second.exit_code == 0, second.output
    assert "epochs: 1 -> 2" in second.output
    assert [int(r["epoch"]) for r in history(out)] == [1, 2]
    # Without --val, best is the image phase's (the cached phase's loss is not comparable)
    assert json.loads((out / "state.json").read_text())["best_epoch"] == 2


def test_image_phase_picks_its_own_best_by_training_loss():
    """The cached phase's low unaugmented loss does not stay best over the image epochs;
    validation figures (comparable in both phases) carry over."""
    assert image_phase_best("loss", 0.5, 3, cache_epochs=3) == (math.inf, 0)
    assert image_phase_best("loss", 0.9, 5, cache_epochs=3) == (0.9, 5)  # resumed later
    assert image_phase_best("val_loss", 0.5, 3, cache_epochs=3) == (0.5, 3)
    assert image_phase_best("val_map", 0.4, 2, cache_epochs=3) == (0.4, 2)


def without(argv, option):
    """``argv`` less ``option`` and its value."""
    index = argv.index(option)
    return argv[:index] + argv[index + 2:]


@pytest.mark.parametrize("edit,message", [
    (lambda argv: without(argv, "--labels"), "--bottlenecks needs --labels"),
    (lambda argv: without(without(argv, "--labels"), "--bottlenecks"),
     "--bottleneck-epochs needs --bottlenecks"),
    (lambda argv: argv + ["--stage", "2"], "not stage 2"),
])
def test_bottleneck_option_errors(chain, tmp_path, edit, message):
    argv = edit(train_args(chain, tmp_path / "r", "--bottleneck-epochs", "1"))
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cache_of_other_width_is_refused(chain, tmp_path):
    argv = train_args(chain, tmp_path / "r", "--bottleneck-epochs", "1", "--epochs", "0")
    argv[argv.index("--width") + 1] = "0.25"
    result = runner.invoke(app, argv)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].endswith("re-run cache-bottlenecks with the same "
                                                 "model, weights and images"), result.output
    # one line naming the difference; the cache's own init weights are not the user's
    assert "does not match this run (width: " in lines[0]
    assert "init.weights" not in lines[0]
