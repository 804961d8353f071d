"""``detkit predict``: COCO results from images, folders and datasets."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.cli import app
from detkit.predict import (ImageItem, collect_images, detections_to_results, drawing_names,
                            draw_detections)

WIDTH = 0.125
SIZE = 64
runner = CliRunner()


def _write_image(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Three non-square images, 2-class tiny weights, a classes file."""
    import keras

    from detkit.models import build_model

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("predict")
    folder = root / "images"
    sizes = [(96, 48), (40, 80), (64, 64)]
    for i, (w, h) in enumerate(sizes):
        _write_image(folder / f"img{i}.png", w, h, i)
    model = build_model("yolov3-tiny", 2, width=WIDTH)
    weights = root / "tiny.weights.h5"
    model.save_weights(weights)
    classes = root / "classes.txt"
    classes.write_text("cat\ndog\n")
    return {"root": root, "folder": folder, "sizes": sizes, "weights": weights,
            "classes": classes}


def _args(ws, images, out, *extra):
    return ["predict", str(images), "--model", "yolov3-tiny", "--width", str(WIDTH),
            "--weights", str(ws["weights"]), "--input-size", str(SIZE),
            "--out", str(out), *extra]


def test_predict_folder_writes_coco_results(workspace, tmp_path):
    out = tmp_path / "dets.json"
    result = runner.invoke(app, _args(workspace, workspace["folder"], out, "--classes",
                                      str(workspace["classes"]), "--conf", "0",
                                      "--max-det", "7", "--batch-size", "2",
                                      "--draw-dir", str(tmp_path / "drawn")))
    assert result.exit_code == 0, result.output
    assert "3 images (folder)" in result.output and "wrote" in result.output
    dets = json.loads(out.read_text())
    assert len(dets) == 3 * 7  # conf 0: every image fills max_det
    assert {d["image_id"] for d in dets} == {0, 1, 2}
    assert {d["category_id"] for d in dets} <= {1, 2}
    for d in dets:
        assert set(d) == {"image_id", "category_id", "bbox", "score"}
        w, h = workspace["sizes"][d["image_id"]]
        x, y, bw, bh = d["bbox"]
        assert 0 <= x <= x + bw <= w + 0.01 and 0 <= y <= y + bh <= h + 0.01
        assert 0 <= d["score"] <= 1
    scores = [d["score"] for d in dets if d["image_id"] == 0]
    assert scores == sorted(scores, reverse=True)
    manifest = json.loads((tmp_path / "dets.json.manifest.json").read_text())
    assert manifest["command"] == "predict" and manifest["class_names"] == ["cat", "dog"]
    assert [im["id"] for im in manifest["images"]] == [0, 1, 2]
    drawn = sorted(p.name for p in (tmp_path / "drawn").iterdir())
    assert drawn == ["img0.jpg", "img1.jpg", "img2.jpg"]
    # drawings without a box (nothing reached --draw-conf) say so; with boxes, nothing
    for draw_conf, told in (("1", True), ("0", False)):
        result = runner.invoke(app, _args(workspace, workspace["folder"],
                                          tmp_path / f"d{draw_conf}.json", "--conf", "0",
                                          "--draw-dir", str(tmp_path / f"drawn{draw_conf}"),
                                          "--draw-conf", draw_conf))
        assert result.exit_code == 0, result.output
        found = len(json.loads((tmp_path / f"d{draw_conf}.json").read_text()))
        note = (f"no detection scored --draw-conf 1 or more (all {found} score below it): "
                f"the drawings show no boxes")
        assert (note in " ".join(result.output.split())) == told, result.output
        assert ("drawings show no boxes" in result.output) == told
    assert cv2.imread(str(tmp_path / "drawn" / "img1.jpg")).shape == (80, 40, 3)


def test_batch_size_does_not_change_results(workspace, tmp_path):
    outs = []
    for batch in ("1", "3"):
        out = tmp_path / f"b{batch}.json"
        result = runner.invoke(app, _args(workspace, workspace["folder"], out, "--conf",
                                          "0.001", "--batch-size", batch))
        assert result.exit_code == 0, result.output
        outs.append(json.loads(out.read_text()))
    assert len(outs[0]) == len(outs[1]) > 0
    for a, b in zip(outs[0], outs[1]):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)
        np.testing.assert_allclose(a["score"], b["score"], atol=1e-4)


