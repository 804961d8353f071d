"""Model architectures: parameter counts, shapes, the body/heads split, freezing."""

import math

import keras
import numpy as np
import pytest

from detkit.errors import UsageError
from detkit.models import MODEL_NAMES, build_model, num_anchors
from detkit.models.freeze import FREEZE_MODES, freeze
from detkit.models.layers import DarknetConv, DarknetResidual, YoloHeadBias, scale_channels

TINY_WIDTH = 0.125
SIZE = 64


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name, total, trainable", [
    ("yolov3", 62_001_757, 61_949_149),     # keras-yolo3 yolo.h5 (80 classes)
    ("yolov3-tiny", 8_858_734, 8_852_366),  # keras-yolo3 tiny (80 classes)
])
def test_reference_parameter_counts(name, total, trainable):
    model = build_model(name, 80)
    assert model.name == name
    assert model.count_params() == total
    assert _trainable_count(model) == trainable


def test_num_anchors_and_names():
    assert MODEL_NAMES == ("yolov3", "yolov3-tiny", "yolov2", "yolov2-tiny", "retinanet",
                           "rpn")
    assert num_anchors("yolov3") == 9 and num_anchors("yolov3-tiny") == 6
    assert num_anchors("yolov2") == num_anchors("yolov2-tiny") == 5
    assert num_anchors("retinanet") == 27 and num_anchors("rpn") == 9
    with pytest.raises(UsageError, match="unknown model 'yolov4'"):
        num_anchors("yolov4")


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="yolo", num_classes=3), "unknown model"),
    (dict(name="yolov3", num_classes=0), "positive integer"),
    (dict(name="yolov3", num_classes=3, width=0), "width must be positive"),
    (dict(name="yolov3", num_classes=3, input_size=100), "multiple of 32"),
])
def test_bad_arguments_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message) as info:
        build_model(**kwargs)
    assert info.value.exit_code == 2


def test_scale_channels():
    assert scale_channels(1024, 1.0) == 1024
    assert scale_channels(32, TINY_WIDTH) == 8        # floor of 8
    assert scale_channels(1024, TINY_WIDTH) == 128
    assert scale_channels(100, 0.5) == 48             # 50 -> nearest multiple of 8
    with pytest.raises(ValueError, match="width must be positive"):
        scale_channels(64, -1)


