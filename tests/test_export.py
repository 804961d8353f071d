"""``detkit export``: every family of the registry, raw and with NMS, in every format,
round-trips (the export's outputs equal the Keras model's, and ``predict`` on the export
finds what it finds on the Keras weights); quantized TF Lite; bad usage exits 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.cli import app
from detkit.families import FAMILIES

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

WIDTH = 0.0625
SIZE = 64
CLASSES = 2
FORMATS = {"saved_model": "_saved_model", "tflite": ".tflite", "onnx": ".onnx"}
#: Outputs of float32 exports against Keras: raw outputs, NMS boxes (input pixels; the
#: random weights make logits of tens, whose exp carries float32 differences of the
#: runtimes' kernels into boxes of a hundred pixels) and scores.
RAW_ATOL, RAW_RTOL = 1e-4, 1e-4
BOX_ATOL, BOX_RTOL = 1e-2, 5e-3
SCORE_ATOL = 1e-3
runner = CliRunner()


def _model_args(name):
    return ["--model", name, "--width", str(WIDTH), "--input-size", str(SIZE)]


class _Weights(dict):
    """Tiny random weights of a family, saved on first use (``weights[name]``)."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, name):
        import keras

        from detkit.models import build_model

        keras.utils.set_random_seed(1)
        path = self.root / f"{name}.weights.h5"
        build_model(name, CLASSES, WIDTH, SIZE).save_weights(path)
        self[name] = path
        return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A 2-class synth dataset and tiny random weights of any family."""
    from detkit.data.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("export")
    data = make_synth_dataset(root / "data", images=8, size=SIZE, classes=CLASSES, seed=0,
                              val_fraction=0.5)
    return {"root": root, "data": data, "weights": _Weights(root)}


@pytest.fixture(scope="module")
def keras_predictions(workspace):
    """``predict`` on each family's Keras weights over the val split (the reference)."""
    cache = {}

    def get(name):
        if name not in cache:
            out = workspace["root"] / f"{name}.keras.json"
            result = runner.invoke(app, ["predict", str(workspace["data"].val_json),
                                         *_model_args(name), "--weights",
                                         str(workspace["weights"][name]), "--out", str(out),
                                         "--classes", str(workspace["data"].classes_path),
                                         "--no-compile"])
            assert result.exit_code == 0, result.output
            cache[name] = json.loads(out.read_text())
        return cache[name]

    return get


def _inference_model(name, weights, nms):
    """The Keras model an export of ``weights`` must equal."""
    from detkit.export.graph import InferenceModel
    from detkit.families import get_family
    from detkit.models import build_model
    from detkit.models.weights import load_weights_by_name

    family = get_family(name)
    network = build_model(name, CLASSES, WIDTH, SIZE)
    load_weights_by_name(network, weights, strict=True)
    anchors, _ = family.resolve_anchors(None)
    return InferenceModel(network, family, anchors, SIZE, nms=nms)


def _canonical(results):
    """Results in one order whatever a runtime's top-k does with equal scores: the deep
    random networks saturate many scores at 1.0."""
    return sorted(results, key=lambda d: (d["image_id"], -round(d["score"], 3),
                                          d["category_id"], [round(v) for v in d["bbox"]]))


def _assert_same_detections(got, want, box_atol=0.05, score_atol=1e-4):
    """Two COCO results lists of one model: same images, classes, boxes and scores."""
    assert len(got) == len(want) > 0
    for a, b in zip(_canonical(got), _canonical(want)):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=box_atol)
        np.testing.assert_allclose(a["score"], b["score"], atol=score_atol)


def _export(workspace, name, fmt, *extra):
    nms = "--nms" in extra
    out = workspace["root"] / f"{name}{'.nms' if nms else ''}{FORMATS[fmt]}"
    result = runner.invoke(app, ["export", str(workspace["weights"][name]),
                                 *_model_args(name), "--format", fmt, "--out", str(out),
                                 "--classes", str(workspace["data"].classes_path), *extra])
    assert result.exit_code == 0, result.output
    return out, result


#: The family whose exports the benchmark measures: every format, raw and with NMS.
FULL_FAMILY = "yolov3-tiny"


