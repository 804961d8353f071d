"""Loading ``.weights.h5`` files by layer name with shape checks."""

import numpy as np
import pytest

from detkit.errors import ArtifactError, ArtifactMismatchError
from detkit.models import build_model
from detkit.models.freeze import freeze
from detkit.models.weights import (file_layer_arrays, load_weights_by_name,
                                   model_layer_variables)

WIDTH = 0.125
SIZE = 64


def _randomize(model, seed):
    """Give every variable distinctive values, so copies can be told from inits."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.uniform(0.5, 1.5, tuple(variable.shape)).astype(np.float32))


@pytest.fixture(scope="module")
def coco_like_weights(tmp_path_factory):
    """A yolov3-tiny trained on "80 classes" (random values), saved by Keras."""
    model = build_model("yolov3-tiny", 80, width=WIDTH)
    _randomize(model, 0)
    path = tmp_path_factory.mktemp("w") / "coco.weights.h5"
    model.save_weights(path)
    return model, path


def test_file_and_model_name_paths_agree(coco_like_weights):
    model, path = coco_like_weights
    arrays = file_layer_arrays(path)
    variables = model_layer_variables(model)
    assert set(arrays) == set(variables)
    assert "body/conv1/conv" in arrays and "heads/head_out_0" in arrays
    for name, values in variables.items():
        assert [tuple(v.shape) for v in values] == [a.shape for a in arrays[name]]
        for variable, array in zip(values, arrays[name]):
            np.testing.assert_array_equal(np.asarray(variable), array)


def test_80_class_weights_into_3_class_model_keep_the_body(coco_like_weights):
    source, path = coco_like_weights
    target = build_model("yolov3-tiny", 3, width=WIDTH)
    fresh_head = np.array(target.get_layer("heads").get_layer("head_out_0").kernel)
    report = load_weights_by_name(target, path)

    assert sorted(s.path for s in report.skipped) == ["heads/head_out_0", "heads/head_out_1"]
    assert "(1, 1, 64, 255) in the file, (1, 1, 64, 24) in the model" in report.skipped[0].reason
    assert not report.missing and not report.unused and not report.complete
    assert len(report.loaded) == len(model_layer_variables(target)) - 2
    assert any(name.startswith("heads/neck0_1") for name in report.loaded)
    # Every body variable is copied; the class-dependent heads keep their init.
    for a, b in zip(source.get_layer("body").weights, target.get_layer("body").weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(
        np.asarray(target.get_layer("heads").get_layer("head_out_0").kernel), fresh_head)
    text = report.summary()       # one line: a start of another class count is expected
    assert report.output_convs_only() and "\n" not in text
    assert text.startswith(f"loaded {len(report.loaded)} layers")
    assert "skipped 2 output convs of another class count, which start fresh (" \
           "heads/head_out_0: kernel: shape (1, 1, 64, 255) in the file" in text


def test_same_architecture_round_trip_gives_same_outputs(coco_like_weights, tmp_path):
    source, path = coco_like_weights
    target = build_model("yolov3-tiny", 80, width=WIDTH)
    freeze(target, "body")  # loading into a frozen model works too
    report = load_weights_by_name(target, path, strict=True)
    assert report.complete and report.num_variables == len(target.weights)
    images = np.random.default_rng(1).uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    for a, b in zip(source(images), target(images)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_strict_mode_raises_on_skipped_layers(coco_like_weights):
    _, path = coco_like_weights
    target = build_model("yolov3-tiny", 3, width=WIDTH)
    with pytest.raises(ArtifactMismatchError, match="head_out_0"):
        load_weights_by_name(target, path, strict=True)


def test_other_width_matches_nothing_and_says_so(coco_like_weights):
    _, path = coco_like_weights
    target = build_model("yolov3-tiny", 80, width=1.0)
    before = [np.array(w) for w in target.weights]
    with pytest.raises(ArtifactMismatchError, match="another architecture or --width"):
        load_weights_by_name(target, path)
    for a, b in zip(before, target.weights):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_other_architecture_matches_nothing(coco_like_weights, tmp_path):
    _, tiny_path = coco_like_weights
    # yolov3 shares a few names (neck0_1, lateral1, head0_conv) but not their shapes.
    target = build_model("yolov3", 80, width=WIDTH)
    with pytest.raises(ArtifactMismatchError, match="no layer of model 'yolov3'"):
        load_weights_by_name(target, tiny_path)
    # weights whose manifest names what made them: the flags to pass
    from detkit.artifacts import write_manifest

    recorded = tmp_path / "tiny.weights.h5"
    recorded.write_bytes(tiny_path.read_bytes())
    write_manifest(recorded, command="train", config={}, inputs=[],
                   extra={"model": "yolov3-tiny", "width": WIDTH, "backbone": "darknet-tiny",
                          "input_size": SIZE})
    with pytest.raises(ArtifactMismatchError) as err:
        load_weights_by_name(target, recorded)
    assert err.value.message.endswith(
        "its manifest says it was saved from --model yolov3-tiny --width 0.125 "
        "--backbone darknet-tiny: pass those")


def test_variable_count_mismatch_is_skipped_not_crashing(tmp_path):
    import h5py

    model = build_model("yolov3-tiny", 2, width=WIDTH)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as handle:  # drop the BN's moving variance of conv1
        for name, group in handle["layers"].items():
            if "vars" in group and group["vars"].attrs.get("name") == "body":
                for key, layer in group["layers"].items():
                    if layer["vars"].attrs.get("name") == "conv1":
                        del layer["bn/vars/3"]
    report = load_weights_by_name(build_model("yolov3-tiny", 2, width=WIDTH), path)
    assert [s.path for s in report.skipped] == ["body/conv1/bn"]
    assert "3 variables in the file, 4 in the model" in report.skipped[0].reason


def test_missing_and_corrupt_files(tmp_path):
    model = build_model("yolov3-tiny", 2, width=WIDTH)
    with pytest.raises(ArtifactError, match="weights file not found"):
        load_weights_by_name(model, tmp_path / "nope.weights.h5")
    bad = tmp_path / "bad.weights.h5"
    bad.write_text("not hdf5")
    with pytest.raises(ArtifactError, match="not a readable HDF5") as info:
        load_weights_by_name(model, bad)
    assert str(bad) in str(info.value)