@pytest.mark.parametrize("name, strides, body_channels", [
    ("yolov3", (32, 16, 8), (128, 64, 32)),
    ("yolov3-tiny", (32, 16), (128, 32)),
])
def test_forward_shapes_and_split(name, strides, body_channels):
    classes = 3
    model = build_model(name, classes, width=TINY_WIDTH)
    body, heads = model.get_layer("body"), model.get_layer("heads")
    assert isinstance(body, keras.Model) and isinstance(heads, keras.Model)
    assert [layer.name for layer in model.layers] == ["image", "body", "heads"]
    images = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    features = body(images)
    assert [tuple(f.shape) for f in features] == [
        (2, SIZE // s, SIZE // s, c) for s, c in zip(strides, body_channels)]
    outputs = model(images)
    assert [tuple(o.shape) for o in outputs] == [
        (2, SIZE // s, SIZE // s, 3, 5 + classes) for s in strides]
    for direct, composed in zip(outputs, heads(features)):
        np.testing.assert_allclose(np.asarray(direct), np.asarray(composed), atol=1e-5)
    # Any multiple of 32 works when no input size is fixed.
    assert tuple(model(images[:1, :32, :32])[0].shape) == (1, 1, 1, 3, 5 + classes)


def test_fixed_input_size():
    model = build_model("yolov3-tiny", 2, width=TINY_WIDTH, input_size=SIZE)
    assert tuple(model.input.shape) == (None, SIZE, SIZE, 3)
    assert tuple(model.get_layer("body").input.shape) == (None, SIZE, SIZE, 3)


def test_head_bias_starts_at_objectness_prior():
    classes = 4
    model = build_model("yolov3-tiny", classes, width=TINY_WIDTH)
    bias = np.asarray(model.get_layer("heads").get_layer("head_out_0").bias).reshape(3, -1)
    expected = np.zeros((3, 5 + classes), np.float32)
    expected[:, 4] = math.log(0.01 / 0.99)
    np.testing.assert_allclose(bias, expected, atol=1e-6)
    images = np.full((1, SIZE, SIZE, 3), 0.5, np.float32)
    objectness = 1 / (1 + np.exp(-np.asarray(model(images)[0])[..., 4]))
    assert objectness.mean() < 0.1


def test_layers_round_trip_through_config():
    conv = DarknetConv(16, 3, strides=2, weight_decay=5e-4, name="c")
    clone = DarknetConv.from_config(conv.get_config())
    assert clone.get_config() == conv.get_config()
    res = DarknetResidual(16, 8, name="r")
    assert DarknetResidual.from_config(res.get_config()).get_config() == res.get_config()
    init = YoloHeadBias(3, 0.02)
    assert YoloHeadBias.from_config(init.get_config()).get_config() == init.get_config()
    with pytest.raises(ValueError, match="strides must be 1 or 2"):
        DarknetConv(8, strides=3)


def test_stride2_conv_pads_top_left_like_darknet():
    conv = DarknetConv(8, 3, strides=2)
    assert tuple(conv(np.zeros((1, 8, 8, 3), np.float32)).shape) == (1, 4, 4, 8)


def test_model_saves_and_loads_as_keras_file(tmp_path):
    model = build_model("yolov3-tiny", 2, width=TINY_WIDTH)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = np.random.default_rng(1).uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    for a, b in zip(model(images), loaded(images)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert loaded.get_layer("body").name == "body"


def _weight_names(weights):
    return sorted(w.path for w in weights)


def test_freeze_modes_set_trainable_weights():
    model = build_model("yolov3", 3, width=TINY_WIDTH)
    body, heads = model.get_layer("body"), model.get_layer("heads")
    all_trainable = len(model.trainable_weights)
    assert freeze(model, "body") > 0
    assert len(model.trainable_weights) == len(heads.trainable_weights) > 0
    assert body.trainable_weights == []
    assert freeze(model, "all-but-heads") > 0
    assert all(w.path.startswith("head_out_") for w in model.trainable_weights)
    assert len(model.trainable_weights) == 2 * 3  # kernel + bias of 3 head_out convs
    assert freeze(model, "none") == 0
    assert len(model.trainable_weights) == all_trainable
    with pytest.raises(UsageError, match="unknown freeze mode"):
        freeze(model, "heads")
    assert FREEZE_MODES == ("none", "body", "all-but-heads")


def _moving_means(model):
    return {w.path: np.array(w) for w in model.non_trainable_weights
            if "moving_mean" in w.path}


@pytest.mark.parametrize("mode", ["body", "all-but-heads"])
def test_frozen_batchnorm_keeps_its_statistics_in_training(mode):
    model = build_model("yolov3-tiny", 2, width=TINY_WIDTH, input_size=SIZE)
    freeze(model, mode)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse", "mse"],
                  run_eagerly=True)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    targets = [rng.normal(size=tuple(o.shape)).astype(np.float32) for o in model(images)]
    body_before = [np.array(w) for w in model.get_layer("body").weights]
    heads_stats_before = _moving_means(model.get_layer("heads"))
    model.train_on_batch(images, targets)
    for before, after in zip(body_before, model.get_layer("body").weights):
        np.testing.assert_array_equal(before, np.array(after))
    heads_stats_after = _moving_means(model.get_layer("heads"))
    changed = [not np.array_equal(heads_stats_before[k], heads_stats_after[k])
               for k in heads_stats_before]
    # Trainable heads' BatchNorm updates its statistics; frozen ones do not.
    assert all(changed) if mode == "body" else not any(changed)


def test_freeze_requires_detkit_model():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no 'body' sub-model"):
        freeze(plain, "body")
