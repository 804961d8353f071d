"""``detkit eval-map``: COCO and VOC reports from the CLI, errors and exit codes."""

import json

import pytest
from typer.testing import CliRunner

from detkit.cli import app
from detkit.data.synth import make_synth_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny synthetic dataset and detections: every val box found once, plus one FP."""
    root = tmp_path_factory.mktemp("evalcli")
    make_synth_dataset(root / "data", images=12, size=64, classes=3, seed=1, val_fraction=0.5)
    gt = json.loads((root / "data" / "val.json").read_text())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 0.9} for a in gt["annotations"]]
    first = gt["annotations"][0]
    dets.append({"image_id": first["image_id"], "category_id": first["category_id"],
                 "bbox": [0, 0, 3, 3], "score": 0.2})
    (root / "dets.json").write_text(json.dumps(dets))
    return {"root": root, "gt": root / "data" / "val.json", "dets": root / "dets.json",
            "lines": root / "data" / "val.txt", "num_gt": len(gt["annotations"])}


def invoke(*args):
    return runner.invoke(app, ["eval-map", *map(str, args)])


def test_coco_report(dataset, tmp_path):
    out = tmp_path / "report.json"
    result = invoke(dataset["gt"], "--detections", dataset["dets"], "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["metric"] == "coco" and len(report["stats"]) == 12
    assert report["AP50"] == pytest.approx(1.0) and report["AR100"] == pytest.approx(1.0)
    assert report["stats"][0] == report["AP"]
    assert sum(entry["gt"] for entry in report["per_class"].values()) == dataset["num_gt"]
    assert sum(entry["tp"] for entry in report["per_class"].values()) == dataset["num_gt"]
    assert sum(entry["fp"] for entry in report["per_class"].values()) == 0
    assert report["f1_optimal"]["confidence"] == pytest.approx(0.9)
    assert out.with_name("report.json.manifest.json").exists()
    assert "AP50" in result.output and "F1-optimal confidence" in result.output


@pytest.mark.parametrize("metric", ["voc07", "voc12"])
def test_voc_report_from_lines_file(dataset, tmp_path, metric):
    """Ground truth as a keras-yolo3 lines file: category ids are class index + 1, image
    ids are record indices, so a COCO-json detections file is checked against those."""
    out = tmp_path / "voc.json"
    result = invoke(dataset["lines"], "--detections", dataset["dets"], "--metric", metric,
                    "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["metric"] == metric and report["mAP"] == pytest.approx(1.0)
    assert set(report["per_class"]) == {"circle", "rectangle", "triangle"}


def test_options_and_config(dataset, tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("iou-thresholds: '0.5,0.75'\nmax_dets: 1,5,20\nclass-agnostic: true\n")
    out = tmp_path / "r.json"
    result = invoke(dataset["gt"], "--detections", dataset["dets"], "--config", config,
                    "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["params"]["iou_thresholds"] == [0.5, 0.75]
    assert report["params"]["max_dets"] == [1, 5, 20] and report["params"]["class_agnostic"]
    assert list(report["per_class"]) == ["all"] and report["AP75"] > -1


def test_plots(dataset, tmp_path):
    pytest.importorskip("matplotlib")
    result = invoke(dataset["gt"], "--detections", dataset["dets"], "--out",
                    tmp_path / "r.json", "--plots", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    for name in ("pr_curve.png", "f1_curve.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("content,message", [
    ("[{\"image_id\": 1,", "invalid JSON"),
    ("[{\"image_id\": 424242, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}]",
     "unknown image id 424242"),
    ("[{\"image_id\": 0, \"category_id\": 77, \"bbox\": [0, 0, 1, 1], \"score\": 1}]",
     "unknown category id 77"),
    ("{\"x\": 1}", "expected a COCO results list"),
])
def test_bad_detections_exit_1(dataset, tmp_path, content, message):
    dets = tmp_path / "bad.json"
    dets.write_text(content)
    result = invoke(dataset["gt"], "--detections", dets, "--out", tmp_path / "r.json")
    assert result.exit_code == 1
    assert message in result.output and "bad.json" in result.output
    assert not (tmp_path / "r.json").exists()


def test_empty_detections_warn_and_score_zero(dataset, tmp_path):
    dets = tmp_path / "none.json"
    dets.write_text("[]")
    result = invoke(dataset["gt"], "--detections", dets, "--out", tmp_path / "r.json")
    assert result.exit_code == 0 and "no detections" in result.output
    assert json.loads((tmp_path / "r.json").read_text())["AP"] == 0


def test_empty_ground_truth_exit_1(tmp_path, dataset):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    result = invoke(gt, "--detections", dataset["dets"])
    assert result.exit_code == 1 and "no images" in result.output


@pytest.mark.parametrize("args,message", [
    (["--metric", "voc10"], "--metric must be one of"),
    (["--max-dets", "1,10"], "three increasing"),
    (["--iou-thresholds", "a:b"], "--iou-thresholds must be"),
    (["--metric", "voc07", "--iou", "1.5"], "--iou must be in"),
])
def test_bad_options_exit_2(dataset, args, message):
    result = invoke(dataset["gt"], "--detections", dataset["dets"], *args)
    assert result.exit_code == 2 and message in result.output


def test_needs_detections_or_model(dataset):
    result = invoke(dataset["gt"])
    assert result.exit_code == 2 and "give --detections" in result.output
    result = invoke(dataset["gt"], "--model", "yolov3-tiny")
    assert result.exit_code == 2 and "--model needs --weights" in result.output


@pytest.mark.slow
def test_model_mode_writes_detections(dataset, tmp_path):
    from detkit.models import build_model

    weights = tmp_path / "tiny.weights.h5"
    detector = build_model("yolov3-tiny", 3, width=0.125)
    detector.save_weights(weights)
    out = tmp_path / "report.json"
    result = invoke(dataset["gt"], "--model", "yolov3-tiny", "--width", "0.125",
                    "--weights", weights, "--input-size", "64", "--out", out)
    assert result.exit_code == 0, result.output
    written = tmp_path / "report.detections.json"
    assert isinstance(json.loads(written.read_text()), list)
    assert json.loads((tmp_path / "report.detections.json.manifest.json").read_text())[
        "command"] == "eval-map"                  # its own output: a re-run replaces it
    named = tmp_path / "named.json"
    again = ["--model", "yolov3-tiny", "--width", "0.125", "--weights", weights,
             "--input-size", "64", "--detections", named, "--out", tmp_path / "r2.json"]
    for _ in range(2):                           # make: the same command runs again
        result = invoke(dataset["gt"], *again)
        assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["inputs"]["detections"] == str(written)
    model = report["model"]
    assert (model["name"], model["width"]) == ("yolov3-tiny", 0.125)
    assert model["params"] == detector.count_params() and model["ms_per_image"] > 0
    assert model["weights_mb"] == round(weights.stat().st_size / 2**20, 3)


@pytest.mark.slow
def test_model_mode_scores_rpn_proposals_class_agnostic_up_to_1000(dataset, tmp_path):
    """--model rpn: proposals (NMS 0.7, up to 1000 an image) scored class-agnostic with
    AR@1/100/1000, without flags; the stats are named by their limits."""
    from collections import Counter

    from detkit.models import build_model

    weights = tmp_path / "rpn.weights.h5"
    build_model("rpn", 3, width=0.125, input_size=96).save_weights(weights)
    out = tmp_path / "report.json"
    result = invoke(dataset["gt"], "--model", "rpn", "--width", "0.125", "--weights",
                    weights, "--input-size", "96", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["params"]["class_agnostic"] is True
    assert report["params"]["max_dets"] == [1, 100, 1000]
    assert report["AR1000"] == report["stats"][8] and "AR10" not in report
    assert "AR1000" in result.output
    per_image = Counter(d["image_id"] for d in json.loads(
        (tmp_path / "report.detections.json").read_text()))
    assert 100 < max(per_image.values()) <= 1000      # more than predict's usual 100
    # The same proposals given as --detections: their manifest names the rpn, so they
    # are scored the same way (not against the first class alone), with a note.
    again = tmp_path / "again.json"
    result = invoke(dataset["gt"], "--detections", tmp_path / "report.detections.json",
                    "--out", again)
    assert result.exit_code == 0, result.output
    assert "proposals of --model rpn (its manifest), scored class-agnostic with max dets " \
           "1,100,1000" in " ".join(result.output.split())
    assert json.loads(again.read_text())["stats"] == report["stats"]
    result = invoke(dataset["gt"], "--detections", tmp_path / "report.detections.json",
                    "--metric", "voc07", "--out", tmp_path / "voc.json")
    assert result.exit_code == 2 and "--metric coco" in result.output, result.output


def test_voc_metric_is_refused_for_rpn_proposals(dataset, tmp_path):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"not read: the check comes first")
    result = invoke(dataset["gt"], "--model", "rpn", "--weights", weights, "--metric",
                    "voc07", "--out", tmp_path / "r.json")
    assert result.exit_code == 2 and "--metric coco" in result.output, result.output
    assert not (tmp_path / "r.json").exists()


def test_max_dets_sets_the_detections_predict_keeps(dataset, tmp_path):
    import dataclasses

    from detkit.commands import eval_map

    opts = eval_map.Options(data=dataset["gt"], model="rpn", max_dets="1,10,50",
                            weights=tmp_path / "w.weights.h5", out=tmp_path / "r.json")
    assert eval_map.predict_options(opts).max_det == 50
    assert eval_map.predict_options(dataclasses.replace(opts, max_dets=None)).max_det is None


def test_plots_without_matplotlib_is_a_clear_usage_error(dataset, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import now fails
    result = invoke(dataset["gt"], "--detections", dataset["dets"], "--plots", tmp_path)
    assert result.exit_code == 2 and "--plots needs matplotlib" in result.output


def test_iou_threshold_range_syntax(dataset, tmp_path):
    out = tmp_path / "r.json"
    result = invoke(dataset["gt"], "--detections", dataset["dets"], "--iou-thresholds",
                    "0.5:0.95:0.05", "--out", out)
    assert result.exit_code == 0, result.output
    default = tmp_path / "d.json"
    invoke(dataset["gt"], "--detections", dataset["dets"], "--out", default)
    assert json.loads(out.read_text())["stats"] == json.loads(default.read_text())["stats"]


def test_ultralytics_dataset_file_is_scored_on_its_val_split(dataset, tmp_path):
    data = dataset["gt"].parent
    names = (data / "classes.txt").read_text().split()
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text(f"path: {data}\ntrain: train.txt\nval: val.json\nnames: {names}\n")
    out = tmp_path / "report.json"
    result = invoke(yaml_file, "--detections", dataset["dets"], "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["AP50"] == pytest.approx(1.0)


def test_dataset_file_with_a_coco_val_split_keeps_its_areas(dataset, tmp_path):
    """A data.yaml whose val split is a COCO json is scored as that json: with its own
    ``area`` (the size ranges of APs/APm/APl) and ``iscrowd``, not the boxes' areas."""
    gt = json.loads(dataset["gt"].read_text())
    for annotation in gt["annotations"]:
        annotation["area"] = 100_000.0          # every object "large", whatever its box
    coco = tmp_path / "val.json"
    coco.write_text(json.dumps(gt))
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text("train: val.json\nval: val.json\n")
    reports = {}
    for name, data in (("direct", coco), ("yaml", yaml_file)):
        out = tmp_path / f"{name}.json"
        result = invoke(data, "--detections", dataset["dets"], "--out", out)
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(out.read_text())
    assert reports["yaml"]["stats"] == reports["direct"]["stats"]
    assert reports["yaml"]["stats"][3] == -1 and reports["yaml"]["stats"][5] > 0  # no small


