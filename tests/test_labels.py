"""labels.npz: the encode-labels API and command, LabelsFile and its checks."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.anchors import default_anchors_path, load_anchors
from detkit.artifacts import manifest_path, save_npz
from detkit.cli import app
from detkit.commands.encode_labels import Options, run
from detkit.data.records import same_image_paths
from detkit.encode import EncodeStats, encode_yolov3
from detkit.errors import ArtifactError, ArtifactMismatchError
from detkit.labels import LabelsFile, load_labels, save_labels

ANCHORS9 = load_anchors(default_anchors_path("yolov3"))
ANCHORS6 = load_anchors(default_anchors_path("yolov3-tiny"))
runner = CliRunner()

#: (image file, width, height, boxes "x1,y1,x2,y2,class") of the hand-made dataset.
IMAGES = [
    ("a.png", 200, 100, ["10,10,50,60,0", "0,0,200,100,1", "150,20,190,95,2"]),
    ("b.png", 150, 300, ["10,20,140,290,1", "149,299,150,300,0"]),
    ("c.png", 64, 64, []),
    ("d.png", 120, 90, ["30,30,31,31,2", "1,2,119,88,0", "60,40,90,60,1"]),
]


@pytest.fixture()
def lines_dataset(tmp_path):
    """A keras-yolo3 lines dataset of tiny non-square PNGs, with classes.txt."""
    lines = []
    for name, width, height, boxes in IMAGES:
        cv2.imwrite(str(tmp_path / name), np.zeros((height, width, 3), np.uint8))
        lines.append(" ".join([name, *boxes]))
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    return tmp_path


def letterboxed(width, height, boxes, size):
    """Letterbox geometry written out: scale, int-truncated new size, centred offset (in
    float32 like the pipeline, so centres on cell borders round the same way)."""
    scale = min(size / width, size / height)
    new_w, new_h = int(width * scale), int(height * scale)
    dx, dy = (size - new_w) // 2, (size - new_h) // 2
    factor = np.float32([new_w / width, new_h / height] * 2)
    out = np.float32(boxes).reshape(-1, 4) * factor + np.float32([dx, dy, dx, dy])
    return np.clip(out, 0, size)


def expected_batch(indices, size, anchors):
    rows = max(len(IMAGES[i][3]) for i in indices)
    boxes = np.zeros((len(indices), rows, 4), np.float32)
    classes = np.full((len(indices), rows), -1, np.int32)
    for b, i in enumerate(indices):
        _, width, height, text = IMAGES[i]
        values = [[float(v) for v in t.split(",")] for t in text]
        if values:
            lb = letterboxed(width, height, [v[:4] for v in values], size)
            keep = np.all(lb[:, 2:] - lb[:, :2] >= 1, axis=1)
            boxes[b, :keep.sum()] = lb[keep]
            classes[b, :keep.sum()] = np.int32([v[4] for v in values])[keep]
    return encode_yolov3(boxes, classes, anchors, size)


@pytest.mark.parametrize("size, anchors", [(416, None), (128, "tiny")])
def test_api_dense_batch_equals_encoding_letterboxed_boxes(lines_dataset, size, anchors):
    anchors_path = default_anchors_path("yolov3-tiny") if anchors else None
    anchor_sizes = ANCHORS6 if anchors else ANCHORS9
    result = run(Options(data=lines_dataset / "train.txt", out=lines_dataset / "labels.npz",
                         anchors=anchors_path, input_size=size))
    assert result.num_images == 4
    labels = load_labels(result.out)
    assert labels.settings["input_size"] == size
    assert labels.settings["class_names"] == ["cat", "dog", "bird"]
    np.testing.assert_array_equal(labels.settings["anchors"], anchor_sizes)
    assert [Path(p).name for p in labels.image_paths] == ["a.png", "b.png", "c.png", "d.png"]
    for indices in ([0, 1, 2, 3], [3, 1], [2], [1, 1]):
        got = labels.dense_batch(indices)
        want = expected_batch(indices, size, anchor_sizes)
        assert len(got) == len(want) == len(anchor_sizes) // 3
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-6)
    # image c has no boxes: a negative, all empty
    for dense in labels.dense_batch([2]):
        assert dense[..., 4].sum() == 0 and np.all(dense[..., 5] == -1)
    assert labels.stats.assignments == result.num_rows == len(labels.rows["image"])


def test_tiny_boxes_after_letterbox_are_dropped_and_counted(lines_dataset):
    # d.png's 1x1 box shrinks below 1 px at input 64 (scale 64/120)
    result = run(Options(data=lines_dataset / "train.txt", out=lines_dataset / "l.npz",
                         input_size=64))
    assert result.letterbox.too_small >= 1
    assert result.stats.boxes + result.letterbox.too_small == result.num_boxes


def test_settings_and_image_checks(lines_dataset):
    out = lines_dataset / "labels.npz"
    run(Options(data=lines_dataset / "train.txt", out=out, input_size=416))
    labels = LabelsFile(out)
    labels.check_settings({"input_size": 416, "anchors": ANCHORS9,
                           "class_names": ["cat", "dog", "bird"]})
    with pytest.raises(ArtifactMismatchError, match="input_size"):
        labels.check_settings({"input_size": 320})
    with pytest.raises(ArtifactMismatchError, match="class_names"):
        load_labels(out, settings={"class_names": ["cat", "dog"]})
    labels.check_images(labels.image_paths)
    with pytest.raises(ArtifactMismatchError, match="4 images"):
        labels.check_images(labels.image_paths[:3])
    with pytest.raises(ArtifactMismatchError, match="image 1"):
        labels.check_images([labels.image_paths[0], "x.png", *labels.image_paths[2:]])
    # the same images spelled from another folder (absolute, or through ..) are the same
    labels.check_images([os.path.abspath(p) for p in labels.image_paths])
    labels.check_images([os.path.join("..", os.path.basename(os.getcwd()), p)
                         if not os.path.isabs(p) else p for p in labels.image_paths])
    with pytest.raises(IndexError):
        labels.dense_batch([4])
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["command"] == "encode-labels"
    assert manifest["settings"]["input_size"] == 416
    assert manifest["num_images"] == 4


def write_rows(path, **overrides):
    rows = {"image": [0, 1], "scale": [0, 2], "row": [3, 51], "col": [4, 0],
            "anchor": [7, 1], "xywh": np.full((2, 4), 0.1), "cls": [1, 0]}
    rows.update(overrides)
    return save_labels(path, rows, anchors=ANCHORS9, input_size=416, class_names=["a", "b"],
                       image_paths=["x.jpg", "y.jpg"], stats=EncodeStats())


def test_save_load_round_trip_sorts_rows(tmp_path):
    path = write_rows(tmp_path / "l.npz", image=[1, 0], scale=[2, 0], row=[51, 3],
                      col=[0, 4], anchor=[1, 7], cls=[0, 1])
    labels = LabelsFile(path)
    assert labels.rows["image"].tolist() == [0, 1]
    assert labels.rows["anchor"].tolist() == [7, 1]
    coarse, _, fine = labels.dense_batch([1, 0])
    np.testing.assert_allclose(coarse[1, 3, 4, 1], [0.1] * 4 + [1, 1], rtol=1e-6)
    np.testing.assert_allclose(fine[0, 51, 0, 1], [0.1] * 4 + [1, 0], rtol=1e-6)
    assert coarse[..., 4].sum() == 1 and fine[..., 4].sum() == 1


@pytest.mark.parametrize("override, message", [
    ({"row": [3, 52]}, "row out of range"),
    ({"anchor": [7, 4]}, "anchor out of range or not of its scale"),
    ({"image": [0, 2]}, "image index"),
    ({"xywh": np.full((2, 4), np.nan)}, "non-finite"),
])
def test_corrupt_rows_are_artifact_errors(tmp_path, override, message):
    path = write_rows(tmp_path / "bad.npz", **override)
    with pytest.raises(ArtifactError, match=message):
        LabelsFile(path)


def test_wrong_files_are_artifact_errors(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a readable"):
        LabelsFile(garbage)
    other = save_npz(tmp_path / "other.npz", {"x": np.zeros(2)}, kind="bottlenecks",
                     format_version=1)
    with pytest.raises(ArtifactError, match="expected a 'labels' file"):
        LabelsFile(other)
    with pytest.raises(ArtifactError, match="not found"):
        LabelsFile(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- the CLI

def test_cli_writes_labels_and_summary(lines_dataset):
    out = lines_dataset / "out" / "labels.npz"
    result = runner.invoke(app, ["encode-labels", str(lines_dataset / "train.txt"),
                                 "--classes", str(lines_dataset / "classes.txt"),
                                 "--input-size", "416", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "collisions: 0" in result.output
    assert "116x90" in result.output            # the anchor table
    assert f"wrote {out}" in result.output.replace("\n", "")
    assert out.is_file() and manifest_path(out).is_file()
    assert LabelsFile(out).num_images == 4


def test_cli_config_file_and_multi_anchor(lines_dataset):
    config = lines_dataset / "enc.yaml"
    config.write_text("input-size: 320\nmulti_anchor_iou: 0.2\n")
    out = lines_dataset / "labels.npz"
    result = runner.invoke(app, ["encode-labels", str(lines_dataset / "train.txt"),
                                 "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    labels = LabelsFile(out)
    assert labels.settings["input_size"] == 320
    assert labels.stats.assignments > labels.stats.assigned   # extra anchors were used


@pytest.mark.parametrize("args, code, message", [
    (["--input-size", "100"], 2, "multiple of 32"),
    (["--multi-anchor-iou", "1.5"], 2, "between 0 and 1"),
    (["--model", "resnet"], 2, "--model must be one of"),
    (["--format", "nope"], 2, "unknown dataset format"),
])
def test_cli_bad_options_exit_2(lines_dataset, args, code, message):
    result = runner.invoke(app, ["encode-labels", str(lines_dataset / "train.txt"),
                                 "--out", str(lines_dataset / "l.npz"), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (lines_dataset / "l.npz").exists()


def test_cli_bad_inputs_exit_1(lines_dataset):
    result = runner.invoke(app, ["encode-labels", str(lines_dataset / "missing.txt")])
    assert result.exit_code == 1 and "dataset not found" in result.output
    anchors = lines_dataset / "anchors.txt"
    anchors.write_text("10,13, 16,abc\n")
    result = runner.invoke(app, ["encode-labels", str(lines_dataset / "train.txt"),
                                 "--anchors", str(anchors)])
    assert result.exit_code == 1 and "anchors.txt:1" in result.output
    (lines_dataset / "bad.txt").write_text("a.png 1,2,3,4,9\n")
    result = runner.invoke(app, ["encode-labels", str(lines_dataset / "bad.txt"),
                                 "--classes", str(lines_dataset / "classes.txt"),
                                 "--out", str(lines_dataset / "l.npz")])
    assert result.exit_code == 1 and "class id 9" in result.output
    assert "Traceback" not in result.output


def test_cli_on_synthetic_dataset(tmp_path):
    synth = pytest.importorskip("detkit.data.synth")
    data = synth.make_synth_dataset(tmp_path / "synth", images=6, size=96, classes=3,
                                    seed=1, val_fraction=0.34)
    del data
    train = tmp_path / "synth" / "train.txt"
    out = tmp_path / "labels.npz"
    result = runner.invoke(app, ["encode-labels", str(train), "--input-size", "96",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    labels = LabelsFile(out)
    assert labels.num_images == len(train.read_text().splitlines())
    assert labels.settings["class_names"] == \
        (tmp_path / "synth" / "classes.txt").read_text().split()
    batch = labels.dense_batch(range(labels.num_images))
    assert [b.shape for b in batch] == [(labels.num_images, g, g, 3, 6) for g in (3, 6, 12)]
    assert sum(int(b[..., 4].sum()) for b in batch) == labels.stats.assignments > 0


def test_same_image_paths_tolerates_spellings_not_other_files():
    a = ["data/img/a.jpg", "data/img/b.jpg"]
    assert same_image_paths(a, a) is None
    assert same_image_paths(a, ["/w/data/img/a.jpg", "../data/img/b.jpg"]) is None
    assert same_image_paths(["/w/data/img/a.jpg"], ["img/a.jpg"]) is None
    assert same_image_paths(["./data//img/a.jpg"], ["data/img/a.jpg"]) is None
    assert same_image_paths(a, ["data/img/a.jpg", "data/img/c.jpg"]) == 1
    assert same_image_paths(a, ["other/img/a.jpg", "data/img/b.jpg"]) == 0
    assert same_image_paths(a, a[:1]) == 1