def test_predict_on_dataset_uses_its_image_ids(workspace, tmp_path):
    from detkit.data.synth import make_synth_dataset

    data = make_synth_dataset(tmp_path / "synth", images=4, size=64, classes=2, seed=0,
                              val_fraction=0.5)
    gt = json.loads(data.val_json.read_text())
    out = tmp_path / "val_dets.json"
    result = runner.invoke(app, _args(workspace, data.val_json, out, "--conf", "0",
                                      "--max-det", "3"))
    assert result.exit_code == 0, result.output
    dets = json.loads(out.read_text())
    assert {d["image_id"] for d in dets} == {im["id"] for im in gt["images"]}
    assert {d["category_id"] for d in dets} <= {c["id"] for c in gt["categories"]}


def test_single_image(workspace, tmp_path):
    out = tmp_path / "one.json"
    result = runner.invoke(app, _args(workspace, workspace["folder"] / "img1.png", out,
                                      "--conf", "0", "--max-det", "2"))
    assert result.exit_code == 0, result.output
    assert [d["image_id"] for d in json.loads(out.read_text())] == [0, 0]
    assert "predict: 1 image (image), 2 detections" in result.output


def test_missing_images_path_exits_1(workspace, tmp_path):
    result = runner.invoke(app, _args(workspace, tmp_path / "nowhere", tmp_path / "o.json"))
    assert result.exit_code == 1
    assert "nowhere: no such image, folder or dataset" in result.output
    assert not (tmp_path / "o.json").exists()


def test_corrupt_image_is_named(workspace, tmp_path):
    folder = tmp_path / "imgs"
    _write_image(folder / "good.png", 32, 32, 0)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = runner.invoke(app, _args(workspace, folder, tmp_path / "o.json"))
    assert result.exit_code == 1
    assert "broken.jpg" in result.output and "cannot decode image" in result.output


def test_empty_folder(workspace, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, _args(workspace, tmp_path / "empty", tmp_path / "o.json"))
    assert result.exit_code == 1 and "no image files" in result.output


def test_missing_and_mismatched_weights(workspace, tmp_path):
    args = _args(workspace, workspace["folder"], tmp_path / "o.json")
    missing = runner.invoke(app, [a if a != str(workspace["weights"]) else
                                  str(tmp_path / "none.weights.h5") for a in args])
    assert missing.exit_code == 1 and "weights file not found" in missing.output
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    mismatch = runner.invoke(app, args + ["--classes", str(three)])
    assert mismatch.exit_code == 1
    assert "head_out_0" in mismatch.output and "number of classes (3)" in mismatch.output


@pytest.mark.parametrize("option, value, message", [
    ("--conf", "1.5", "--conf must be in [0, 1]"),
    ("--iou", "-0.1", "--iou must be in [0, 1]"),
    ("--max-det", "0", "--max-det must be >= 1"),
    ("--input-size", "100", "multiple of 32"),
    ("--model", "yolov9", "--model must be one of"),
])
def test_bad_options_exit_2(workspace, tmp_path, option, value, message):
    args = _args(workspace, workspace["folder"], tmp_path / "o.json")
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_no_weights_is_usage_error(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path)])
    assert result.exit_code == 2 and "--weights is required" in result.output


def test_detections_to_results_hand_computed():
    got = detections_to_results(7, np.float32([[1, 2, 11, 22.5]]), np.float32([0.123456]),
                                np.int32([1]), [5, 9])
    assert got == [{"image_id": 7, "category_id": 9, "bbox": [1.0, 2.0, 10.0, 20.5],
                    "score": 0.12346}]


def test_collect_images_and_drawing_names(workspace, tmp_path):
    single = collect_images(workspace["folder"] / "img0.png")
    assert single.kind == "image" and single.items == [
        ImageItem(workspace["folder"] / "img0.png", 0)]
    folder = collect_images(workspace["folder"])
    assert [i.path.name for i in folder.items] == ["img0.png", "img1.png", "img2.png"]
    names = drawing_names([ImageItem(Path("a/x.png"), 3), ImageItem(Path("b/x.jpg"), 4)])
    assert names == ["3_x.jpg", "4_x.jpg"]
    # an Ultralytics dataset file: its val split, here a folder of images without labels
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(f"train: train.txt\nval: {workspace['folder']}\nnames: [a]\n")
    val = collect_images(data_yaml)
    assert val.kind == "folder" and [i.path for i in val.items] == [i.path for i in
                                                                      folder.items]


