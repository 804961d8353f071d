"""detkit compare: report parsing, table text, errors."""

import json

from typer.testing import CliRunner

from detkit.cli import app


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_compare_table_from_coco_and_voc_reports(tmp_path):
    teacher = write(tmp_path / "teacher_report.json", {
        "AP": 0.61, "AP50": 0.9, "stats": [0.61] * 12,
        "model": {"name": "yolov3-tiny", "width": 0.5, "params": 2_000_000,
                  "weights_mb": 8.1, "ms_per_image": 12.5}})
    student = write(tmp_path / "student_report.json", {"metric": "voc07", "mAP": 0.75})
    out = tmp_path / "summary.txt"
    result = CliRunner().invoke(app, ["compare", str(teacher), str(student), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["run", "model", "width", "AP", "AP50", "params", "MB", "ms/img"]
    assert lines[2].split() == ["teacher", "yolov3-tiny", "0.5", "0.610", "0.900", "2,000,000",
                                "8.10", "12.5"]
    assert lines[3].split() == ["student", "-", "-", "-", "0.750", "-", "-", "-"]
    assert "teacher" in result.output and "0.900" in result.output


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
