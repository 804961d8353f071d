"""``--backbone``: keras.applications bodies under the YOLOv3 heads, and their weights.

MobileNetV2 at alpha 0.35 and 64 px runs in the fast tests; EfficientNetB0 and ResNet50
(full size, one forward pass) are marked slow. Weight files are written by the tests
(an application built with ``weights=None``); ImageNet downloads are never attempted:
the offline path is exercised with the network probe replaced.
"""

import json

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.artifacts import Note
from detkit.choices import BACKBONES
from detkit.cli import app
from detkit.errors import ArtifactError, ArtifactMismatchError, UsageError
from detkit.families import FAMILIES, Family, get_family
from detkit.models import backbones, build_model
from detkit.models.backbones import ImagePreprocess, load_backbone_weights
from detkit.models.freeze import freeze

SIZE = 64
ALPHA = 0.35
runner = CliRunner()


def _images(n=2, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def _mobilenet(alpha=ALPHA, size=SIZE):
    return keras.applications.MobileNetV2(include_top=False, weights=None, alpha=alpha,
                                          input_shape=(size, size, 3))


# ----------------------------------------------------------------------------- registry

def test_registry_lists_the_choices_and_families_default_to_their_own_body():
    assert tuple(backbones.REGISTRY) == BACKBONES
    assert get_family("yolov3").resolve_backbone(None) == "darknet53"
    assert get_family("yolov3-tiny").resolve_backbone(None) == "darknet-tiny"
    assert get_family("retinanet").resolve_backbone(None) == "darknet-small"
    for name in ("yolov3", "yolov3-tiny", "retinanet", "rpn"):
        assert set(FAMILIES[name].backbones) == set(BACKBONES)
    with pytest.raises(UsageError, match="unknown backbone 'vgg16'"):
        backbones.get_backbone("vgg16")


def test_a_family_without_backbones_refuses_one():
    family = Family(name="plain", strides=(32,), anchors_per_scale=5,
                    default_anchors="x.txt", builder="m:f", assigner="m:a", loss="m:l",
                    decoder="m:d")
    assert family.resolve_backbone(None) is None
    with pytest.raises(UsageError, match="--backbone resnet50 does not apply to --model "
                                         "plain; it takes no --backbone"):
        family.resolve_backbone("resnet50")


def test_default_body_is_unchanged_by_the_registry():
    default = build_model("yolov3-tiny", 2, 0.125, SIZE)
    named = build_model("yolov3-tiny", 2, 0.125, SIZE, backbone="darknet-tiny")
    assert ([w.path for w in default.weights] == [w.path for w in named.weights])
    assert [layer.name for layer in default.get_layer("body").layers][:3] == \
        ["image", "conv1", "pool1"]


# ------------------------------------------------------------------------ preprocessing

def test_preprocessing_matches_keras_applications():
    pixels = _images(seed=1)
    tf_mode = ImagePreprocess("tf")(pixels)
    np.testing.assert_allclose(
        tf_mode, keras.applications.mobilenet_v2.preprocess_input(pixels * 255.0),
        rtol=1e-5, atol=1e-5)
    caffe = ImagePreprocess("caffe")(pixels)
    np.testing.assert_allclose(
        caffe, keras.applications.resnet50.preprocess_input(pixels * 255.0),
        rtol=1e-5, atol=1e-3)
    # EfficientNet rescales by 1/255 itself; after it the input is (x - mean) / std.
    eff = np.asarray(ImagePreprocess("imagenet255")(pixels)) / 255.0
    expected = (pixels - np.float32(backbones.IMAGENET_MEAN_RGB)) / np.float32(
        backbones.IMAGENET_STD_RGB)
    np.testing.assert_allclose(eff, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ImagePreprocess("none")(pixels), pixels)
    with pytest.raises(ValueError, match="mode must be one of"):
        ImagePreprocess("bgr")
    assert ImagePreprocess.from_config(ImagePreprocess("caffe").get_config()).mode == "caffe"


# ----------------------------------------------------------------------------- models

def _check_detector(model, family_name, size):
    family = get_family(family_name)
    body, heads = model.get_layer("body"), model.get_layer("heads")
    assert model.name == family_name and len(body.outputs) == len(family.strides)
    outputs = model(_images(1, size))
    assert [tuple(o.shape[1:3]) for o in outputs] == [(size // s, size // s)
                                                       for s in family.strides]
    features = body(_images(1, size))
    assert [tuple(f.shape[1:3]) for f in features] == [(size // s, size // s)
                                                        for s in family.strides]
    assert heads is not None


@pytest.mark.parametrize("family", ["yolov3", "yolov3-tiny"])
def test_mobilenetv2_under_each_head(family):
    model = build_model(family, 3, ALPHA, SIZE, backbone="mobilenetv2")
    _check_detector(model, family, SIZE)
    body = model.get_layer("body")
    assert [layer.name for layer in body.layers] == ["image", "preprocess", "mobilenetv2"]
    # alpha = --width: the first conv has 16 * 0.35 -> 16 (rounded to 8) filters
    assert body.get_layer("mobilenetv2").get_layer("Conv1").filters == 16


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnetb0", "resnet50", "darknet53"])
def test_full_size_backbones_forward(name):
    for family in ("yolov3", "yolov3-tiny"):
        _check_detector(build_model(family, 2, 0.25, 96, backbone=name), family, 96)


def test_efficientnet_normalization_stays_identity():
    features = backbones._application_features(backbones.get_backbone("efficientnetb0"),
                                               1.0, SIZE, 3)
    norm, = [layer for layer in features.layers
             if isinstance(layer, keras.layers.Normalization)]
    norm.set_weights([np.full(3, 0.4, np.float32), np.full(3, 0.2, np.float32),
                      *norm.get_weights()[2:]])
    norm.finalize_state()
    backbones._identity_normalization(features)
    x = _images(1)
    np.testing.assert_allclose(norm(x), x, rtol=1e-6)


def test_frozen_application_body_keeps_batchnorm_statistics():
    model = build_model("yolov3-tiny", 2, ALPHA, SIZE, backbone="mobilenetv2")
    freeze(model, "body")
    body = model.get_layer("body")
    assert not any(w.trainable for w in body.weights)
    images = _images()
    before = [np.array(w) for w in body.weights]
    inference = [np.asarray(f) for f in body(images, training=False)]
    training = [np.asarray(f) for f in model.get_layer("body")(images, training=True)]
    model(images, training=True)
    for a, b in zip(before, body.weights):
        np.testing.assert_array_equal(a, np.array(b))
    for a, b in zip(inference, training):  # frozen BatchNorm runs in inference mode
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- weights

def test_backbone_weights_from_an_application_file(tmp_path):
    source = _mobilenet()
    path = tmp_path / "mnv2.weights.h5"
    source.save_weights(path)
    model = build_model("yolov3", 2, ALPHA, SIZE, backbone="mobilenetv2")
    heads_before = [np.array(w) for w in model.get_layer("heads").weights]
    line = load_backbone_weights(model, "mobilenetv2", path, ALPHA)
    assert line.startswith("backbone mobilenetv2:") and str(path) in line
    nested = model.get_layer("body").get_layer("mobilenetv2")
    for layer in source.layers:
        if layer.weights:
            for a, b in zip(layer.get_weights(), nested.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    for a, b in zip(heads_before, model.get_layer("heads").weights):
        np.testing.assert_array_equal(a, np.array(b))
    # the same weights give the same features as the application on preprocessed input
    images = _images()
    expected = source(keras.applications.mobilenet_v2.preprocess_input(images * 255.0))
    np.testing.assert_allclose(model.get_layer("body")(images)[0], expected,
                               rtol=1e-4, atol=1e-4)


def test_backbone_weights_from_a_detector_file_and_a_legacy_h5(tmp_path):
    trained = build_model("yolov3-tiny", 2, ALPHA, SIZE, backbone="mobilenetv2")
    detector_file = tmp_path / "det.weights.h5"
    trained.save_weights(detector_file)
    model = build_model("yolov3-tiny", 5, ALPHA, SIZE, backbone="mobilenetv2")
    load_backbone_weights(model, "mobilenetv2", detector_file, ALPHA)
    for a, b in zip(trained.get_layer("body").weights, model.get_layer("body").weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))

    source = _mobilenet()
    legacy = tmp_path / "mnv2_notop.h5"
    source.save(legacy)  # Keras 2 HDF5 layout, like the files keras.applications downloads
    line = load_backbone_weights(model, "mobilenetv2", legacy, ALPHA)
    assert "keras.applications file" in line
    nested = model.get_layer("body").get_layer("mobilenetv2")
    np.testing.assert_array_equal(source.get_layer("Conv1").get_weights()[0],
                                  nested.get_layer("Conv1").get_weights()[0])


def test_darknet_backbone_weights_take_only_the_body(tmp_path):
    trained = build_model("yolov3-tiny", 2, 0.125, SIZE)
    path = tmp_path / "tiny.weights.h5"
    trained.save_weights(path)
    model = build_model("yolov3-tiny", 2, 0.125, SIZE)
    heads_before = [np.array(w) for w in model.get_layer("heads").weights]
    line = load_backbone_weights(model, "darknet-tiny", path)
    assert "layers from" in line
    assert isinstance(line, Note)                  # told as a note, not a warning
    for a, b in zip(trained.get_layer("body").weights, model.get_layer("body").weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    for a, b in zip(heads_before, model.get_layer("heads").weights):
        np.testing.assert_array_equal(a, np.array(b))


def test_backbone_weights_errors(tmp_path):
    model = build_model("yolov3-tiny", 2, ALPHA, SIZE, backbone="mobilenetv2")
    assert load_backbone_weights(model, "mobilenetv2", "none") is None
    assert load_backbone_weights(model, "mobilenetv2", None) is None
    with pytest.raises(ArtifactError, match="no such file"):
        load_backbone_weights(model, "mobilenetv2", tmp_path / "missing.h5")
    other = tmp_path / "alpha05.weights.h5"
    _mobilenet(alpha=0.5).save_weights(other)
    with pytest.raises(ArtifactMismatchError, match="does not fit --backbone mobilenetv2"):
        load_backbone_weights(model, "mobilenetv2", other, ALPHA)
    with pytest.raises(UsageError, match="ImageNet weights for --width 0.35, 0.5"):
        load_backbone_weights(model, "mobilenetv2", "imagenet", 0.3)
    tiny = build_model("yolov3-tiny", 2, 0.125, SIZE)
    with pytest.raises(UsageError, match="darknet-tiny is detkit's own body"):
        load_backbone_weights(tiny, "darknet-tiny", "imagenet")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No cached Keras files and a network probe that fails at once."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(backbones, "network_unreachable",
                        lambda host, *a, **k: "[Errno -2] Name or service not known")


def test_imagenet_without_network_names_the_file_alternative(offline):
    model = build_model("yolov3-tiny", 2, ALPHA, SIZE, backbone="mobilenetv2")
    with pytest.raises(ArtifactError) as caught:
        load_backbone_weights(model, "mobilenetv2", "imagenet", ALPHA)
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot download the ImageNet weights of mobilenetv2" in message
    assert "--backbone-weights FILE" in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in message


def test_network_probe_fails_fast_on_an_unresolvable_host():
    import time

    start = time.monotonic()
    reason = backbones.network_unreachable("detkit-no-such-host.invalid", timeout=3.0)
    assert reason and time.monotonic() - start < 4.0


# -------------------------------------------------------------------------- commands

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bb")
    steps = [
        ["synth", str(root / "data"), "--images", "12", "--size", str(SIZE), "--classes",
         "2", "--val-fraction", "0.25"],
        ["kmeans-anchors", str(root / "data" / "train.txt"), "--k", "6", "--input-size",
         str(SIZE), "--out", str(root / "anchors.txt")],
        ["encode-labels", str(root / "data" / "train.txt"), "--anchors",
         str(root / "anchors.txt"), "--input-size", str(SIZE), "--out",
         str(root / "labels.npz")],
    ]
    for argv in steps:
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, (argv[0], result.output)
    _mobilenet().save_weights(root / "mnv2.weights.h5")
    return root


def _model_args(data, backbone="mobilenetv2", width=ALPHA):
    return ["--model", "yolov3-tiny", "--backbone", backbone, "--width", str(width),
            "--anchors", str(data / "anchors.txt"), "--input-size", str(SIZE)]


def test_train_with_imagenet_offline_is_one_line(data, tmp_path, offline):
    result = runner.invoke(app, ["train", str(data / "data" / "train.txt"),
                                 *_model_args(data), "--backbone-weights", "imagenet",
                                 "--epochs", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "--backbone-weights FILE" in result.output
    assert "Traceback" not in result.output


def test_backbone_flag_is_validated(data, tmp_path):
    result = runner.invoke(app, ["train", str(data / "data" / "train.txt"),
                                 *_model_args(data, backbone="vgg16"), "--epochs", "1",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--backbone must be one of" in result.output


@pytest.mark.slow
def test_chain_with_an_application_backbone(data, tmp_path):
    """cache-bottlenecks -> stage 1 on the cache -> stage 2 -> distill -> eval-map, with
    the backbone recorded and checked at each hand-over."""
    train_txt = str(data / "data" / "train.txt")
    cache = tmp_path / "cache.h5"
    result = runner.invoke(app, ["cache-bottlenecks", train_txt, *_model_args(data),
                                 "--backbone-weights", str(data / "mnv2.weights.h5"),
                                 "--out", str(cache)])
    assert result.exit_code == 0, result.output
    manifest = json.loads(cache.with_name("cache.h5.manifest.json").read_text())
    assert manifest["cache"]["backbone"] == "mobilenetv2"
    assert manifest["config"]["backbone_weights"] == str(data / "mnv2.weights.h5")
    # the init weights saved beside the cache hold the file's backbone
    init = build_model("yolov3-tiny", 2, ALPHA, SIZE, backbone="mobilenetv2")
    init.load_weights(tmp_path / "cache.init.weights.h5")
    np.testing.assert_array_equal(
        init.get_layer("body").get_layer("mobilenetv2").get_layer("Conv1").get_weights()[0],
        _loaded_conv1(data / "mnv2.weights.h5"))

    stage1 = ["train", train_txt, "--stage", "1", *_model_args(data), "--bottlenecks",
              str(cache), "--labels", str(data / "labels.npz"), "--bottleneck-epochs", "1",
              "--epochs", "0", "--batch-size", "4"]
    wrong = runner.invoke(app, [*stage1[:stage1.index("--backbone") + 1], "darknet-tiny",
                                *stage1[stage1.index("--backbone") + 2:],
                                "--out", str(tmp_path / "wrong")])
    assert wrong.exit_code == 1 and "backbone" in wrong.output, wrong.output
    result = runner.invoke(app, [*stage1, "--out", str(tmp_path / "s1")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s1" / "manifest.json").read_text())["backbone"] == \
        "mobilenetv2"

    stage2 = ["train", train_txt, "--stage", "2", "--weights",
              str(tmp_path / "s1" / "best.weights.h5"), "--epochs", "1", "--batch-size", "4",
              "--steps-per-epoch", "1", "--val", str(data / "data" / "val.txt")]
    wrong = runner.invoke(app, [*stage2, *_model_args(data, backbone="darknet-tiny"),
                                "--out", str(tmp_path / "wrong2")])
    assert wrong.exit_code == 1 and "backbone" in wrong.output, wrong.output
    result = runner.invoke(app, [*stage2, *_model_args(data), "--out", str(tmp_path / "s2")])
    assert result.exit_code == 0, result.output

    result = runner.invoke(app, ["distill", train_txt, "--teacher", str(tmp_path / "s2"),
                                 "--model", "yolov3-tiny", "--width", "0.125",
                                 "--anchors", str(data / "anchors.txt"), "--input-size",
                                 str(SIZE), "--epochs", "1", "--steps-per-epoch", "1",
                                 "--batch-size", "4", "--out", str(tmp_path / "student")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "student" / "manifest.json").read_text())
    assert manifest["teacher_backbone"] == "mobilenetv2"
    assert manifest["backbone"] == "darknet-tiny"

    report = tmp_path / "report.json"
    result = runner.invoke(app, ["eval-map", str(data / "data" / "val.json"),
                                 *_model_args(data), "--weights",
                                 str(tmp_path / "s2" / "best.weights.h5"),
                                 "--out", str(report)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(report.read_text())["stats"]) == 12


def _loaded_conv1(path):
    source = _mobilenet()
    source.load_weights(path)
    return source.get_layer("Conv1").get_weights()[0]
