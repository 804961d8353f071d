"""``eval-map --model``: the model's detections never overwrite a file the user gave.

With ``--model``, ``--detections`` names where the model's detections go. An existing
file there (the user's own detections, or another run's) is refused (exit 2, before the
model runs) unless ``--exist-ok``; a detections path that is an input is refused even
with ``--exist-ok``. Every case checks that the inputs are byte-identical afterwards.
"""

import json
import os

import pytest
from typer.testing import CliRunner

from detkit.cli import app

runner = CliRunner()

GT = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 16],
                       "area": 320, "iscrowd": 0}],
      "categories": [{"id": 1, "name": "thing"}]}
MINE = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 16], "score": 0.9}]


@pytest.fixture
def files(tmp_path):
    gt = tmp_path / "val.json"
    gt.write_text(json.dumps(GT))
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(MINE))
    # Never loaded: every refusal comes before the model is built.
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"not really weights")
    return {"gt": gt, "mine": mine, "weights": weights, "root": tmp_path}


def _snapshot(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def _eval_model(files, *args):
    return runner.invoke(app, ["eval-map", str(files["gt"]), "--model", "yolov3-tiny",
                               "--width", "0.125", "--weights", str(files["weights"]),
                               "--input-size", "64", *map(str, args)])


def test_existing_detections_are_refused(files):
    before = _snapshot(files["root"])
    out = files["root"] / "report.json"
    result = _eval_model(files, "--detections", files["mine"], "--out", out)
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("error:"), result.output
    assert f"--detections {files['mine']} already exists" in result.output
    assert "--exist-ok" in result.output
    assert _snapshot(files["root"]) == before and not out.exists()


@pytest.mark.parametrize("link", ["same-path", "symlink"])
def test_detections_that_are_an_input_are_refused_even_with_exist_ok(files, link):
    target = files["gt"]
    if link == "symlink":
        target = files["root"] / "dets.json"
        os.symlink(files["gt"], target)
    before = _snapshot(files["root"])
    result = _eval_model(files, "--detections", target, "--exist-ok",
                         "--out", files["root"] / "report.json")
    assert result.exit_code == 2, result.output
    assert "--detections would overwrite the input DATA" in result.output
    assert _snapshot(files["root"]) == before


def test_detections_file_is_still_an_input_without_model(files):
    """Without --model, --detections is read: an existing file is what it expects."""
    out = files["root"] / "report.json"
    result = runner.invoke(app, ["eval-map", str(files["gt"]), "--detections",
                                 str(files["mine"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(files["mine"].read_text()) == MINE and out.exists()


@pytest.mark.slow
def test_exist_ok_replaces_the_detections(files):
    import cv2
    import numpy as np

    from detkit.models import build_model

    cv2.imwrite(str(files["root"] / "a.jpg"), np.full((48, 64, 3), 90, np.uint8))
    build_model("yolov3-tiny", 1, width=0.125).save_weights(files["weights"])
    out = files["root"] / "report.json"
    refused = _eval_model(files, "--detections", files["mine"], "--out", out)
    assert refused.exit_code == 2 and json.loads(files["mine"].read_text()) == MINE
    result = _eval_model(files, "--detections", files["mine"], "--out", out, "--exist-ok")
    assert result.exit_code == 0, result.output
    written = json.loads(files["mine"].read_text())
    assert isinstance(written, list) and written != MINE
    assert json.loads(out.read_text())["inputs"]["detections"] == str(files["mine"])