def test_detections_of_other_images_are_refused(dataset, tmp_path):
    """predict records each image id's file in the detections' manifest: detections made
    on other images than the ground truth's under the same ids (a folder predicted by
    position) are refused rather than scored against the wrong boxes."""
    from detkit.artifacts import write_manifest

    gt = json.loads(dataset["gt"].read_text())
    images = [{"id": image["id"], "file_name": f"/elsewhere/{image['file_name']}"}
              for image in gt["images"]]
    dets = tmp_path / "dets.json"
    dets.write_text(dataset["dets"].read_text())
    write_manifest(dets, command="predict", config={}, inputs=[], extra={"images": images})
    same = invoke(dataset["gt"], "--detections", dets, "--out", tmp_path / "a.json")
    assert same.exit_code == 0, same.output                  # same files, other folders
    images[0]["file_name"], images[1]["file_name"] = (images[1]["file_name"],
                                                      images[0]["file_name"])
    write_manifest(dets, command="predict", config={}, inputs=[], extra={"images": images})
    swapped = invoke(dataset["gt"], "--detections", dets, "--out", tmp_path / "b.json")
    assert swapped.exit_code == 1, swapped.output
    first = gt["images"][0]
    expected = (f"the detections are of other images: image id {first['id']} is "
                f"{gt['images'][1]['file_name'].rsplit('/', 1)[-1]} in its manifest, "
                f"{first['file_name'].rsplit('/', 1)[-1]} in the ground truth "
                f"{dataset['gt']} (2 of {len(images)} ids differ)")
    assert expected in " ".join(swapped.output.split())
    assert not (tmp_path / "b.json").exists()


