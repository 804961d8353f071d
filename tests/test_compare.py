"""detkit compare: report parsing, table text, errors."""

import json

import pytest

from typer.testing import CliRunner

from detkit.cli import app


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_compare_table_from_coco_and_voc_reports(tmp_path):
    teacher = write(tmp_path / "teacher_report.json", {
        "AP": 0.61, "AP50": 0.9, "AR100": 0.66, "stats": [0.61] * 12,
        "model": {"name": "yolov3-tiny", "width": 0.5, "params": 2_000_000,
                  "weights_mb": 8.1, "ms_per_image": 12.5}})
    student = write(tmp_path / "student_report.json", {"metric": "voc07", "mAP": 0.75})
    out = tmp_path / "summary.txt"
    result = CliRunner().invoke(app, ["compare", str(teacher), str(student), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["run", "model", "width", "format", "AP", "dAP", "AP50",
                                "AR100", "params", "MB", "ms/img"]
    assert lines[2].split() == ["teacher", "yolov3-tiny", "0.5", "keras", "0.610", "+0.000",
                                "0.900", "0.660", "2,000,000", "8.10", "12.5"]
    assert lines[3].split() == ["student", "-", "-", "-", "-", "-", "0.750", "-", "-", "-",
                                "-"]
    assert "teacher" in result.output and "0.900" in result.output


def test_reports_of_the_same_name_are_told_apart_by_their_folders(tmp_path):
    """`compare fam/*/eval.json`: rows named yolov2/eval, rpn/eval, not eval twice."""
    paths = []
    for family in ("yolov2", "rpn"):
        (tmp_path / family).mkdir()
        paths.append(write(tmp_path / family / "eval.json", {"AP": 0.5, "AP50": 0.8}))
    paths.append(write(tmp_path / "teacher_report.json", {"AP": 0.4, "AP50": 0.7}))
    out = tmp_path / "summary.txt"
    result = CliRunner().invoke(app, ["compare", *map(str, paths), "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in out.read_text().splitlines()[2:]]
    assert names == ["yolov2/eval", "rpn/eval", "teacher"]


def test_compare_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["compare", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "report not found" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  oops")
    result = runner.invoke(app, ["compare", str(bad)])
    assert result.exit_code == 1 and "bad.json:2" in result.output
    other = write(tmp_path / "other.json", {"loss": 1})
    result = runner.invoke(app, ["compare", str(other)])
    assert result.exit_code == 1 and "not an eval-map report" in result.output


def test_compare_keras_and_its_exports(tmp_path):
    """eval-map reports of exports carry format and quantization; dAP is against the
    first report."""
    def report(name, ap, block):
        return write(tmp_path / f"{name}_report.json", {
            "AP": ap, "AP50": ap + 0.2, "model": {"name": "yolov3-tiny", "width": 0.25,
                                                  "weights_mb": 1.5, "ms_per_image": 9.0,
                                                  **block}})

    paths = [report("keras", 0.5, {"format": "keras", "params": 1000}),
             report("onnx", 0.5004, {"format": "onnx", "params": None}),
             report("int8", 0.4821, {"format": "tflite", "quantize": "int8",
                                     "weights_mb": 0.4, "ms_per_image": 4.25}),
             report("f16nms", 0.5, {"format": "tflite", "quantize": "float16",
                                    "nms": True})]
    out = tmp_path / "t.txt"
    result = CliRunner().invoke(app, ["compare", *map(str, paths), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[3].split()[3:6] == ["onnx", "0.500", "+0.000"]
    assert lines[4].split() == ["int8", "yolov3-tiny", "0.25", "tflite", "int8", "0.482",
                                "-0.018", "0.682", "-", "-", "0.40", "4.2"]
    assert lines[5].split()[3:6] == ["tflite", "float16", "nms"]       # decoding inside
    rows = json.loads((tmp_path / "t.txt.manifest.json").read_text())["rows"]
    assert rows[2]["delta_ap"] == pytest.approx(-0.0179)


@pytest.mark.parametrize("width, transposed", [(80, True), (160, False)])
def test_compare_table_keeps_every_value_readable_at_any_terminal_width(
        tmp_path, monkeypatch, width, transposed):
    """One row per report when it fits; on 80 columns one row per figure, one column per
    report, so that no model name or parameter count is cut to an ellipsis."""
    import io

    from rich.console import Console

    from detkit.cli import compare as compare_cli

    reports = [write(tmp_path / f"{name}_report.json", {
        "AP": 0.512, "AP50": 0.845, "model": {
            "name": "yolov2-tiny", "width": 0.1875, "params": 1_822_661, "format": fmt,
            "quantize": quantize, "weights_mb": 7.31, "ms_per_image": 12.25}})
        for name, fmt, quantize in (("teacher", "keras", None), ("int8", "tflite", "int8"))]
    console = Console(file=io.StringIO(), width=width)
    monkeypatch.setattr(compare_cli, "console", console)
    result = CliRunner().invoke(app, ["compare", *map(str, reports), "--out",
                                      str(tmp_path / "summary.txt")])
    assert result.exit_code == 0, result.output
    text = console.file.getvalue()
    lines = text.splitlines()
    assert "…" not in text and max(len(line) for line in lines) <= width
    assert "yolov2-tiny" in text and "1,822,661" in text
    header = lines[2].split()
    if transposed:
        assert header == ["teacher", "int8"]
        assert [line.split()[0] for line in lines[4:-1]] == [
            "model", "width", "format", "AP", "dAP", "AP50", "AR100", "params", "MB",
            "ms/img"]
    else:
        assert header[:3] == ["run", "model", "width"] and len(lines) == 3 + 1 + 2 + 1


def test_turned_compare_table_prints_report_names_as_written(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from detkit.cli import compare as compare_cli

    reports = [write(tmp_path / f"{name}_report.json", {
        "AP": 0.5, "AP50": 0.8, "model": {"name": "yolov2-tiny", "width": 0.25,
                                          "params": 1_822_661}})
        for name in ("b[@x]", "c[red]")]
    console = Console(file=io.StringIO(), width=60)
    monkeypatch.setattr(compare_cli, "console", console)
    result = CliRunner().invoke(app, ["compare", *map(str, reports), "--out",
                                      str(tmp_path / "summary.txt")])
    assert result.exit_code == 0, result.output
    assert console.file.getvalue().splitlines()[2].split() == ["b[@x]", "c[red]"]



def test_many_reports_on_a_narrow_terminal_are_shown_in_full_in_several_tables(
        tmp_path, monkeypatch):
    """Six reports on 80 columns: turned tables of as many reports as fit, every value in
    full (none cut, none left out)."""
    import io

    from rich.console import Console

    from detkit.cli import compare as compare_cli

    names = [f"run{i}_{fmt}" for i, fmt in enumerate(("keras", "saved", "tflite", "f16",
                                                      "int8", "onnx"))]
    reports = [write(tmp_path / f"{name}_report.json", {
        "AP": 0.512, "AP50": 0.845, "model": {
            "name": "yolov3-tiny", "width": 0.125, "params": 139_548, "format": "tflite",
            "quantize": "float16", "weights_mb": 0.31, "ms_per_image": 12.25}})
        for name in names]
    console = Console(file=io.StringIO(), width=80)
    monkeypatch.setattr(compare_cli, "console", console)
    result = CliRunner().invoke(app, ["compare", *map(str, reports)])
    assert result.exit_code == 0, result.output
    text = console.file.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert all(name in text for name in names)
    assert text.count("ms/img") >= 2 and text.count("139,548") == 6


def test_reports_that_do_not_compare_get_no_dap_and_a_warning(tmp_path):
    """dAP only between reports of the same metric and ground truth; the others are
    named in a warning."""
    def report(name, ap, gt, metric="coco", agnostic=False):
        body = {"AP": ap, "AP50": ap + 0.2, "metric": metric,
                "inputs": {"ground_truth": gt, "detections": "d.json"},
                "params": {"class_agnostic": agnostic}}
        if metric != "coco":
            body = {"mAP": ap, "metric": metric, "inputs": body["inputs"]}
        return write(tmp_path / f"{name}.json", body)

    paths = [report("a", 0.5, "data/val.json"), report("b", 0.4, "./data/val.json"),
             report("c", 0.3, "other/val.json"), report("d", 0.6, "data/val.json", "voc07"),
             report("e", 0.2, "data/val.json", agnostic=True)]
    out = tmp_path / "t.txt"
    result = CliRunner().invoke(app, ["compare", *map(str, paths), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "t.txt.manifest.json").read_text())["rows"]
    assert [row["delta_ap"] for row in rows][:3] == [0.0, pytest.approx(-0.1), None]
    output = " ".join(result.output.split())
    assert ("warning: c is scored on other ground truth than a (other/val.json and "
            "data/val.json): no dAP") in output
    assert ("warning: d is scored with --metric voc07, a with coco: their AP50 columns are "
            "different figures (no dAP)") in output
    assert rows[4]["delta_ap"] is None
    assert ("warning: e is scored class-agnostically (proposals: judge an rpn by its AR), a "
            "per class: no dAP") in output


def test_the_same_ground_truth_by_another_path_still_compares(tmp_path, monkeypatch):
    """Reports of eval-map record the ground truth as typed; their manifests hold its
    sha256: the same file reached by two paths keeps its dAP, an edited copy does not."""
    data = tmp_path / "data"
    data.mkdir()
    gt = data / "val.json"
    gt.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 8,
                                          "height": 8}],
                              "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                               "bbox": [1, 1, 4, 4]}],
                              "categories": [{"id": 1, "name": "cat"}]}))
    dets = data / "d.json"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4],
                                 "score": 0.9}]))
    edited = tmp_path / "edited.json"
    edited.write_text(gt.read_text().replace("[1, 1, 4, 4]", "[2, 2, 4, 4]"))
    runner = CliRunner()
    monkeypatch.chdir(data)
    for name, truth in (("a", "val.json"), ("b", str(gt)), ("c", str(edited))):
        result = runner.invoke(app, ["eval-map", truth, "--detections", "d.json", "--out",
                                     str(tmp_path / f"{name}.json")])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["compare", *(str(tmp_path / f"{n}.json") for n in "abc"),
                                 "--out", str(tmp_path / "t.txt")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "t.txt.manifest.json").read_text())["rows"]
    assert [row["delta_ap"] is None for row in rows] == [False, False, True]
    assert "c is scored on other ground truth than a" in " ".join(result.output.split())


