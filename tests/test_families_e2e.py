"""The YOLOv2, RetinaNet and RPN families through the same commands as YOLOv3.

Fast: the options a family does not read are refused, distillation between families of
other output layouts is refused naming both, labels of another scheme are refused.
Slow (real training, tiny models at 64 px, a few steps): per family, train stage 1 and
stage 2, eval-map --model, predict, distill within its layout, encode-labels +
cache-bottlenecks + train on the cache; and YOLOv2 from a random start at lr 1e-2 for 3
epochs keeps every term finite.
"""

import csv
import json
import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.cli import app

SIZE = "64"
WIDTH = "0.0625"
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 16-image, 64 px, 2-class synthetic set (train.txt, val.txt, val.json)."""
    from detkit.data.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("families")
    make_synth_dataset(root, images=16, size=64, classes=2, seed=0, val_fraction=0.25)
    return root


def invoke(*argv):
    result = runner.invoke(app, [str(a) for a in argv])
    return result


def model_args(model):
    return ["--model", model, "--width", WIDTH, "--input-size", SIZE]


def train_args(data, model, out, *extra):
    return ["train", data / "train.txt", *model_args(model), "--batch-size", "4",
            "--steps-per-epoch", "2", "--epochs", "1", "--out", out, *extra]


def history(run):
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------
# Refusals (fast: nothing trains)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, extra, message", [
    ("yolov3", ["--box-weight", "3"], "--box-weight does not apply to --model yolov3"),
    ("retinanet", ["--obj-loss", "focal"], "--obj-loss does not apply to --model retinanet"),
    ("rpn", ["--label-smoothing", "0.1"], "--label-smoothing does not apply to --model rpn"),
    ("yolov2", ["--pos-iou", "0.6"], "--pos-iou does not apply to --model yolov2"),
    ("yolov3", ["--no-scale-small-boxes"],
     "--scale-small-boxes does not apply to --model yolov3"),
    ("retinanet", ["--pos-iou", "0.3"], "--neg-iou 0.4 must not exceed --pos-iou 0.3"),
    ("rpn", ["--sample-anchors", "0"], "--sample-anchors must be >= 1"),
    ("yolov2", ["--backbone-weights", "imagenet"],
     "--backbone-weights does not apply to --model yolov2"),
    # read by the loss only with another option's value
    ("yolov3", ["--focal-alpha", "0.3"],
     "--focal-alpha applies with --obj-loss focal only (this run's is bce)"),
    ("yolov3", ["--focal-alpha", "0.25"],         # typed, although it is the default
     "--focal-alpha applies with --obj-loss focal only (this run's is bce)"),
    ("yolov3-tiny", ["--huber-delta", "0.5", "--box-loss", "ciou"],
     "--huber-delta applies with --box-loss huber only (this run's is ciou)"),
])
def test_family_options_that_do_not_apply_are_refused(data, tmp_path, model, extra, message):
    result = invoke(*train_args(data, model, tmp_path / "run", *extra))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("teacher, student", [("yolov3-tiny", "retinanet"),
                                              ("retinanet", "rpn"),
                                              ("yolov2", "yolov3-tiny")])
def test_distill_refuses_families_of_other_layouts(data, tmp_path, teacher, student):
    from detkit.models import build_model

    weights = tmp_path / "teacher.weights.h5"
    build_model(teacher, 2, 0.0625, 64).save_weights(weights)
    result = invoke("distill", data / "train.txt", *model_args(student), "--teacher",
                    weights, "--teacher-model", teacher, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"cannot distill the teacher {teacher} into the student {student}" in text
    assert ("yolov3 <-> yolov3-tiny; yolov2 <-> yolov2-tiny; retinanet <-> retinanet; "
            "rpn <-> rpn") in text


def test_encode_labels_boxes_scheme_round_trip(data, tmp_path):
    from detkit.data.dataset import load_dataset
    from detkit.data.letterbox import letterbox_records
    from detkit.labels import SCHEME_BOXES, BoxLabelsFile, load_labels

    out = tmp_path / "labels.npz"
    result = invoke("encode-labels", data / "train.txt", "--model", "retinanet",
                    "--input-size", SIZE, "--out", out)
    assert result.exit_code == 0, result.output
    assert "stored" in result.output and "positives" in result.output
    labels = load_labels(out)
    assert isinstance(labels, BoxLabelsFile) and labels.settings["scheme"] == SCHEME_BOXES
    dataset = load_dataset(data / "train.txt")
    boxes, classes, _ = letterbox_records(dataset.records, 64, 2)
    got_boxes, got_classes = labels.boxes_batch(range(len(dataset.records)), boxes.shape[1])
    np.testing.assert_array_equal(got_classes, classes)
    np.testing.assert_allclose(got_boxes, np.where(classes[..., None] >= 0, boxes, 0))
    # the same file serves every boxes-scheme family; a yolov3 run refuses it (and back)
    from detkit.errors import ArtifactMismatchError
    from detkit.families import get_family
    from detkit.labels import check_scheme

    check_scheme(labels, get_family("rpn"))
    with pytest.raises(ArtifactMismatchError, match="re-run encode-labels --model yolov3"):
        check_scheme(labels, get_family("yolov3"))
    result = invoke("encode-labels", data / "train.txt", "--model", "yolov2",
                    "--input-size", SIZE, "--out", tmp_path / "v2.npz",
                    "--multi-anchor-iou", "0.5")
    assert result.exit_code == 2 and "applies to yolov3 targets" in result.output


# ---------------------------------------------------------------------------------------
# End to end (slow)
# ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model", ["yolov2", "retinanet", "rpn"])
def test_family_trains_evaluates_and_predicts(data, tmp_path, model):
    stage1 = tmp_path / "stage1"
    result = invoke(*train_args(data, model, stage1, "--val", data / "val.txt", "--no-plots"))
    assert result.exit_code == 0, result.output
    rows = history(stage1)
    assert len(rows) == 1 and all(math.isfinite(float(v)) for v in rows[0].values())
    if model == "rpn":
        assert 0.0 <= float(rows[0]["obj_acc"]) <= 1.0 and "val_obj_acc" in rows[0]

    stage2 = tmp_path / "stage2"
    result = invoke(*train_args(data, model, stage2, "--stage", "2", "--weights",
                                stage1 / "last.weights.h5"))
    assert result.exit_code == 0, result.output
    assert (stage2 / "best.weights.h5").is_file()

    report = tmp_path / "report.json"
    result = invoke("eval-map", data / "val.json", *model_args(model), "--weights",
                    stage2 / "last.weights.h5", "--out", report)
    assert result.exit_code == 0, result.output
    written = json.loads(report.read_text())
    assert len(written["stats"]) == 12 and all(-1 <= s <= 1 for s in written["stats"])
    if model == "rpn":                  # proposals: class-agnostic recall up to 1000
        assert written["params"]["class_agnostic"] and "AR1000" in written

    detections = tmp_path / "detections.json"
    result = invoke("predict", data / "val.txt", *model_args(model), "--weights",
                    stage2 / "last.weights.h5", "--out", detections, "--conf", "0.0001")
    assert result.exit_code == 0, result.output
    found = json.loads(detections.read_text())
    assert found and all(len(d["bbox"]) == 4 for d in found)
    # the weights' manifest supplies the model, width, input size and anchors
    recorded = tmp_path / "recorded.json"
    result = invoke("predict", data / "val.txt", "--weights", stage2 / "last.weights.h5",
                    "--out", recorded, "--conf", "0.0001")
    assert result.exit_code == 0, result.output
    assert json.loads(recorded.read_text()) == found
    if model == "rpn":     # class-agnostic: the first category id, counted as objects
        assert {d["category_id"] for d in found} == {1}
        assert re.search(rf"\bobject\W+{len(found)}\b", result.output), result.output

    # distill within the layout, the student's model and anchors from the flags and the
    # teacher's from its manifest (yolov2 -> yolov2-tiny; retinanet, rpn -> themselves)
    student_model = {"yolov2": "yolov2-tiny"}.get(model, model)
    student = tmp_path / "student"
    result = invoke("distill", data / "train.txt", "--model", student_model, "--width",
                    "0.125", "--input-size", SIZE, "--batch-size", "4", "--steps-per-epoch",
                    "2", "--epochs", "1", "--teacher", stage1 / "last.weights.h5",
                    "--out", student)
    assert result.exit_code == 0, result.output
    row = history(student)[0]
    terms = ("d_obj", "d_xy", "d_wh", "d_cls") if model == "yolov2" else ("d_cls", "d_box")
    assert all(math.isfinite(float(row[name])) and float(row[name]) > 0 for name in terms)

    if model == "rpn":     # its body, cache and boxes scheme are retinanet's, tested above
        return
    # encode-labels + cache-bottlenecks (the body's features) + stage 1 on the cache
    labels, cache = tmp_path / "labels.npz", tmp_path / "cache.h5"
    result = invoke("encode-labels", data / "train.txt", "--model", model,
                    "--input-size", SIZE, "--out", labels)
    assert result.exit_code == 0, result.output
    result = invoke("cache-bottlenecks", data / "train.txt", *model_args(model),
                    "--split", "body", "--weights", stage1 / "last.weights.h5",
                    "--out", cache)
    assert result.exit_code == 0, result.output
    cached = tmp_path / "cached"
    result = invoke(*train_args(data, model, cached, "--weights", stage1 / "last.weights.h5",
                                "--bottlenecks", cache, "--labels", labels,
                                "--bottleneck-epochs", "1"))
    assert result.exit_code == 0, result.output
    assert len(history(cached)) == 2


@pytest.mark.slow
def test_yolov2_random_start_at_lr_1e2_keeps_every_term_finite(data, tmp_path):
    """The YAD2K users' failure (exp(t_w) -> inf -> NaN in the first batches) does not
    happen: 3 epochs from a random init at lr 1e-2, nothing frozen, no warmup."""
    out = tmp_path / "run"
    result = invoke("train", data / "train.txt", *model_args("yolov2"), "--batch-size", "4",
                    "--epochs", "3", "--lr", "1e-2", "--warmup-epochs", "0",
                    "--freeze", "none", "--out", out)
    assert result.exit_code == 0, result.output
    rows = history(out)
    assert len(rows) == 3
    for row in rows:
        for name in ("loss", "xy", "wh", "obj", "noobj", "cls"):
            assert math.isfinite(float(row[name])), (name, row)