def test_draw_detections_draws_inside_the_box():
    image = np.zeros((50, 60, 3), np.uint8)
    drawn = draw_detections(image, np.float32([[10, 20, 40, 45]]), np.float32([0.9]),
                            np.int32([0]), ["thing"])
    assert drawn.shape == image.shape and not np.shares_memory(drawn, image)
    assert drawn[45, 25].any() and drawn[20, 39].any()   # box edges
    assert drawn[17, 11].any()                            # label above the box
    assert not drawn[48:, 45:].any() and not drawn[25:40, 15:35].any()
    assert not image.any()


def test_only_confident_boxes_are_drawn():
    """Results keep every box above --conf (0.001, for mAP); drawings only those scoring
    at least --draw-conf (0.25 by default)."""
    image = np.zeros((50, 60, 3), np.uint8)
    boxes, classes = np.float32([[10, 20, 40, 45]]), np.int32([0])
    assert not draw_detections(image, boxes, np.float32([0.1]), classes, ["thing"]).any()
    assert draw_detections(image, boxes, np.float32([0.3]), classes, ["thing"]).any()
    assert draw_detections(image, boxes, np.float32([0.1]), classes, ["thing"],
                           min_score=0.05).any()


def test_compiled_and_eager_give_the_same_results(workspace, tmp_path):
    outs = {}
    for flag in ("--compile", "--no-compile"):
        out = tmp_path / f"{flag}.json"
        result = runner.invoke(app, _args(workspace, workspace["folder"], out, flag,
                                          "--batch-size", "2"))
        assert result.exit_code == 0, result.output
        assert ("keras compiled" if flag == "--compile" else "keras eager") in result.output
        outs[flag] = json.loads(out.read_text())
    assert len(outs["--compile"]) == len(outs["--no-compile"]) > 0
    for a, b in zip(outs["--compile"], outs["--no-compile"]):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)
        np.testing.assert_allclose(a["score"], b["score"], atol=1e-4)


def _write_video(path: Path, frames: int, width: int = 96, height: int = 64) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0,
                             (width, height))
    assert writer.isOpened()
    rng = np.random.default_rng(5)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    writer.release()
    return path


def test_video_streams_frames_and_writes_the_drawn_video(workspace, tmp_path):
    video = _write_video(tmp_path / "clip.avi", frames=5)
    out, drawn = tmp_path / "video.json", tmp_path / "drawn.avi"
    result = runner.invoke(app, _args(workspace, video, out, "--conf", "0", "--max-det",
                                      "2", "--batch-size", "2", "--save-video", str(drawn)))
    assert result.exit_code == 0, result.output
    assert "5 frames (video)" in result.output and "drawn video" in result.output
    dets = json.loads(out.read_text())
    assert sorted({d["image_id"] for d in dets}) == [0, 1, 2, 3, 4] and len(dets) == 10
    manifest = json.loads((tmp_path / "video.json.manifest.json").read_text())
    assert manifest["video"]["frames"] == 5 and manifest["video"]["width"] == 96
    capture = cv2.VideoCapture(str(drawn))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    # the drawn video has its manifest: the same command again replaces it; a video that
    # detkit did not make is refused
    assert json.loads((tmp_path / "drawn.avi.manifest.json").read_text())["command"] == \
        "predict"
    args = _args(workspace, video, out, "--conf", "0", "--max-det", "2", "--save-video")
    assert runner.invoke(app, [*args, str(drawn)]).exit_code == 0
    mine = tmp_path / "mine.avi"
    mine.write_bytes(b"the user's own video")
    result = runner.invoke(app, [*args, str(mine)])
    assert mine.read_bytes() == b"the user's own video"
    assert result.exit_code == 2 and "already exists and has no mine.avi.manifest.json" in \
        result.output, result.output

    # the same frames, decoded by OpenCV and given as images, give the same detections
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(video))
    for index in range(5):
        ok, frame = capture.read()
        assert ok
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame)
    capture.release()
    as_images = tmp_path / "frames.json"
    result = runner.invoke(app, _args(workspace, folder, as_images, "--conf", "0",
                                      "--max-det", "2", "--batch-size", "2"))
    assert result.exit_code == 0, result.output
    for a, b in zip(dets, json.loads(as_images.read_text())):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)


