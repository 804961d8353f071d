"""Multi-scale training (``detkit train --multi-scale F``): the sides, the batches, the
loss at each side, the flag end to end and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detkit.assign.yolov3 import Yolov3Assigner
from detkit.data.augment_config import multi_scale_sides
from detkit.data.dataset import load_dataset
from detkit.data.loader import DetectionBatches
from detkit.data.mix import MixedBatches
from detkit.data.augment import AugmentConfig
from detkit.errors import UsageError
from detkit.losses import YoloV3Loss

from test_losses import ANCHORS_6, _loss_terms, random_case

SIZE = 64
TRAIN_ANCHORS = np.float32([[8, 8], [12, 16], [16, 12], [20, 24], [28, 28], [40, 40]])


# ---------------------------------------------------------------------------------------
# The sides
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,fraction,expected", [
    (256, 0.5, (128, 160, 192, 224, 256, 288, 320, 352, 384)),
    (256, 0.25, (192, 224, 256, 288, 320)),
    (416, 0.5, tuple(range(224, 609, 32))),   # 208 rounds up to 224, 624 down to 608
    (64, 1.0, (32, 64, 96, 128)),              # never below 32
    (256, 0.125, (224, 256, 288)),
])
def test_sides_are_the_multiples_of_32_in_the_range(size, fraction, expected):
    assert multi_scale_sides(size, fraction) == expected


@pytest.mark.parametrize("size,fraction,message", [
    (256, 0.05, "--multi-scale 0.05 at --input-size 256 allows only the side 256"),
    (256, 0.0, "--multi-scale must be in (0, 1], got 0.0"),
    (256, 1.5, "--multi-scale must be in (0, 1], got 1.5"),
])
def test_sides_refuse_a_range_without_two_sides(size, fraction, message):
    with pytest.raises(UsageError) as error:
        multi_scale_sides(size, fraction)
    assert message in str(error.value)


# ---------------------------------------------------------------------------------------
# The batches
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(synth_with_anchors):
    return synth_with_anchors(TRAIN_ANCHORS)


def multi_scale_batches(records, sides, cls=DetectionBatches, **kwargs):
    encoders = {side: Yolov3Assigner(TRAIN_ANCHORS, side, 2, strides=(32, 16))
                for side in sides}
    return cls(records, SIZE, 2, augment=True, shuffle=True, seed=5, encoder=encoders,
               sides=sides, **kwargs)


@pytest.mark.parametrize("cls,config", [
    (DetectionBatches, None),
    (MixedBatches, AugmentConfig(mosaic=1.0, mixup=0.5)),
])
def test_batches_take_sides_from_the_range_with_grids_to_match(dataset, cls, config):
    records = load_dataset(dataset / "train.txt").records
    sides = multi_scale_sides(SIZE, 1.0)                      # 32, 64, 96, 128
    loader = multi_scale_batches(records, sides, cls, augment_config=config)
    seen = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        epoch_sides = [loader.batch_side(b) for b in range(len(loader))]
        # Keras reads the batch shape from the first two: they must differ.
        assert epoch_sides[0] != epoch_sides[1]
        for batch in range(len(loader)):
            images, targets = loader[batch]
            side = epoch_sides[batch]
            assert side in sides and side % 32 == 0
            assert images.shape == (len(images), side, side, 3)
            grids = [t.shape[1:3] for t in targets["targets"]]
            assert grids == [(side // 32, side // 32), (side // 16, side // 16)]
            # Normalized boxes: the targets were assigned for this side.
            assert targets["boxes"].max() <= 1.0
            present = targets["boxes"][..., 2] > 0
            assert present.any()
            seen.append(side)
    assert len(set(seen)) >= 3
    # Deterministic: the same seed and epoch give the same sides and pixels.
    again = multi_scale_batches(records, sides, cls, augment_config=config)
    again.set_epoch(2)
    np.testing.assert_array_equal(again[1][0], loader[1][0])


def test_sides_are_balanced_over_an_epoch(dataset):
    records = load_dataset(dataset / "train.txt").records * 10      # 90 images
    sides = (32, 64, 96)
    loader = multi_scale_batches(records, sides)
    counts = np.bincount([sides.index(loader.batch_side(b)) for b in range(len(loader))])
    assert len(loader) == 45 and counts.tolist() == [15, 15, 15]


def test_the_boxes_follow_the_side_of_their_batch(dataset):
    """Without augmentation a batch at side s holds the letterboxed boxes scaled by s/S."""
    records = load_dataset(dataset / "train.txt").records
    sides = (32, 64, 128)
    loader = DetectionBatches(records, SIZE, 2, augment=False, shuffle=False, seed=0,
                              sides=sides)
    fixed = DetectionBatches(records, SIZE, 2, augment=False, shuffle=False, seed=0)
    for batch in range(len(loader)):
        side = loader.batch_side(batch)
        boxes, reference = loader[batch][1]["boxes"], fixed[batch][1]["boxes"]
        np.testing.assert_allclose(boxes, reference * side / SIZE, rtol=1e-5, atol=1e-3)


def test_sides_need_an_encoder_per_side(dataset):
    records = load_dataset(dataset / "train.txt").records
    with pytest.raises(UsageError, match="missing"):
        DetectionBatches(records, SIZE, 2, sides=(32, 64),
                         encoder={32: Yolov3Assigner(TRAIN_ANCHORS, 32, 2)})
    with pytest.raises(UsageError, match="two distinct"):
        DetectionBatches(records, SIZE, 2, sides=(64,))


# ---------------------------------------------------------------------------------------
# The loss at each side
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("box_loss", ["mse", "huber", "ciou"])
@pytest.mark.parametrize("side", [32, 96, 160])
def test_loss_at_a_side_equals_the_loss_built_for_it(side, box_loss):
    raws, targets, gt = random_case(side, input_size=side)
    fixed = YoloV3Loss(ANCHORS_6, 3, side, box_loss=box_loss, ignore_thresh=0.3)
    multi = YoloV3Loss(ANCHORS_6, 3, 64, box_loss=box_loss, ignore_thresh=0.3,
                       multi_scale=0.5)
    plain = YoloV3Loss(ANCHORS_6, 3, 64, box_loss=box_loss, ignore_thresh=0.3)
    want_terms, want = _loss_terms(fixed, raws, targets, gt)
    got_terms, got = _loss_terms(multi, raws, targets, gt)
    for name in fixed.term_names:
        np.testing.assert_allclose(got_terms[name], want_terms[name], rtol=1e-6,
                                   err_msg=name)
    # Without multi_scale the loss keeps input_size (64): a different loss off 64.
    _, other = _loss_terms(plain, raws, targets, gt)
    assert not np.allclose(other, want, rtol=1e-3)


@pytest.mark.parametrize("side", [32, 96])
def test_loss_with_an_unknown_grid_in_a_traced_function(side):
    """Under tf.function with a free side (multi-scale fit on TensorFlow) the side is a
    tensor; the loss still equals the one built for the batch's side."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the traced free-side path is TensorFlow's")
    import tensorflow as tf

    raws, targets, gt = random_case(side + 1, input_size=side)
    multi = YoloV3Loss(ANCHORS_6, 3, 64, box_loss="mse", multi_scale=0.5)
    fixed = YoloV3Loss(ANCHORS_6, 3, side, box_loss="mse")
    spec = lambda a: tf.TensorSpec((None, None, None) + a.shape[3:], tf.float32)

    @tf.function(input_signature=[[spec(r) for r in raws], [spec(t) for t in targets],
                                  tf.TensorSpec((None, None, 4), tf.float32)])
    def traced(raws, targets, gt):
        assert raws[0].shape[1] is None                     # the side is not static
        return multi.terms({"targets": targets, "boxes": gt}, raws)

    # Per-sample terms; _loss_terms gives their batch means.
    got = {k: np.asarray(v).mean() for k, v in traced(raws, targets, gt).items()}
    want, _ = _loss_terms(fixed, raws, targets, gt)
    for name in fixed.term_names:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)


