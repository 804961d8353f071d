"""CI smoke run of the demo chain (examples/demo.mk) on a tiny dataset and model.

The starting points sit in a temporary folder instead of examples/pretrained/: the
teacher's is the shipped width-0.125 model (copied), the student's (width 0.0625) is made
by the ``pretrained`` recipe (a tiny source dataset, one epoch), so the recipe runs for
real once; then synth -> kmeans-anchors -> encode-labels -> cache-bottlenecks (of the pretrained
body) -> train --stage 1 (bottlenecks) -> train --stage 2 -> distill (from the
student's pretrained start) -> eval-map (teacher, student) -> compare, each a Makefile
target; then checks every artifact, its manifest and the final report, and that a
second ``make`` has nothing to do.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["IMAGES=24", "SIZE=64", "WIDTH=0.125", "STUDENT_WIDTH=0.0625", "BATCH=8",
        "BOTTLENECK_EPOCHS=1", "EPOCHS=1", "DISTILL_EPOCHS=1", "SOURCE_IMAGES=24",
        "PRE_EPOCHS=1", "PRE_JIT="]
#: The starting points of the tiny settings: the shipped teacher's, the recipe's student's.
PRETRAINED = ["yolov3-tiny-w0.125.weights.h5", "yolov3-tiny-w0.0625.weights.h5"]

#: Every artifact of the chain, relative to the demo folder.
ARTIFACTS = ["anchors.txt", "labels.npz", "bottlenecks.h5", "stage1/best.weights.h5",
             "stage2/best.weights.h5", "student/best.weights.h5", "teacher_report.json",
             "student_report.json", "summary.txt"]


def make(demo: Path, *extra: str) -> subprocess.CompletedProcess:
    command = ["make", "-f", str(ROOT / "examples" / "demo.mk"), f"DEMO={demo}",
               f"PRETRAINED={demo.parent / 'pretrained'}",
               f"PRE_WORK={demo.parent / 'pretrain'}",
               f"DETKIT={sys.executable} -m detkit", *TINY, *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_demo_chain_end_to_end(tmp_path):
    demo = tmp_path / "demo"
    (tmp_path / "pretrained").mkdir()
    for name in (PRETRAINED[0], PRETRAINED[0] + ".manifest.json"):
        shutil.copy(ROOT / "examples" / "pretrained" / name, tmp_path / "pretrained" / name)
    pretrain = make(demo, "pretrained")
    assert pretrain.returncode == 0, pretrain.stdout[-3000:] + pretrain.stderr[-3000:]
    assert pretrain.stdout.count("detkit train") == 1       # the copied one is not rebuilt
    for name in PRETRAINED:
        path = tmp_path / "pretrained" / name
        assert path.is_file(), name
        manifest = json.loads(path.with_name(name + ".manifest.json").read_text())
        assert manifest["class_names"] == ["circle", "rectangle", "triangle", "cross",
                                           "star", "ring"]
        assert "train" in manifest["argv"]
    run = make(demo)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "pretrain" not in run.stdout.replace(str(tmp_path / "pretrained"), "")
    for name in ARTIFACTS:
        path = demo / name
        assert path.is_file() and path.stat().st_size > 0, name
        manifest = path.with_name(path.name + ".manifest.json")
        assert manifest.is_file(), f"no manifest for {name}"
        assert json.loads(manifest.read_text())["versions"]["detkit"]
    for name in ("teacher_report.json", "student_report.json"):
        report = json.loads((demo / name).read_text())
        assert len(report["stats"]) == 12 and 0 <= report["AP50"] <= 1
        assert report["model"]["params"] > 0
    cache = json.loads((demo / "bottlenecks.h5.manifest.json").read_text())
    assert cache["config"]["weights"] == str(tmp_path / "pretrained" / PRETRAINED[0])
    student_run = json.loads((demo / "student" / "manifest.json").read_text())
    assert student_run["config"]["weights"] == str(tmp_path / "pretrained" / PRETRAINED[1])
    teacher = json.loads((demo / "teacher_report.json").read_text())["model"]
    student = json.loads((demo / "student_report.json").read_text())["model"]
    assert student["params"] < teacher["params"]
    summary = (demo / "summary.txt").read_text().splitlines()
    assert summary[0].split()[:2] == ["run", "model"]
    assert [line.split()[0] for line in summary[2:]] == ["teacher", "student"]
    again = make(demo, "--question")
    assert again.returncode == 0, "a second make would rebuild: " + again.stdout