def _round_trip_cases():
    """Every family raw and with NMS; the formats rotate over the other families (each
    format raw and with NMS among them), all formats for :data:`FULL_FAMILY`."""
    formats = sorted(FORMATS)
    cases = []
    for index, name in enumerate(sorted(FAMILIES)):
        for nms in (False, True):
            chosen = formats if name == FULL_FAMILY else [formats[(index + nms) % 3]]
            cases += [pytest.param(name, nms, fmt, id=f"{name}-{'nms' if nms else 'raw'}-"
                                                      f"{fmt}") for fmt in chosen]
    return cases


def _input_names(out: Path, fmt: str) -> list[str]:
    """The input names an app sees in the export, read by the runtime itself."""
    if fmt == "onnx":
        import onnxruntime

        return [item.name for item in onnxruntime.InferenceSession(str(out)).get_inputs()]
    if fmt == "tflite":
        from detkit.export.runtimes import tflite_interpreter

        signatures = tflite_interpreter(model_path=str(out)).get_signature_list()
        return list(signatures["serving_default"]["inputs"])
    import tensorflow as tf

    signature = tf.saved_model.load(str(out)).signatures["serving_default"]
    return list(signature.structured_input_signature[1])


@pytest.mark.parametrize("name, nms, fmt", _round_trip_cases())
def test_export_round_trip(workspace, keras_predictions, name, nms, fmt):
    from detkit.export.runtimes import open_runtime
    from detkit.export.settings import read_settings

    out, result = _export(workspace, name, fmt, *(["--nms"] if nms else []))
    assert f"as {fmt}" in result.output and "wrote" in result.output
    settings = read_settings(out)
    manifest = json.loads(Path(str(out) + ".manifest.json").read_text())
    assert manifest["command"] == "export" and manifest["export"]["input"]["dtype"] == "uint8"
    assert settings.model == name and settings.input_size == SIZE and settings.nms == nms
    assert settings.class_names == workspace["data"].class_names
    assert settings.format == fmt
    assert settings.weights_sha256 == manifest["inputs"][str(workspace["weights"][name])]
    assert _input_names(out, fmt) == ["images"]

    images = np.random.default_rng(3).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    got = open_runtime(out, fmt)(images)
    from keras import ops

    model = _inference_model(name, workspace["weights"][name], nms)
    want = {key: ops.convert_to_numpy(value) for key, value in model(images).items()}
    assert set(got) == set(want) == set(settings.outputs)
    if nms:
        np.testing.assert_array_equal(got["valid"], want["valid"])
        np.testing.assert_array_equal(got["classes"], want["classes"])
        np.testing.assert_allclose(got["boxes"], want["boxes"], atol=BOX_ATOL, rtol=BOX_RTOL)
        np.testing.assert_allclose(got["scores"], want["scores"], atol=SCORE_ATOL)
    else:
        for key in settings.outputs:
            assert got[key].shape == want[key].shape
            np.testing.assert_allclose(got[key], want[key], atol=RAW_ATOL, rtol=RAW_RTOL)

    dets = workspace["root"] / f"{out.name}.dets.json"
    result = runner.invoke(app, ["predict", str(workspace["data"].val_json), "--weights",
                                 str(out), "--out", str(dets), "--no-compile"])
    assert result.exit_code == 0, result.output
    assert f"run by {fmt}" in result.output
    _assert_same_detections(json.loads(dets.read_text()), keras_predictions(name))


