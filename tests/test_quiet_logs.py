"""The command line hides TensorFlow's C++ log lines and passes every other line on; its
stderr holds no empty lines and a mistyped command gets a suggestion."""

import functools
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from detkit.cli import app
from detkit.cli._quiet import is_library_noise

SCRIPT = """
import os, sys
from detkit.cli._imports import skip_pyplot_in_keras
from detkit.cli._quiet import quiet_library_logs
quiet_library_logs()
skip_pyplot_in_keras()
import keras
keras.ops.convert_to_numpy(keras.ops.ones(3) * 2)   # TensorFlow starts: its banner lines
print("python line", file=sys.stderr)
os.write(2, b"I0000 00:00:1796.5 123 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"C line\\n")
print("matplotlib after keras:", "matplotlib" in sys.modules)
from keras.src.visualization import plot_image_gallery
print("keras gallery's pyplot:", plot_image_gallery.plt)
import matplotlib.pyplot
print("pyplot importable:", callable(matplotlib.pyplot.figure))
"""


@functools.lru_cache(maxsize=None)
def _run(verbose: bool) -> subprocess.CompletedProcess:
    """The script's run, with ``DETKIT_VERBOSE=1`` or without the variable."""
    env = {k: v for k, v in os.environ.items() if k != "DETKIT_VERBOSE"}
    if verbose:
        env["DETKIT_VERBOSE"] = "1"
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, check=True)


def _stderr(verbose: bool) -> str:
    return _run(verbose).stderr


def test_keras_starts_without_pyplot_and_pyplot_stays_importable():
    """Keras' galleries import matplotlib.pyplot at start-up (~1 s); the CLI hides it
    from them only, and the process imports it later as usual."""
    assert _run(False).stdout.splitlines() == [
        "matplotlib after keras: False", "keras gallery's pyplot: None",
        "pyplot importable: True"]


def test_library_lines_are_dropped_and_others_kept():
    assert _stderr(verbose=False).splitlines() == ["python line", "C line"]


def test_verbose_shows_them():
    stderr = _stderr(verbose=True)
    assert "oneDNN custom operations are on" in stderr
    assert "C line" in stderr


def test_noise_pattern():
    assert is_library_noise(b"W0000 00:00:1733.1 99 cuda_dnn.cc:8310] Unable to register")
    assert is_library_noise(b"WARNING: All log messages before absl::InitializeLog() is called")
    assert is_library_noise(b"2026-12-01 16:45:59.123456: I tensorflow/core/util/port.cc:113]"
                            b" oneDNN custom operations are on")
    assert not is_library_noise(b"error: data.txt:3: bad box")
    assert not is_library_noise(b"I0000 is a name")
    # TF Lite's, OpenCV's and FFmpeg's own lines (detkit names an unreadable video itself)
    for line in (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
                 b"[ WARN:0@1.234] global cap_ffmpeg_impl.hpp:1542 open Could not open",
                 b"OpenCV: FFMPEG: tag 0x7634706d/'mp4v' is not supported with codec id 12",
                 b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55e6c0692d80] moov atom not found",
                 b"[webm @ 0x55635b5d41c0] Only VP8 or VP9 or AV1 video",
                 b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
                 b"output_inference_type: FLOAT32"):
        assert is_library_noise(line), line
    assert not is_library_noise(b"INFO: my own message")
    assert not is_library_noise(b"[raccoon] 3 boxes")


def test_jax_is_skipped_only_under_the_tensorflow_backend(monkeypatch):
    """TensorFlow imports JAX at start-up when it is installed; the CLI marks it absent
    under KERAS_BACKEND=tensorflow only (keras.json may name JAX otherwise)."""
    from detkit.cli._imports import skip_jax_under_tensorflow

    missing = object()
    saved = sys.modules.pop("jax", missing)
    try:
        for backend, skipped in (("tensorflow", True), ("jax", False), (None, False)):
            sys.modules.pop("jax", None)
            if backend is None:
                monkeypatch.delenv("KERAS_BACKEND", raising=False)
            else:
                monkeypatch.setenv("KERAS_BACKEND", backend)
            skip_jax_under_tensorflow()
            assert ("jax" in sys.modules and sys.modules["jax"] is None) == skipped, backend
        sys.modules["jax"] = imported = object()    # already imported: left alone
        monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
        skip_jax_under_tensorflow()
        assert sys.modules["jax"] is imported
    finally:
        sys.modules.pop("jax", None)
        if saved is not missing:
            sys.modules["jax"] = saved


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 6-image, 64 px, 2-class synth dataset."""
    from detkit.data.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("quiet")
    return make_synth_dataset(root / "data", images=6, size=64, classes=2, seed=0,
                              val_fraction=0.34)


def test_int8_export_prints_no_converter_lines(dataset, tmp_path):
    """The TF Lite calibrator prints its settings (``fully_quantize: 0, ...``) from C++."""
    import keras

    from detkit.models import build_model

    keras.utils.set_random_seed(1)
    weights = tmp_path / "tiny.weights.h5"
    build_model("yolov3-tiny", 2, 0.0625, 32).save_weights(weights)
    env = {k: v for k, v in os.environ.items() if k != "DETKIT_VERBOSE"}
    run = subprocess.run(
        [sys.executable, "-m", "detkit", "export", str(weights), "--model", "yolov3-tiny",
         "--width", "0.0625", "--input-size", "32", "--classes", str(dataset.classes_path),
         "--format", "tflite", "--quantize", "int8", "--calibration",
         str(dataset.train_path), "--calibration-images", "2",
         "--out", str(tmp_path / "q.tflite")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "fully_quantize" not in run.stderr
    assert "" not in run.stderr.splitlines(), repr(run.stderr)


def test_a_warning_leaves_no_empty_stderr_lines(dataset, tmp_path):
    """Off a terminal the progress bars show nothing (Rich would end them with an empty
    line); the warning itself stays."""
    anchors = tmp_path / "anchors.txt"
    runner = CliRunner()
    fit = runner.invoke(app, ["kmeans-anchors", str(dataset.train_path), "--k", "6",
                              "--input-size", "96", "--out", str(anchors)])
    assert fit.exit_code == 0, fit.output
    result = runner.invoke(app, ["encode-labels", str(dataset.train_path),
                                 "--model", "yolov3-tiny", "--anchors", str(anchors),
                                 "--input-size", "64", "--out", str(tmp_path / "l.npz")])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: "), result.stderr
    assert "fitted at input 96" in result.stderr
    assert "" not in result.stderr.splitlines(), repr(result.stderr)


def test_mistyped_command_gets_a_suggestion():
    result = CliRunner().invoke(app, ["kmeans-anchor", "x"], prog_name="detkit")
    assert result.exit_code == 2
    assert result.output == ("error: No such command 'kmeans-anchor'; did you mean "
                             "'kmeans-anchors'? (see 'detkit --help')\n")
    result = CliRunner().invoke(app, ["frobnicate"], prog_name="detkit")
    assert result.output == "error: No such command 'frobnicate' (see 'detkit --help')\n"