def test_loss_records_multi_scale_in_its_config():
    loss = YoloV3Loss(ANCHORS_6, 3, 64, multi_scale=0.25)
    assert loss.get_config()["multi_scale"] == 0.25
    assert YoloV3Loss.from_config(loss.get_config()).multi_scale == 0.25
    with pytest.raises(ValueError, match="multi_scale must be >= 0"):
        YoloV3Loss(ANCHORS_6, 3, 64, multi_scale=-1)


# ---------------------------------------------------------------------------------------
# The flag
# ---------------------------------------------------------------------------------------

def train_args(dataset, out, *extra):
    return ["train", str(dataset / "train.txt"), "--model", "yolov3-tiny", "--width",
            "0.0625", "--anchors", str(dataset / "anchors.txt"), "--input-size",
            str(SIZE), "--batch-size", "2", "--out", str(out), *extra]


@pytest.mark.parametrize("extra,message", [
    (["--multi-scale", "1.5"], "--multi-scale must be in [0, 1], got 1.5"),
    (["--multi-scale", "0.2"], "--multi-scale 0.2 at --input-size 64 allows only the "
                               "side 64"),
    (["--multi-scale", "0.5", "--model", "yolov2"],
     "--multi-scale does not apply to --model yolov2"),
    (["--multi-scale", "0.5", "--model", "retinanet"],
     "--multi-scale does not apply to --model retinanet"),
    (["--multi-scale", "0.5", "--strategy", "mirrored"],
     "--multi-scale 0.5 is not supported with --strategy mirrored"),
    (["--multi-scale", "0.5", "--bottlenecks", "cache.h5", "--labels", "labels.npz"],
     "--multi-scale 0.5 trains on images of varying sides; it cannot train on "
     "--bottlenecks"),
    (["--multi-scale", "0.5", "--batch-size", "16"],
     "--multi-scale 0.5 needs at least 2 batches per epoch (this run has 1"),
    (["--multi-scale", "0.5", "--steps-per-epoch", "1"],
     "--multi-scale 0.5 needs at least 2 batches per epoch (this run has "
     "--steps-per-epoch 1); raise --steps-per-epoch"),
])
def test_flag_refusals_are_one_line_usage_errors(dataset, tmp_path, extra, message):
    from typer.testing import CliRunner

    from detkit.cli import app

    if "--bottlenecks" in extra:  # existing files, so the refusal is the flag's
        for name in ("cache.h5", "labels.npz"):
            (tmp_path / name).write_bytes(b"x")
        extra = [str(tmp_path / e) if e in ("cache.h5", "labels.npz") else e
                 for e in extra]
    result = CliRunner().invoke(app, train_args(dataset, tmp_path / "run", *extra))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_train_multi_scale_end_to_end(dataset, tmp_path, monkeypatch):
    """A tiny run at sides 32-128: several sides train, validation stays at
    --input-size, checkpoints load into a fixed-size model, the manifests record it.

    Eager: compiled (``--jit``), each side compiles once (115 s here); the quality gate
    runs that path (``bench_train_quality --multi-scale 0.5``) and the traced loss has its
    own test above."""
    import csv
    import math

    from detkit.commands.train import Options
    from detkit.models import build_model
    from detkit.training.run import run_training

    made: list[tuple[bool, int]] = []
    rows_of = DetectionBatches.rows

    def recording_rows(self, batch, start, stop):
        images, targets = rows_of(self, batch, start, stop)
        made.append((self.augment, images.shape[1]))
        return images, targets

    monkeypatch.setattr(DetectionBatches, "rows", recording_rows)
    out = tmp_path / "run"
    opts = Options(data=dataset / "train.txt", val=dataset / "val.txt", model="yolov3-tiny",
                   width=0.0625, anchors=dataset / "anchors.txt", input_size=SIZE,
                   batch_size=2, epochs=2, multi_scale=1.0, freeze="none", lr=1e-3,
                   eval_every=1, jit=False, plots=False, out=out)
    result = run_training(opts)
    train_sides = {side for augment, side in made if augment}
    assert len(train_sides) >= 3 and train_sides <= {32, 64, 96, 128}
    assert {side for augment, side in made if not augment} == {SIZE}   # validation
    for name in ("manifest.json", "best.weights.h5.manifest.json"):
        manifest = json.loads((out / name).read_text())
        assert manifest["config"]["multi_scale"] == 1.0, name
        assert manifest["input_size"] == SIZE, name
    with open(out / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        for name in ("loss", "xy", "wh", "obj", "cls", "val_loss", "val_map50"):
            assert math.isfinite(float(row[name])), (name, row)
    fixed = build_model("yolov3-tiny", 2, 0.0625, SIZE)
    fixed.load_weights(out / "best.weights.h5")
    outputs = fixed(np.zeros((1, SIZE, SIZE, 3), np.float32))
    assert [tuple(o.shape[1:3]) for o in outputs] == [(2, 2), (4, 4)]
    assert result.total_epochs == 2


def test_a_variable_size_network_is_evaluated_at_the_input_size():
    """The network of a multi-scale run takes any side; the evaluator's copy has
    --input-size and the same weights (static outputs for the compiled postprocessing)."""
    from detkit.models import build_model
    from detkit.models.detector import at_input_size

    network = build_model("yolov3-tiny", 2, 0.0625, None)
    assert network.inputs[0].shape[1] is None
    fixed = at_input_size(network, SIZE)
    assert tuple(fixed.inputs[0].shape) == (None, SIZE, SIZE, 3)
    assert [tuple(o.shape[1:3]) for o in fixed.outputs] == [(2, 2), (4, 4)]
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    for got, want in zip(fixed(image), network(image)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    # At 96 the variable network gives 3x3 and 6x6 grids from the same weights.
    assert [tuple(o.shape[1:3]) for o in network(np.zeros((1, 96, 96, 3)))] == [(3, 3),
                                                                              (6, 6)]
    assert at_input_size(fixed, SIZE) is fixed