@pytest.mark.parametrize("quantize, score_atol", [("float16", 0.02), ("int8", 0.2)])
def test_quantized_tflite_runs_in_predict_and_eval_map(workspace, quantize, score_atol):
    """float16 and int8 (calibrated on the training images) exports load and detect;
    their raw outputs stay near the float model's."""
    from detkit.export.runtimes import open_runtime

    name = "yolov3-tiny"
    out = workspace["root"] / f"tiny.{quantize}.tflite"
    args = ["export", str(workspace["weights"][name]), *_model_args(name), "--out",
            str(out), "--quantize", quantize]
    if quantize == "int8":
        args += ["--calibration", str(workspace["data"].train_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(Path(str(out) + ".manifest.json").read_text())
    assert manifest["export"]["quantize"] == quantize
    assert (manifest.get("calibration", {}).get("images", 0) > 0) == (quantize == "int8")
    assert out.stat().st_size < workspace["weights"][name].stat().st_size

    images = np.random.default_rng(4).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    got = open_runtime(out, "tflite")(images)
    from keras import ops

    model = _inference_model(name, workspace["weights"][name], False)
    for key, value in model(images).items():
        want = ops.convert_to_numpy(value)
        # objectness logits through a sigmoid: the scores a detection would carry
        np.testing.assert_allclose(_sigmoid(got[key][..., 4]), _sigmoid(want[..., 4]),
                                   atol=score_atol)

    report = workspace["root"] / f"{quantize}_report.json"
    result = runner.invoke(app, ["eval-map", str(workspace["data"].val_json), "--weights",
                                 str(out), "--out", str(report)])
    assert result.exit_code == 0, result.output
    block = json.loads(report.read_text())["model"]
    assert block["format"] == "tflite" and block["quantize"] == quantize
    assert block["nms"] is False                     # raw outputs, decoded by predict
    assert block["name"] == name and block["weights_mb"] > 0


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_compiled_postprocessing_of_a_raw_export_equals_eager(workspace, tmp_path):
    """A raw export's decoding + NMS compiled (default) and eager give the same results,
    and an NMS export is cut by predict's --conf and --max-det."""
    name = FULL_FAMILY
    raw = workspace["root"] / f"{name}.onnx"
    if not raw.exists():
        _export(workspace, name, "onnx")
    runs = {}
    for flag in ("--compile", "--no-compile"):
        out = tmp_path / f"{flag}.json"
        result = runner.invoke(app, ["predict", str(workspace["data"].val_json), "--weights",
                                     str(raw), "--out", str(out), flag])
        assert result.exit_code == 0, result.output
        runs[flag] = json.loads(out.read_text())
    _assert_same_detections(runs["--compile"], runs["--no-compile"])

    nms = workspace["root"] / f"{name}.nms.onnx"
    if not nms.exists():
        _export(workspace, name, "onnx", "--nms")
    out = tmp_path / "cut.json"
    scores = sorted((d["score"] for d in runs["--compile"]), reverse=True)
    # a threshold in the widest gap between two scores of the middle half (scores are
    # rounded to 5 decimals: a gap of 2e-5 leaves the true scores on their sides)
    middle = range(len(scores) // 4, 3 * len(scores) // 4)
    gap = max(middle, key=lambda i: scores[i] - scores[i + 1])
    assert scores[gap] - scores[gap + 1] >= 2e-5
    conf = (scores[gap] + scores[gap + 1]) / 2
    result = runner.invoke(app, ["predict", str(workspace["data"].val_json), "--weights",
                                 str(nms), "--out", str(out), "--conf", str(conf),
                                 "--max-det", "3", "--iou", "0.6"])
    assert result.exit_code == 0, result.output
    assert "--iou 0.6 is not used" in result.output
    dets = json.loads(out.read_text())
    want = [d for d in runs["--compile"] if d["score"] >= conf]
    per_image = {}
    for d in want:
        per_image.setdefault(d["image_id"], []).append(d)
    want = [d for image in per_image.values() for d in image[:3]]
    _assert_same_detections(dets, want)


def test_nms_export_notes_only_settings_the_user_gave(workspace, tmp_path):
    """An NMS export made with --conf 0.05 --iou 0.6: predict's defaults (conf 0.001, the
    family's IoU) are not the user's, so no note; typed ones it cannot honour are noted."""
    name = "yolov3-tiny"
    nms = tmp_path / "strict.onnx"
    made = runner.invoke(app, ["export", str(workspace["weights"][name]), *_model_args(name),
                               "--format", "onnx", "--out", str(nms), "--nms", "--conf",
                               "0.05", "--iou", "0.6", "--classes",
                               str(workspace["data"].classes_path)])
    assert made.exit_code == 0, made.output
    predict = ["predict", str(workspace["data"].val_json), "--weights", str(nms), "--out"]
    quiet = runner.invoke(app, [*predict, str(tmp_path / "quiet.json")])
    assert quiet.exit_code == 0, quiet.output
    assert "the export" not in quiet.output, quiet.output
    told = runner.invoke(app, [*predict, str(tmp_path / "told.json"), "--conf", "0.01",
                               "--iou", "0.5"])
    assert told.exit_code == 0, told.output
    assert "--conf 0.01 cannot bring back lower ones" in told.output, told.output
    assert "--iou 0.5 is not used" in told.output, told.output
    report = tmp_path / "strict_report.json"
    scored = runner.invoke(app, ["eval-map", str(workspace["data"].val_json), "--weights",
                                 str(nms), "--out", str(report)])
    assert scored.exit_code == 0, scored.output
    assert json.loads(report.read_text())["model"]["nms"] is True   # compare shows it


def test_export_default_out_and_flags_against_the_manifest(workspace, tmp_path):
    """(In a folder whose name TensorFlow would read as a glob pattern: ``run[1]``.)"""
    name = "yolov3-tiny"
    weights = tmp_path / "run[1]" / "best.weights.h5"
    weights.parent.mkdir()
    weights.write_bytes(workspace["weights"][name].read_bytes())
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    result = runner.invoke(app, ["export", str(weights), *_model_args(name), "--format",
                                 "saved_model", "--classes", str(classes)])
    assert result.exit_code == 0, result.output
    out = weights.with_name("best_saved_model")
    assert (out / "saved_model.pb").is_file()
    assert json.loads(Path(str(out) + ".manifest.json").read_text())["export"][
        "class_names"] == ["cat", "dog"]

    args = ["predict", str(workspace["data"].out_dir / "images"), "--weights", str(out),
            "--out", str(tmp_path / "d.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, args + ["--input-size", "96"])
    assert result.exit_code == 1 and "--input-size 96 disagrees with the export (64)" \
        in result.output
    result = runner.invoke(app, args + ["--input-size", "416"])       # typed: given
    assert result.exit_code == 1 and "--input-size 416 disagrees with the export (64)" \
        in result.output
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    result = runner.invoke(app, args + ["--classes", str(three)])
    assert result.exit_code == 1
    from detkit.export.settings import read_settings

    told = (f"the export has 2 classes {list(read_settings(out).class_names)}, {three} "
            f"names 3 ['a', 'b', 'c']: a dataset's classes must be the export's")
    assert "".join(told.split()) in "".join(result.output.split()), result.output

    orphan = tmp_path / "orphan.onnx"
    orphan.write_bytes(b"not a model")
    result = runner.invoke(app, args[:3] + [str(orphan), "--out", str(tmp_path / "o.json")])
    assert result.exit_code == 1 and "an export needs its manifest" in result.output


@pytest.mark.parametrize("extra, message", [
    (["--format", "pb"], "--format must be one of saved_model, tflite, onnx"),
    (["--format", "tflite", "--quantize", "int8"], "--quantize int8 needs --calibration"),
    (["--format", "tflite", "--quantize", "int8", "--nms", "--calibration", "x"],
     "--quantize int8 with --nms: the TF Lite converter quantizes the box slices"),
    (["--format", "onnx", "--quantize", "float16"], "--quantize applies to --format tflite"),
    (["--format", "tflite", "--out", "x.onnx"], "does not fit --format tflite"),
    ([], "give --format saved_model|tflite|onnx"),
    (["--format", "onnx", "--input-size", "100"], "multiple of 32"),
])
def test_bad_usage_exits_2(workspace, tmp_path, extra, message):
    weights = workspace["weights"]["yolov3-tiny"]
    before = sorted(p.name for p in workspace["root"].iterdir())
    result = runner.invoke(app, ["export", str(weights),
                                 "--model", "yolov3-tiny", "--width", str(WIDTH), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert sorted(p.name for p in workspace["root"].iterdir()) == before


def test_missing_extra_is_one_clear_line(workspace, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)      # import tf2onnx -> ImportError
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(workspace["weights"]["yolov3-tiny"]),
                                 *_model_args("yolov3-tiny"), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "needs the Python package 'tf2onnx'" in result.output
    assert "pip install 'detkit[export]'" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_missing_weights_exit_1(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "none.weights.h5"), "--format",
                                 "onnx"])
    assert result.exit_code == 1 and "weights file not found" in result.output


def test_out_onto_the_weights_is_refused(workspace):
    weights = workspace["weights"]["yolov3-tiny"]
    before = weights.read_bytes()
    result = runner.invoke(app, ["export", str(weights), *_model_args("yolov3-tiny"),
                                 "--format", "saved_model", "--out", str(weights)])
    assert result.exit_code == 2, result.output
    assert "--out would overwrite the input WEIGHTS" in result.output
    assert weights.read_bytes() == before