def test_video_usage_errors(workspace, tmp_path):
    out = tmp_path / "o.json"
    result = runner.invoke(app, _args(workspace, workspace["folder"], out, "--save-video",
                                      str(tmp_path / "x.mp4")))
    assert result.exit_code == 2 and "--save-video needs a video file" in result.output
    clip = _write_video(tmp_path / "c.avi", frames=2)
    result = runner.invoke(app, _args(workspace, clip, out, "--draw-dir", str(tmp_path)))
    assert result.exit_code == 2 and "--draw-dir takes images" in result.output
    result = runner.invoke(app, _args(workspace, clip, out, "--save-video",
                                      str(tmp_path / "drawn.gif")))
    assert result.exit_code == 2, result.output
    assert "drawn.gif: a drawn video is written as .mp4, .m4v, .mov, .mkv, .avi; not .gif" \
        in result.output.replace("\n", "")
    assert not list(tmp_path.glob("*.gif")) and not list(tmp_path.glob(".tmp-*"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 64)
    result = runner.invoke(app, _args(workspace, bad, out, "--save-video",
                                      str(tmp_path / "bad_drawn.mp4")))
    assert result.exit_code == 1 and "bad.mp4: cannot decode video" in result.output
    assert not out.exists() and not (tmp_path / "bad_drawn.mp4").exists()


def test_voc_data_naming_some_of_the_models_classes(workspace, tmp_path):
    """A VOC val set without one of the model's classes (a small split without a rare
    class) is read with the model's names: predict and eval-map run, the ids are the
    model's; an indexed dataset naming other classes is still refused, with the reason."""
    import shutil

    from detkit.artifacts import write_manifest

    weights = tmp_path / "w.weights.h5"
    shutil.copy(workspace["weights"], weights)
    write_manifest(weights, command="train", config={}, inputs=[],
                   extra={"model": "yolov3-tiny", "width": WIDTH, "input_size": SIZE,
                          "class_names": ["cat", "dog"]})
    voc = tmp_path / "voc"
    voc.mkdir()
    for i, (w, h) in enumerate(workspace["sizes"]):
        shutil.copy(workspace["folder"] / f"img{i}.png", voc / f"img{i}.png")
        (voc / f"img{i}.xml").write_text(
            f"<annotation><filename>img{i}.png</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size><object><name>dog</name>"
            f"<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>{w - 2}</xmax><ymax>{h - 2}</ymax>"
            f"</bndbox></object></annotation>")
    out = tmp_path / "dets.json"
    result = runner.invoke(app, ["predict", str(voc), "--weights", str(weights), "--out",
                                 str(out), "--conf", "0"])
    assert result.exit_code == 0, result.output
    assert {d["category_id"] for d in json.loads(out.read_text())} <= {1, 2}
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["eval-map", str(voc), "--weights", str(weights), "--out",
                                 str(report)])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["num_gt_boxes"] == 3
    # the manifests record the architecture that ran (the weights'), not the defaults
    for written in (out, report, report.with_name("report.detections.json")):
        config = json.loads(written.with_name(written.name + ".manifest.json").read_text()
                            )["config"]
        assert (config["model"], config["width"], config["input_size"],
                config["backbone"]) == ("yolov3-tiny", WIDTH, SIZE, None), written
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "classes.txt").write_text("dog\n")
    (lines / "train.txt").write_text(f"{workspace['folder'] / 'img0.png'} 2,2,50,40,0\n")
    result = runner.invoke(app, ["predict", str(lines / "train.txt"), "--weights",
                                 str(weights), "--out", str(tmp_path / "l.json")])
    assert result.exit_code == 1
    assert "a dataset's classes must be the weights' (a VOC or CSV dataset's may be some " \
           "of them)" in " ".join(result.output.split())