def test_detections_beside_their_reports_are_skipped(tmp_path):
    """`compare ev/*.json` names the NAME.detections.json eval-map --weights writes beside
    NAME.json: they are skipped with a warning; detections given alone are refused."""
    for name in ("a", "b"):
        write(tmp_path / f"{name}.json", {"AP": 0.5, "AP50": 0.7})
        write(tmp_path / f"{name}.detections.json", [{"image_id": 1, "category_id": 1,
                                                      "bbox": [0, 0, 1, 1], "score": 0.5}])
    paths = sorted(str(p) for p in tmp_path.glob("*.json"))
    result = CliRunner().invoke(app, ["compare", *paths, "--out", str(tmp_path / "t.txt")])
    assert result.exit_code == 0, result.output
    assert f"skipped {tmp_path / 'a.detections.json'}: the detections of the report " \
           f"beside it" in " ".join(result.output.split())
    assert [line.split()[0] for line in (tmp_path / "t.txt").read_text().splitlines()[2:]] \
        == ["a", "b"]
    alone = tmp_path / "other.detections.json"
    alone.write_text((tmp_path / "a.detections.json").read_text())
    result = CliRunner().invoke(app, ["compare", str(alone)])
    assert result.exit_code == 1
    assert "detections (a COCO results list), not an eval-map report" in result.output
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a.detections.json")])
    assert result.exit_code == 2 and "no report.json among the files given" in result.output