def test_detections_of_other_classes_are_refused(dataset, tmp_path):
    """predict records each category id's class name in the detections' manifest:
    detections whose ids name other classes than the ground truth's (the same names in
    another order) are refused rather than scored against another class's boxes; a
    class-agnostic evaluation does not look at classes."""
    from detkit.artifacts import write_manifest

    gt = json.loads(dataset["gt"].read_text())
    ids = [c["id"] for c in gt["categories"]]
    names = [c["name"] for c in gt["categories"]]
    dets = tmp_path / "dets.json"
    dets.write_text(dataset["dets"].read_text())
    write_manifest(dets, command="predict", config={}, inputs=[],
                   extra={"class_names": names, "category_ids": ids})
    same = invoke(dataset["gt"], "--detections", dets, "--out", tmp_path / "a.json")
    assert same.exit_code == 0, same.output
    write_manifest(dets, command="predict", config={}, inputs=[],
                   extra={"class_names": names[::-1], "category_ids": ids})
    other = invoke(dataset["gt"], "--detections", dets, "--out", tmp_path / "b.json")
    assert other.exit_code == 1, other.output
    assert (f"the detections are of other classes: category id {ids[0]} is "
            f"{names[-1]!r} in its manifest, {names[0]!r} in the ground truth "
            f"{dataset['gt']}") in " ".join(other.output.split())
    assert not (tmp_path / "b.json").exists()
    agnostic = invoke(dataset["gt"], "--detections", dets, "--class-agnostic", "--out",
                      tmp_path / "c.json")
    assert agnostic.exit_code == 0, agnostic.output
