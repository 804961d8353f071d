"""Bad input, table-driven: each case runs the CLI on a tiny dataset made here and asserts
the exit code, a fragment of the message, and that every input file is byte-identical
afterwards (nothing is lost or rewritten)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.cli import app

BOM = "\ufeff"
#: Images of the datasets below: (name, width, height).
IMAGES = (("a.png", 64, 48), ("b.png", 40, 40))
#: Boxes of distinct sizes, xyxy pixels and class, per image (enough for ``--k 2``).
BOXES = {"a.png": [(2, 3, 30, 20, 0), (10, 10, 60, 44, 1)],
         "b.png": [(0, 0, 12, 30, 1), (5, 5, 38, 15, 0)]}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _images(folder: Path) -> None:
    for name, width, height in IMAGES:
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / name), np.full((height, width, 3), 90, np.uint8))


def _lines_file(root: Path, prefix: str = "") -> Path:
    """keras-yolo3 lines of :data:`BOXES` (images in ``root/imgs``)."""
    _images(root / "imgs")
    lines = [f"imgs/{name} " + " ".join(",".join(map(str, box)) for box in BOXES[name])
             for name, _, _ in IMAGES]
    return _write(root / "train.txt", prefix + "\n".join(lines) + "\n")


def _normalized_lines(root: Path) -> Path:
    """:func:`_lines_file` with every box divided by its image's size."""
    _images(root / "imgs")
    lines = [f"imgs/{name} " + " ".join(
        f"{x1 / w:.3f},{y1 / h:.3f},{x2 / w:.3f},{y2 / h:.3f},{c}"
        for x1, y1, x2, y2, c in BOXES[name]) for name, w, h in IMAGES]
    return _write(root / "train.txt", "\n".join(lines) + "\n")


def _coco(root: Path, prefix: str = "") -> Path:
    """A COCO json of :data:`BOXES` with categories ``cat`` (1) and ``dog`` (2)."""
    images, annotations = [], []
    for image_id, (name, width, height) in enumerate(IMAGES, start=1):
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for x1, y1, x2, y2, cls in BOXES[name]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cls + 1, "iscrowd": 0,
                                "bbox": [x1, y1, x2 - x1, y2 - y1]})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    return _write(root / "gt.json", prefix + json.dumps(data, indent=1))


def _yolo_pixels(root: Path) -> Path:
    """A YOLO txt folder whose labels are in pixels (cx cy w h), not fractions."""
    _images(root / "ds" / "images")
    for name, _, _ in IMAGES:
        rows = [f"{c} {(x1 + x2) / 2:g} {(y1 + y2) / 2:g} {x2 - x1} {y2 - y1}"
                for x1, y1, x2, y2, c in BOXES[name]]
        _write(root / "ds" / "labels" / Path(name).with_suffix(".txt"), "\n".join(rows) + "\n")
    return root / "ds"


def _anchors(root: Path) -> Path:
    return _write(root / "anchors.txt", "10,14, 23,27, 37,58, 81,82, 135,169, 344,319\n")


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``args(root)`` makes the inputs under ``root`` and returns argv.

    ``message`` may name ``{root}``. ``patch(monkeypatch, root)`` sets up a fault (a
    full disk) and may return a cleanup; ``changes`` are files under ``root`` the command
    may remove (a stale lock, an interrupted run's temporary file); ``check(root)`` makes
    further assertions afterwards.
    """

    id: str
    args: Callable[[Path], list[str]]
    exit_code: int
    message: str
    patch: Optional[Callable[[pytest.MonkeyPatch, Path], Optional[Callable[[], None]]]] = None
    changes: tuple[str, ...] = ()
    check: Optional[Callable[[Path], None]] = None


def _kmeans(data: Path, root: Path, *extra: str) -> list[str]:
    return ["kmeans-anchors", str(data), "--k", "2", "--input-size", "64",
            "--out", str(root / "out" / "anchors.txt"), *extra]


def _config(root: Path, text: str) -> list[str]:
    return _kmeans(_lines_file(root), root, "--config", str(_write(root / "cfg.yaml", text)))


CASES = [
    Case("yolo-labels-in-pixels", lambda r: _kmeans(_yolo_pixels(r), r), 1,
         "a.txt:1: label values 16 11.5 28 17 look like pixel coordinates"),
    Case("yolo-labels-in-pixels-encode",
         lambda r: ["encode-labels", str(_yolo_pixels(r)), "--anchors", str(_anchors(r)),
                    "--model", "yolov3-tiny", "--input-size", "64",
                    "--out", str(r / "out" / "labels.npz")], 1,
         "look like pixel coordinates"),
    Case("lines-file-in-normalized-coordinates",
         lambda r: ["encode-labels", str(_normalized_lines(r)), "--anchors", str(_anchors(r)),
                    "--model", "yolov3-tiny", "--input-size", "64",
                    "--out", str(r / "out" / "labels.npz")], 1,
         "{root}/train.txt: every box lies within [0, 1] pixels of its image: the "
         "coordinates look normalized (fractions of the image size); this format takes "
         "pixels"),
    Case("lines-file-with-bom", lambda r: _kmeans(_lines_file(r, BOM), r), 0,
         "anchors for 4 boxes"),
    Case("coco-json-with-bom", lambda r: _kmeans(_coco(r, BOM), r), 0, "anchors for 4 boxes"),
    Case("classes-file-with-bom",
         lambda r: _kmeans(_coco(r), r, "--classes",
                           str(_write(r / "names.txt", BOM + "dog\ncat\n"))), 0,
         "anchors for 4 boxes"),
    Case("lines-file-image-path-with-a-space",
         lambda r: _kmeans(_write(r / "t.txt", "my imgs/c.jpg 1,1,50,50,0\n"), r), 1,
         "{root}/t.txt:1: malformed box 'imgs/c.jpg': expected x1,y1,x2,y2,class (a space "
         "in the image path? the fields of a line are separated by spaces, so a path cannot "
         "hold one)"),
    Case("data-yaml-with-a-syntax-error",
         lambda r: _kmeans(_write(r / "data.yaml", "train: images\nval: [images\n"
                                                    "names: [cat]\n"), r), 1,
         "{root}/data.yaml:3: invalid YAML: expected ',' or ']', but got ':'"),
    Case("kmeans-input-size-not-a-multiple-of-32",
         lambda r: _kmeans(_lines_file(r), r, "--input-size", "130"), 2,
         "--input-size must be a multiple of 32, got 130"),
    Case("config-bool-for-int", lambda r: _config(r, "seed: 3\nk: true\n"), 2,
         "cfg.yaml:2: key 'k' must be an integer, got true (a boolean)"),
    Case("config-float-for-int", lambda r: _config(r, "k: 2.5\n"), 2,
         "cfg.yaml:1: key 'k' must be an integer, got 2.5"),
    Case("config-bool-for-float", lambda r: _config(r, "anchor-t: yes\n"), 2,
         "cfg.yaml:1: key 'anchor_t' must be a number, got true (a boolean)"),
    Case("config-list-for-path", lambda r: _config(r, "k: 2\nout: [a.txt, b.txt]\n"), 2,
         "cfg.yaml:2: key 'out' must be a string, got ['a.txt', 'b.txt'] (a list)"),
    Case("config-duplicate-key", lambda r: _config(r, "k: 2\nseed: 1\nk: 3\n"), 2,
         "cfg.yaml:3: key 'k' is given twice (first on line 1)"),
    Case("config-duplicate-key-spellings",
         lambda r: _config(r, "input-size: 64\nseed: 1\ninput_size: 96\n"), 2,
         "cfg.yaml:3: key 'input_size' is given twice (first on line 1)"),
    # user text is printed literally, never as Rich markup
    Case("path-with-a-markup-closing-tag",
         lambda r: _kmeans((_write(r / "keep.txt", "x"), r / "p[/]q" / "t.txt")[-1], r), 1,
         "{root}/p[/]q/t.txt: dataset not found"),
    Case("path-with-brackets",
         lambda r: _kmeans(_write(r / "p[v2]" / "t.txt", "x.jpg 1,2,3\n"), r), 1,
         "{root}/p[v2]/t.txt:1: malformed box '1,2,3': expected x1,y1,x2,y2,class"),
    Case("message-values-with-brackets",
         lambda r: _kmeans(_write(r / "gt.json", json.dumps({
             "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 1}],
             "categories": [{"id": 1, "name": "[bold]cat"}]})), r), 1,
         "annotation id 1: 'bbox' must be [x, y, width, height], got None"),
    Case("synth-output-path-with-brackets",
         lambda r: ["synth", str(r / "ds [v2] [bold]x[/bold]"), "--images", "4", "--size",
                    "64", "--classes", "2"], 0,
         "wrote {root}/ds [v2] [bold]x[/bold]: "),
    # a weights file given to --model (ultralytics' model=PATH habit)
    Case("weights-file-given-as-model",
         lambda r: ["eval-map", str(_lines_file(r)), "--model",
                    str(_write(r / "runs" / "best.weights.h5", "w"))], 2,
         "got '{root}/runs/best.weights.h5'; a weights file or an export is given with "
         "--weights"),
]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``case``: its exit code and message, no traceback, every input byte-identical,
    nothing written outside ``tmp_path/in``."""
    monkeypatch.chdir(tmp_path)  # a file the command should not write lands here
    root = tmp_path / "in"
    argv = case.args(root)
    before = _hashes(root)
    cleanup = case.patch(monkeypatch, root) if case.patch is not None else None
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        if cleanup is not None:
            cleanup()
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == case.exit_code, output
    message = case.message.replace("{root}", str(root))
    assert message in output or message in output.replace("\n", ""), output
    assert "Traceback" not in output
    if case.exit_code:
        assert sum(line.startswith("error:") for line in output.splitlines()) == 1, output
    after = _hashes(root)
    kept = {name: digest for name, digest in before.items() if name not in case.changes}
    assert {name: after.get(name) for name in kept} == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert not [p for p in root.rglob(".tmp-*") if str(p.relative_to(root)) not in case.changes]
    if case.check is not None:
        case.check(root)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


# ---------------------------------------------------------------------------------------
# More inputs: a dataset any command (and train) takes, and run directories
# ---------------------------------------------------------------------------------------

TRAIN = ("--model", "yolov3-tiny", "--width", "0.0625", "--input-size", "64",
         "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "1")


def _kmeans_out(data: Path, out: Path, *extra: str) -> list[str]:
    return ["kmeans-anchors", str(data), "--k", "2", "--input-size", "64", "--out", str(out),
            *extra]


def _encode(root: Path, *extra: str, anchors: Optional[Path] = None) -> list[str]:
    return ["encode-labels", str(_lines_file(root)), "--anchors",
            str(anchors or _anchors(root)), "--input-size", "64",
            "--out", str(root / "out" / "labels.npz"), *extra]


def _train(root: Path, *extra: str, command: str = "train",
           data: Optional[str] = None) -> list[str]:
    data = data or str(_lines_file(root))
    return [command, data, *TRAIN, "--anchors", str(_anchors(root)), "--out",
            str(root / "run"), *extra]


def _cache(root: Path, *extra: str) -> list[str]:
    return ["cache-bottlenecks", str(_lines_file(root)), "--model", "yolov3-tiny",
            "--anchors", str(_anchors(root)), "--input-size", "64", *extra]


def _lock(root: Path, pid: int, host: Optional[str] = None) -> Path:
    holder = {"pid": pid, "host": host or socket.gethostname(),
              "started": "2030-01-02T03:04:05+00:00"}
    return _write(root / "run" / ".detkit.lock", json.dumps(holder))


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _old_run(root: Path) -> None:
    for name in ("best.weights.h5", "last.weights.h5", "history.csv", "state.json"):
        _write(root / "run" / name, f"the previous run's {name}\n")


def _given_weights(root: Path, command: str, weights: Path) -> list[str]:
    """``command`` (train stage 2, predict or export) given ``weights`` of an old run."""
    _old_run(root)
    _write(root / "run" / "state.weights.h5", "the previous run's resume state\n")
    out = root / "out"
    if command == "train":
        return ["train", str(_lines_file(root)), *TRAIN, "--stage", "2", "--weights",
                str(weights), "--out", str(out / "s2")]
    if command == "predict":
        return ["predict", str(_lines_file(root)), "--weights", str(weights), "--out",
                str(out / "d.json")]
    return ["export", str(weights), "--model", "yolov3-tiny", "--out", str(out / "m.onnx")]


def _no_lock(root: Path) -> None:
    assert not (root / "run" / ".detkit.lock").exists()


def _no_folder(folder: Path) -> None:
    assert not folder.exists(), sorted(folder.rglob("*"))


def _no_run_dir(root: Path) -> None:
    _no_folder(root / "run")


def _link(root: Path, name: str, target: Path, hard: bool = False) -> Path:
    link = root / name
    (os.link if hard else os.symlink)(target, link)
    return link


# ---------------------------------------------------------------------------------------
# Outputs never overwrite inputs (exit 2, both paths and both flags named)
# ---------------------------------------------------------------------------------------

def _voc_folder(root: Path) -> Path:
    from detkit.data.dataset import load_dataset
    from detkit.data.writers import write_voc_folder

    return write_voc_folder(root / "voc", load_dataset(_lines_file(root)))


def _yolo_folder(root: Path, names: str = "") -> Path:
    from detkit.data.dataset import load_dataset
    from detkit.data.writers import write_yolo_folder

    folder = write_yolo_folder(root / "yolo", load_dataset(_lines_file(root)))
    if names:
        _write(folder / "data.yaml", f"train: images\nval: images\nnames: [{names}]\n")
    return folder


def _yolo_label(root: Path) -> Path:
    return next(p for p in sorted((root / "yolo" / "labels").rglob("*.txt"))
                if p.name != "classes.txt")


CLOBBER_CASES = [
    # files of the dataset that no option names: its images, annotation, class files
    # (files detkit did not make, refused before the work; the API's own check, which
    # names the dataset, is test_a_dataset_file_is_refused_through_the_api)
    Case("kmeans-out-is-an-image-of-the-lines-file",
         lambda r: _kmeans_out(_lines_file(r), r / "imgs" / "a.png"), 2,
         "--out {root}/imgs/a.png already exists and has no a.png.manifest.json saying "
         "kmeans-anchors made it (a file of yours?): choose another --out, or remove the "
         "file"),
    Case("kmeans-out-is-the-classes-file-beside-the-lines",
         lambda r: _kmeans_out((_write(r / "classes.txt", "cat\ndog\n"), _lines_file(r))[1],
                               r / "classes.txt"), 2,
         "--out {root}/classes.txt already exists and has no classes.txt.manifest.json"),
    Case("kmeans-out-is-a-voc-xml",
         lambda r: _kmeans_out(_voc_folder(r), next((r / "voc").rglob("*.xml"))), 2,
         ".xml already exists and has no"),
    Case("kmeans-out-is-a-yolo-label-file",
         lambda r: _kmeans_out(_yolo_folder(r), _yolo_label(r)), 2,
         "--out {root}/yolo/labels/"),
    Case("encode-out-is-a-yolo-label-file",
         lambda r: ["encode-labels", str(_yolo_folder(r)), "--input-size", "64", "--out",
                    str(_yolo_label(r))], 2, "--out {root}/yolo/labels/"),
    Case("predict-out-is-an-image",
         lambda r: ["predict", str((_images(r / "imgs"), r / "imgs")[1]), "--weights",
                    str(_write(r / "w.weights.h5", "x")), "--out", str(r / "imgs" / "a.png")],
         2, "--out {root}/imgs/a.png already exists and has no"),
    Case("predict-out-is-a-voc-xml",
         lambda r: ["predict", str(_voc_folder(r)), "--weights",
                    str(_write(r / "w.weights.h5", "x")), "--out",
                    str(next((r / "voc").rglob("*.xml")))],
         2, ".xml already exists and has no"),
    Case("eval-map-out-is-a-voc-xml",
         lambda r: ["eval-map", str(_voc_folder(r)), "--detections",
                    str(_write(r / "d.json", "[]")), "--out",
                    str(next((r / "voc").rglob("*.xml")))],
         2, ".xml already exists and has no"),
    Case("eval-map-model-detections-is-a-yolo-label",
         lambda r: ["eval-map", str(_yolo_folder(r)), "--weights",
                    str(_write(r / "w.weights.h5", "x")), "--exist-ok", "--detections",
                    str(_yolo_label(r))],
         2, "would overwrite {root}/yolo/labels/"),
    # an existing file detkit did not make, or another command's artifact
    Case("kmeans-out-is-a-users-file",
         lambda r: _kmeans_out(_lines_file(r), _write(r / "notes.txt", "mine\n")), 2,
         "--out {root}/notes.txt already exists and has no notes.txt.manifest.json saying "
         "kmeans-anchors made it (a file of yours?): choose another --out, or remove the "
         "file to replace it"),
    Case("encode-out-is-another-commands-artifact",
         lambda r: _encode(r, anchors=None)[:-1] + [str(
             (_write(r / "out" / "a.npz", "x"),
              _write(r / "out" / "a.npz.manifest.json", '{"command": "kmeans-anchors"}'))[0])],
         2, "--out {root}/out/a.npz already exists and was made by kmeans-anchors: choose "
            "another --out"),
    Case("export-out-is-a-users-file",
         lambda r: ["export", str(_write(r / "w.weights.h5", "x")), "--model", "yolov3-tiny",
                    "--out", str(_write(r / "u.onnx", "mine"))], 2,
         "--out {root}/u.onnx already exists and has no"),
    Case("eval-map-default-detections-is-a-users-file",
         lambda r: ["eval-map", str(_coco(r)),
                    "--weights", str(_write(r / "w.weights.h5", "x")),
                    "--out", str((_write(r / "out" / "report.detections.json", "[]"),
                                  r / "out" / "report.json")[1])], 2,
         "--detections {root}/out/report.detections.json already exists and has no "
         "report.detections.json.manifest.json"),
    Case("doctor-report-in-out-is-a-users-file",
         lambda r: ["doctor", str(_lines_file(r)), "--input-size", "64", "--out",
                    str((_write(r / "mydoc" / "report.json", "{}"), r / "mydoc")[1])], 2,
         "--out {root}/mydoc/report.json already exists and has no "
         "report.json.manifest.json saying doctor made it"),
    Case("cache-init-weights-are-a-users-file",
         lambda r: (_write(r / "cb.init.weights.h5", "mine"),
                    _cache(r, "--out", str(r / "cb.h5")))[1], 2,
         "--out {root}/cb.init.weights.h5 already exists and has no "
         "cb.init.weights.h5.manifest.json saying cache-bottlenecks made it"),
    Case("kmeans-out-is-its-config",
         lambda r: _kmeans_out(_lines_file(r), r / "k.yaml", "--config",
                               str(_write(r / "k.yaml", "k: 1\n"))), 2,
         "--out would overwrite the input --config {root}/k.yaml: --out {root}/k.yaml is the "
         "same path"),
    Case("kmeans-report-is-its-config",
         lambda r: _kmeans_out(_lines_file(r), r / "cfg.txt", "--config",
                               str(_write(r / "cfg.json", "k: 1\n"))), 2,
         "--out would overwrite the input --config {root}/cfg.json: --out {root}/cfg.txt "
         "also writes {root}/cfg.json"),
    Case("kmeans-out-is-data",
         lambda r: _kmeans_out(_lines_file(r), r / "train.txt"), 2,
         "--out would overwrite the input DATA {root}/train.txt: --out {root}/train.txt is "
         "the same path; choose another --out"),
    Case("kmeans-report-is-coco-ground-truth",
         lambda r: _kmeans_out(_coco(r), r / "gt.anchors"), 2,
         "--out would overwrite the input DATA {root}/gt.json: --out {root}/gt.anchors also "
         "writes {root}/gt.json, which is the same path"),
    Case("kmeans-report-would-replace-a-file-of-another-dataset",
         lambda r: (_coco(r), _kmeans_out(_lines_file(r), r / "gt.anchors"))[1], 2,
         "--out {root}/gt.anchors also writes {root}/gt.json, which already exists and is "
         "not a file --out {root}/gt.anchors wrote before (its manifest names no such "
         "report); choose another --out, or remove {root}/gt.json if it is an old report"),
    Case("kmeans-manifest-is-classes",
         lambda r: _kmeans_out(_coco(r), r / "names", "--classes",
                               str(_write(r / "names.manifest.json", "cat\ndog\n"))), 2,
         "--out would overwrite the input --classes {root}/names.manifest.json: --out "
         "{root}/names also writes {root}/names.manifest.json"),
    Case("kmeans-out-symlink-to-data",
         lambda r: _kmeans_out(_lines_file(r), _link(r, "link.txt", r / "train.txt")), 2,
         "--out would overwrite the input DATA {root}/train.txt: --out {root}/link.txt "
         "links to it"),
    Case("kmeans-out-hard-link-to-data",
         lambda r: _kmeans_out(_lines_file(r), _link(r, "hard.txt", r / "train.txt", True)),
         2, "--out {root}/hard.txt links to it"),
    Case("kmeans-out-is-compare",
         lambda r: _kmeans_out(_lines_file(r), _anchors(r), "--compare", str(_anchors(r))),
         2, "--out would overwrite the input --compare {root}/anchors.txt"),
    Case("encode-out-is-anchors",
         lambda r: [*_encode(r), "--out", str(_anchors(r))], 2,
         "--out would overwrite the input --anchors {root}/anchors.txt"),
    Case("eval-map-out-is-ground-truth",
         lambda r: ["eval-map", str(_coco(r)), "--detections",
                    str(_write(r / "det.json", "[]")), "--out", str(r / "gt.json")], 2,
         "--out would overwrite the input DATA {root}/gt.json: --out {root}/gt.json is the "
         "same path"),
    Case("eval-map-out-is-detections",
         lambda r: ["eval-map", str(_coco(r)), "--detections",
                    str(_write(r / "det.json", "[]")), "--out", str(r / "det.json")], 2,
         "--out would overwrite the input --detections {root}/det.json"),
    Case("compare-out-is-a-report",
         lambda r: ["compare", str(_write(r / "a.json", "{}")), str(_write(r / "b.json", "{}")),
                    "--out", str(r / "b.json")], 2,
         "--out would overwrite the input REPORTS {root}/b.json"),
    Case("predict-draw-dir-is-the-images",
         lambda r: (_images(r / "imgs"), ["predict", str(r / "imgs"), "--draw-dir",
                                          str(r / "imgs"), "--out", str(r / "d.json")])[-1],
         2, "--draw-dir would overwrite the input DATA {root}/imgs"),
    Case("train-weights-inside-out",
         lambda r: (_old_run(r), _train(r, "--weights", str(r / "run" / "best.weights.h5"),
                                        "--stage", "2"))[-1], 2,
         "--out would overwrite the input --weights {root}/run/best.weights.h5: --out "
         "{root}/run also writes {root}/run/best.weights.h5, which is the same path"),
    Case("distill-teacher-is-out",
         lambda r: (_old_run(r), _train(r, "--teacher", str(r / "run"),
                                        command="distill"))[-1], 2,
         "--out would overwrite the input --teacher {root}/run: --out {root}/run is the "
         "same path"),
    Case("cache-weights-are-its-init-weights",
         lambda r: _cache(r, "--weights", str(_write(r / "c.init.weights.h5", "w")),
                          "--out", str(r / "c.h5")), 2,
         "--out would overwrite the input --weights {root}/c.init.weights.h5: --out "
         "{root}/c.h5 also writes {root}/c.init.weights.h5"),
    Case("import-darknet-anchors-file-is-classes",
         lambda r: ["import-darknet", str(_write(r / "y.cfg", "[net]\n")),
                    str(_write(r / "y.weights", "w")), "--out", str(r / "n.weights.h5"),
                    "--classes", str(_write(r / "n.anchors.txt", "a\nb\n"))], 2,
         "--out would overwrite the input --classes {root}/n.anchors.txt: --out "
         "{root}/n.weights.h5 also writes {root}/n.anchors.txt"),
    Case("eval-map-out-is-the-weights-manifest",
         lambda r: ["eval-map", str(_coco(r)), "--weights", str(_trained(r)), "--out",
                    str(r / "run" / "best.weights.h5.manifest.json")], 2,
         "--out would overwrite the manifest of --weights {root}/run/best.weights.h5 "
         "({root}/run/best.weights.h5.manifest.json)"),
    Case("export-saved-model-into-the-run-of-its-weights",
         lambda r: ["export", str(_trained(r)), "--out", str(r / "run")], 2,
         "--out {root}/run holds the input WEIGHTS {root}/run/best.weights.h5, which "
         "writing --out would delete"),
    Case("export-saved-model-into-a-folder-of-photos",
         lambda r: (_images(r / "imgs"),
                    ["export", str(_trained(r)), "--out", str(r / "imgs")])[-1], 2,
         "--out {root}/imgs is a folder of other files (it has no saved_model.pb), which "
         "writing --out would delete; choose a new or empty folder"),
    Case("predict-draw-dir-is-the-folder-of-one-image",
         lambda r: (_images(r / "imgs"), os.replace(r / "imgs" / "a.png", r / "imgs" / "a.jpg"),
                    ["predict", str(r / "imgs" / "a.jpg"), "--weights", str(_trained(r)),
                     "--draw-dir", str(r / "imgs"), "--out", str(r / "d.json")])[-1], 2,
         "--draw-dir {root}/imgs would overwrite the input image {root}/imgs/a.jpg"),
    Case("doctor-report-is-anchors",
         lambda r: ["doctor", str(_lines_file(r)), "--anchors",
                    str(_write(r / "d" / "report.json", "10,14, 23,27, 37,58\n")),
                    "--out", str(r / "d")], 2,
         "--out would overwrite the input --anchors {root}/d/report.json"),
]


@pytest.mark.parametrize("case", CLOBBER_CASES, ids=[case.id for case in CLOBBER_CASES])
def test_outputs_never_overwrite_inputs(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


# ---------------------------------------------------------------------------------------
# Run directories: an existing run needs --resume/--exist-ok; one run at a time
# ---------------------------------------------------------------------------------------

RUN_DIR_CASES = [
    Case("train-over-an-existing-run", lambda r: (_old_run(r), _train(r))[-1], 2,
         "--out {root}/run already holds a run (best.weights.h5, last.weights.h5, "
         "state.json, ...): pass --resume to continue it, --exist-ok to replace it, or "
         "choose another --out", check=_no_lock),
    Case("distill-over-an-existing-run",
         lambda r: (_old_run(r), _train(r, "--teacher", str(_write(r / "t.weights.h5", "t")),
                                        command="distill"))[-1], 2,
         "--out {root}/run already holds a run"),
    Case("train-into-a-held-run-dir",
         lambda r: (_lock(r, os.getppid()), _train(r))[-1], 1,
         f"{{root}}/run: in use by another run: pid {os.getppid()} on "
         f"{socket.gethostname()}, started 2030-01-02T03:04:05+00:00 holds "
         "{root}/run/.detkit.lock; wait for it to finish or choose another --out"),
    Case("train-into-a-dir-held-from-another-host",
         lambda r: (_lock(r, 1, host="elsewhere"), _train(r))[-1], 1,
         "in use by another run: pid 1 on elsewhere"),
    Case("train-takes-over-a-stale-lock",
         lambda r: (_lock(r, _dead_pid()), _train(r, data=str(r / "missing.txt")))[-1], 1,
         "missing.txt: dataset not found", changes=("run/.detkit.lock",), check=_no_lock),
    Case("train-cleans-an-interrupted-checkpoint",
         lambda r: (_old_run(r), _write(r / "run" / ".tmp-0123abcd-last.weights.h5", "half"),
                    _train(r, "--resume", data=str(r / "missing.txt")))[-1], 1,
         "missing.txt: dataset not found", changes=("run/.tmp-0123abcd-last.weights.h5",),
         check=_no_lock),
    Case("train-with-a-missing-image-stops-before-the-epochs",
         lambda r: [_train(r, data=str(_coco(r))), _images(r), (r / "b.png").unlink()][0],
         1, "{root}/gt.json: image file not found: {root}/b.png (image id 2)",
         check=_no_run_dir),
    Case("train-resume-into-a-folder-without-a-run",
         lambda r: _train(r, "--resume"), 2,
         "--resume: {root}/run holds no run to resume (no state.json of a kept epoch); drop "
         "--resume to start one", check=_no_run_dir),
    Case("train-failing-early-leaves-no-run-dir",
         lambda r: _train(r, data=str(r / "missing.txt")), 1, "dataset not found",
         check=_no_run_dir),
    Case("train-failing-early-leaves-no-folder-it-made",
         lambda r: [*_train(r, data=str(r / "missing.txt"))[:-1], str(r / "a" / "b" / "run")],
         1, "dataset not found", check=lambda r: _no_folder(r / "a")),
    Case("train-full-disk-at-its-first-checkpoint-leaves-no-run-dir",
         lambda r: _train(r), 1,
         "no space left to write the checkpoint of epoch 1 (no epoch saved yet)",
         patch=lambda mp, r: mp.setattr("detkit.training.callbacks._variables_bytes",
                                        lambda variables: 1 << 50),
         check=_no_run_dir),
    # a run's folder or its resume state given where a model's weights go
    Case("train-weights-given-as-a-run-folder",
         lambda r: _given_weights(r, "train", r / "run"), 1,
         "{root}/run: a folder, not a weights file: give {root}/run/best.weights.h5 or "
         "last.weights.h5", check=lambda r: _no_run_dir(r / "out")),
    Case("predict-weights-given-as-a-run-folder",
         lambda r: _given_weights(r, "predict", r / "run"), 1,
         "{root}/run: not a weights file, .tflite, .onnx or SavedModel folder: give "
         "{root}/run/best.weights.h5 or last.weights.h5"),
    Case("predict-weights-given-as-the-resume-state",
         lambda r: _given_weights(r, "predict", r / "run" / "state.weights.h5"), 1,
         "{root}/run/state.weights.h5: a run's resume state (the weights with the "
         "optimizer's, read by --resume), not a model's weights: give best.weights.h5 or "
         "last.weights.h5 of the run"),
    Case("export-weights-given-as-the-resume-state",
         lambda r: _given_weights(r, "export", r / "run" / "state.weights.h5"), 1,
         "{root}/run/state.weights.h5: a run's resume state"),
]


@pytest.mark.parametrize("case", RUN_DIR_CASES, ids=[case.id for case in RUN_DIR_CASES])
def test_run_directories(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


# ---------------------------------------------------------------------------------------
# Stale inputs: a consumed artifact whose recorded inputs changed since (exit 1)
# ---------------------------------------------------------------------------------------

def _encoded(root: Path) -> Path:
    result = CliRunner().invoke(app, _encode(root))
    assert result.exit_code == 0, result.output
    return root / "out" / "labels.npz"


def _edit_annotations(root: Path) -> None:
    path = root / "train.txt"
    path.write_text(path.read_text().replace("2,3,30,20,0", "2,3,31,20,0"))


def _stale_labels(root: Path) -> list[str]:
    labels = _encoded(root)
    argv = _train(root, "--bottlenecks", str(root / "c.h5"), "--labels", str(labels),
                  "--bottleneck-epochs", "1", "--epochs", "0")
    _edit_annotations(root)
    return argv


def _stale_cache(root: Path) -> list[str]:
    from detkit.artifacts import write_manifest

    cache = _write(root / "c.h5", "features")
    write_manifest(cache, command="cache-bottlenecks", config={},
                   inputs=[_lines_file(root)])
    argv = _train(root, "--bottlenecks", str(cache), "--labels",
                  str(_write(root / "l.npz", "no manifest")), "--bottleneck-epochs", "1",
                  "--epochs", "0")
    _edit_annotations(root)
    return argv


def _stale_folder_labels(root: Path) -> list[str]:
    """A YOLO folder (its label files are not among the manifest's inputs) encoded, then
    one box of one label file moved."""
    from detkit.data.dataset import load_dataset
    from detkit.data.writers import write_yolo_folder

    folder = write_yolo_folder(root / "yolo", load_dataset(_lines_file(root)))
    argv = _encode(root)
    argv[1] = str(folder)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    label = next(p for p in sorted((folder / "labels").glob("*.txt")) if p.read_text())
    first, *rest = label.read_text().splitlines()
    label.write_text("\n".join([first.rsplit(" ", 1)[0] + " 0.5", *rest]) + "\n")
    return _train(root, "--bottlenecks", str(root / "c.h5"), "--labels",
                  str(root / "out" / "labels.npz"), "--bottleneck-epochs", "1", "--epochs",
                  "0", data=str(folder))


def _labels_not_its_manifests(root: Path) -> list[str]:
    labels = _encoded(root)
    with open(labels, "ab") as handle:
        handle.write(b"\0")
    return _train(root, "--bottlenecks", str(root / "c.h5"), "--labels", str(labels),
                  "--bottleneck-epochs", "1", "--epochs", "0")


STALE_CASES = [
    Case("labels-encoded-before-the-annotations-changed", _stale_labels, 1,
         "{root}/out/labels.npz: stale: its input {root}/train.txt changed after it was "
         "made (the sha256 in labels.npz.manifest.json differs); re-run encode-labels",
         check=_no_run_dir),
    Case("labels-encoded-before-a-yolo-folders-labels-changed", _stale_folder_labels, 1,
         "{root}/out/labels.npz: stale: the dataset's boxes or classes changed after it was "
         "encoded; re-run encode-labels", check=_no_run_dir),
    Case("bottlenecks-cached-before-the-annotations-changed", _stale_cache, 1,
         "{root}/c.h5: stale: its input {root}/train.txt changed after it was made"),
    Case("labels-file-its-manifest-does-not-describe", _labels_not_its_manifests, 1,
         "labels.npz.manifest.json describes a file of"),
]


@pytest.mark.parametrize("case", STALE_CASES, ids=[case.id for case in STALE_CASES])
def test_stale_inputs(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


# ---------------------------------------------------------------------------------------
# Unwritable outputs and full disks: one line, exit 1, before the work, nothing partial
# ---------------------------------------------------------------------------------------

def _full_disk(monkeypatch: pytest.MonkeyPatch, root: Path) -> Optional[Callable[[], None]]:
    """``root/disk``: a 64 KiB tmpfs where mounting is allowed, else a disk that reports
    64 KiB free."""
    disk = root / "disk"
    disk.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 \
        else False
    if mounted:
        return lambda: subprocess.run(["umount", str(disk)], check=True)
    import shutil

    import detkit.artifacts

    real = shutil.disk_usage

    def usage(path):
        found = real(path)
        if Path(path).resolve().is_relative_to(disk.resolve()):
            return found._replace(free=64 << 10)
        return found

    monkeypatch.setattr(detkit.artifacts.shutil, "disk_usage", usage)
    return None


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _disk_fills_in_savez(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    def savez(handle, **arrays):
        handle.write(b"PK\3\4 half a zip")
        _enospc()

    monkeypatch.setattr(np, "savez_compressed", savez)


WRITE_CASES = [
    Case("kmeans-out-is-a-folder",
         lambda r: (_write(r / "out" / "keep.txt", "x"),
                    _kmeans_out(_lines_file(r), r / "out"))[-1], 1,
         "cannot write --out {root}/out: it is a folder; give a file name"),
    Case("kmeans-out-under-a-file",
         lambda r: _kmeans_out(_lines_file(r), _write(r / "blocker", "x") / "a.txt"), 1,
         "cannot write --out {root}/blocker/a.txt: {root}/blocker is a file, not a folder"),
    Case("encode-out-under-a-file",
         lambda r: [*_encode(r), "--out", str(_write(r / "blocker", "x") / "l" / "l.npz")], 1,
         "cannot write --out {root}/blocker/l/l.npz: {root}/blocker is a file"),
    Case("cache-out-is-a-folder",
         lambda r: _cache(r, "--out", str(_write(r / "c" / "x", "x").parent)), 1,
         "cannot write --out {root}/c: it is a folder"),
    Case("eval-map-out-under-a-file",
         lambda r: ["eval-map", str(_coco(r)), "--detections", str(_write(r / "d.json", "[]")),
                    "--out", str(_write(r / "blocker", "x") / "r.json")], 1,
         "cannot write --out {root}/blocker/r.json: {root}/blocker is a file"),
    Case("train-out-is-a-file",
         lambda r: (_write(r / "run", "a file"), _train(r))[-1], 2,
         "--out must be a folder: {root}/run exists and is not a folder"),
    Case("synth-out-under-a-file",
         lambda r: ["synth", str(_write(r / "blocker", "x") / "ds"), "--images", "2"], 1,
         "cannot write OUT {root}/blocker/ds: {root}/blocker is a file"),
    Case("kmeans-disk-full-before-the-work",
         lambda r: _kmeans_out(_lines_file(r), r / "disk" / "anchors.txt"), 1,
         "cannot write --out {root}/disk/anchors.txt: no space left on its disk",
         patch=_full_disk, check=lambda r: not list((r / "disk").iterdir())),
    Case("train-disk-full-before-the-work",
         lambda r: _train(r, "--out", str(r / "disk" / "run")), 1,
         "cannot write --out {root}/disk/run: no space left on its disk",
         patch=_full_disk, check=lambda r: not list((r / "disk").iterdir())),
    Case("encode-disk-full-while-writing",
         lambda r: (_write(r / "out" / "keep", "x"), _encode(r))[-1], 1,
         "{root}/out/labels.npz: No space left on device",
         patch=_disk_fills_in_savez,
         check=lambda r: [p.name for p in (r / "out").iterdir()] == ["keep"]),
]


@pytest.mark.parametrize("case", WRITE_CASES, ids=[case.id for case in WRITE_CASES])
def test_unwritable_outputs_and_full_disks(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


# ---------------------------------------------------------------------------------------
# An artifact appears last, and only with its manifest
# ---------------------------------------------------------------------------------------

def _previous(root: Path, *names: str) -> None:
    """The files of a previous successful run in ``root/out`` (they must survive); a
    manifest names the report beside its artifact, as kmeans-anchors' does."""
    for name in names:
        command = "kmeans-anchors" if name.startswith("anchors") else "encode-labels"
        text = (json.dumps({"command": command, "report": "anchors.json"})
                if name.endswith(".manifest.json") else f"previous {name}\n")
        _write(root / "out" / name, text)


def _manifest_write_fails(module: str) -> Callable[[pytest.MonkeyPatch, Path], None]:
    def patch(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        def fails(path, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                          str(Path(path).with_name(Path(path).name + ".manifest.json")))

        monkeypatch.setattr(f"{module}.write_manifest", fails)
    return patch


COMMIT_CASES = [
    Case("kmeans-disk-fills-at-the-manifest",
         lambda r: (_previous(r, "anchors.txt", "anchors.json", "anchors.txt.manifest.json"),
                    _kmeans(_lines_file(r), r))[-1], 1,
         "{root}/out/anchors.txt.manifest.json: No space left on device",
         patch=_manifest_write_fails("detkit.commands.kmeans_anchors")),
    Case("encode-disk-fills-at-the-manifest",
         lambda r: (_previous(r, "labels.npz", "labels.npz.manifest.json"), _encode(r))[-1], 1,
         "{root}/out/labels.npz.manifest.json: No space left on device",
         patch=_manifest_write_fails("detkit.commands.encode_labels")),
]


@pytest.mark.parametrize("case", COMMIT_CASES, ids=[case.id for case in COMMIT_CASES])
def test_artifact_never_without_its_manifest(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


def test_the_manifest_lands_before_its_artifact(tmp_path, monkeypatch):
    """encode-labels and kmeans-anchors rename the manifest into place first, and record
    the artifact's size in it."""
    import detkit.artifacts

    renamed: list[str] = []
    real = os.replace

    def replace(src, dst):
        renamed.append(Path(dst).name)
        return real(src, dst)

    monkeypatch.setattr(detkit.artifacts.os, "replace", replace)
    root = tmp_path / "in"
    assert CliRunner().invoke(app, _encode(root)).exit_code == 0
    assert CliRunner().invoke(app, _kmeans(_lines_file(root), root)).exit_code == 0
    assert renamed == ["labels.npz.manifest.json", "labels.npz",
                       "anchors.txt.manifest.json", "anchors.json", "anchors.txt"]
    for name in ("labels.npz", "anchors.txt"):
        manifest = json.loads((root / "out" / f"{name}.manifest.json").read_text())
        assert manifest["bytes"] == (root / "out" / name).stat().st_size


# ---------------------------------------------------------------------------------------
# Misleading or silent: one anchor-count check, unsorted anchors, resumed caches
# ---------------------------------------------------------------------------------------

ANCHORS9 = "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326\n"


def _partial_cache(root: Path, width: float) -> None:
    import h5py

    from detkit.bottlenecks import FORMAT_VERSION, KIND

    (root / "out").mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "out" / ".c.h5.partial", "w") as handle:
        handle.attrs.update(kind=KIND, format_version=FORMAT_VERSION, model="yolov3-tiny",
                            width=width, input_size=64, dtype="float16", n_done=1,
                            complete=False)


def _fitted_anchors(root: Path, size: int) -> Path:
    """:func:`_anchors` with the manifest kmeans-anchors writes at ``--input-size size``."""
    from detkit.artifacts import write_manifest

    anchors = _anchors(root)
    write_manifest(anchors, command="kmeans-anchors", config={"input_size": size}, inputs=[])
    return anchors


def _encoded_at(size: int) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        manifest = json.loads((root / "out" / "labels.npz.manifest.json").read_text())
        assert manifest["settings"]["input_size"] == size, manifest
    return check


def _cached_at(size: int) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        import h5py

        with h5py.File(root / "c.h5", "r") as handle:
            assert int(handle.attrs["input_size"]) == size
    return check


MISLEADING_CASES = [
    # cache-bottlenecks --resume restores no input size: its anchors' fitted size holds
    Case("cache-resume-takes-the-input-size-its-anchors-were-fitted-at",
         lambda r: ["cache-bottlenecks", str(_lines_file(r)), "--model", "yolov3-tiny",
                    "--width", "0.0625", "--anchors", str(_fitted_anchors(r, 64)),
                    "--resume", "--out", str(r / "c.h5")], 0,
         "input 64: the size {root}/anchors.txt was fitted at", check=_cached_at(64)),
    # --classes for labels of class indices must agree with the dataset's own names
    Case("classes-contradict-a-data-yaml",
         lambda r: _kmeans(_yolo_folder(r, names="cat, dog") / "data.yaml", r, "--classes",
                           str(_write(r / "names.txt", "dog\ncat\n"))), 1,
         "{root}/yolo/data.yaml: names class 0 'cat', the class names given (--classes, or "
         "the training data's) name it 'dog'"),
    Case("classes-contradict-the-classes-file-beside-the-lines",
         lambda r: _kmeans((_write(r / "classes.txt", "cat\ndog\n"), _lines_file(r))[1], r,
                           "--classes", str(_write(r / "names.txt", "cat\nbird\n"))), 1,
         "{root}/classes.txt: names class 1 'dog', the class names given"),
    Case("classes-agreeing-with-a-data-yaml",
         lambda r: _kmeans(_yolo_folder(r, names="cat, dog") / "data.yaml", r, "--classes",
                           str(_write(r / "names.txt", "cat\ndog\n"))), 0, "anchors for"),
    # anchors are in input pixels: an anchors file fitted at 64 px runs at 64 when
    # --input-size is not given, and warns when it is given at another size
    Case("encode-takes-the-input-size-its-anchors-were-fitted-at",
         lambda r: ["encode-labels", str(_lines_file(r)), "--anchors",
                    str(_fitted_anchors(r, 64)), "--out", str(r / "out" / "labels.npz")], 0,
         "note: input 64: the size {root}/anchors.txt was fitted at (its manifest); "
         "give --input-size to run at another", check=_encoded_at(64)),
    Case("encode-typed-default-input-size-is-kept-over-its-anchors",
         lambda r: _encode(r, "--input-size", "416", anchors=_fitted_anchors(r, 64)), 0,
         "warning: {root}/anchors.txt was fitted at input 64 (its manifest), this runs at "
         "416", check=_encoded_at(416)),
    Case("encode-at-another-size-than-its-anchors",
         lambda r: _encode(r, "--input-size", "96", anchors=_fitted_anchors(r, 64)), 0,
         "warning: {root}/anchors.txt was fitted at input 64 (its manifest), this runs at "
         "96: anchors are in input pixels, so refit them with kmeans-anchors --input-size 96",
         check=_encoded_at(96)),
    Case("encode-9-anchors-for-yolov3-tiny",
         lambda r: _encode(r, "--model", "yolov3-tiny",
                           anchors=_write(r / "a9.txt", ANCHORS9)), 1,
         "{root}/a9.txt: yolov3-tiny needs 6 anchors, the anchors file has 9"),
    Case("encode-5-anchors-for-yolov3",
         lambda r: _encode(r, "--model", "yolov3",
                           anchors=_write(r / "a5.txt", "1,2, 3,4, 5,6, 7,8, 9,10\n")), 1,
         "{root}/a5.txt: yolov3 needs 9 anchors, the anchors file has 5"),
    Case("encode-7-anchors-fit-no-model",
         lambda r: _encode(r, anchors=_write(r / "a7.txt", "1,2, 3,4, 5,6, 7,8, 9,10, "
                                                           "11,12, 13,14\n")), 1,
         "{root}/a7.txt: the anchors file has 7 anchors, which fit no model (yolov3 needs 9, "
         "yolov3-tiny needs 6"),
    Case("encode-6-anchors-take-yolov3-tiny", _encode, 0, "per scale: stride 32: "),
    Case("anchors-not-sorted-by-area",
         lambda r: _kmeans(_lines_file(r), r, "--compare",
                           str(_write(r / "unsorted.txt", "30,30, 10,12\n"))), 0,
         "warning: {root}/unsorted.txt: the anchors are not sorted by area (anchor 1, "
         "30x30, is larger than anchor 2, 10x12); they are used as written"),
    Case("cache-resume-with-another-width",
         lambda r: (_partial_cache(r, 0.125),
                    _cache(r, "--width", "0.25", "--resume", "--out",
                           str(r / "out" / "c.h5")))[-1], 1,
         "{root}/out/.c.h5.partial: cannot resume: the partial cache was made with width "
         "0.125, this command has width 0.25; run without --resume to start over"),
]


@pytest.mark.parametrize("case", MISLEADING_CASES, ids=[case.id for case in MISLEADING_CASES])
def test_misleading_or_silent(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


def test_a_bad_input_size_is_refused_before_the_anchors_note(tmp_path):
    """--input-size 100 with anchors fitted at 64: one error line, no refit advice for a
    size no command takes."""
    argv = _encode(tmp_path, "--input-size", "100", anchors=_fitted_anchors(tmp_path, 64))
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: --input-size must be a multiple of 32, got 100"


def test_encode_labels_without_model_follows_the_anchor_count(tmp_path):
    """The demo's 6 k-means anchors without --model: yolov3-tiny's two scales."""
    from detkit.labels import LabelsFile

    root = tmp_path / "in"
    assert CliRunner().invoke(app, _encode(root)).exit_code == 0
    labels = LabelsFile(root / "out" / "labels.npz")
    assert labels.grid_sizes == [2, 4]
    manifest = json.loads((root / "out" / "labels.npz.manifest.json").read_text())
    assert manifest["config"]["model"] == "yolov3-tiny"


# ---------------------------------------------------------------------------------------
# Weights carry their settings: predict, eval-map and export read the weights' manifest
# ---------------------------------------------------------------------------------------

#: The anchors recorded with the weights below (not yolov3-tiny's default COCO anchors).
RECORDED_ANCHORS = [[4.0, 5.0], [8.0, 9.0], [12.0, 14.0], [20.0, 22.0], [30.0, 34.0],
                    [50.0, 54.0]]


def _trained(root: Path, names: tuple[str, ...] = ("cat", "dog")) -> Path:
    """Tiny yolov3-tiny weights (width 0.0625, 64 px, 2 classes) with the settings
    train records in their manifest."""
    from detkit.artifacts import write_manifest
    from detkit.models import build_model

    weights = root / "run" / "best.weights.h5"
    weights.parent.mkdir(parents=True, exist_ok=True)
    build_model("yolov3-tiny", 2, 0.0625, 64).save_weights(weights)
    write_manifest(weights, command="train", config={}, inputs=[], extra={
        "model": "yolov3-tiny", "width": 0.0625, "backbone": "darknet-tiny",
        "input_size": 64, "anchors": RECORDED_ANCHORS, "class_names": list(names)})
    return weights


def _rpn_trained(root: Path) -> Path:
    """Tiny rpn weights whose manifest names the model (and nothing else)."""
    from detkit.artifacts import write_manifest
    from detkit.models import build_model

    weights = root / "rpn.weights.h5"
    weights.parent.mkdir(parents=True, exist_ok=True)
    build_model("rpn", 2, 0.0625, 64).save_weights(weights)
    write_manifest(weights, command="train", config={}, inputs=[],
                   extra={"model": "rpn", "width": 0.0625, "input_size": 64})
    return weights


def _predict(root: Path, *extra: str) -> list[str]:
    _images(root / "imgs")
    return ["predict", str(root / "imgs"), "--weights", str(_trained(root)), "--out",
            str(root / "out" / "d.json"), *extra]


def _predicted_with_the_recorded_settings(root: Path) -> None:
    manifest = json.loads((root / "out" / "d.json.manifest.json").read_text())
    assert manifest["anchors"] == RECORDED_ANCHORS
    assert (manifest["input_size"], manifest["class_names"]) == (64, ["cat", "dog"])
    assert "anchors_file" not in manifest


def _train_from(root: Path, *extra: str) -> list[str]:
    """Stage 1 on :func:`_lines_file` from :func:`_trained` weights of other classes."""
    return ["train", str(_lines_file(root)), "--weights", str(_trained(root, ("fox", "hen"))),
            "--input-size", "64", "--epochs", "1", "--batch-size", "2", "--no-plots",
            "--out", str(root / "out" / "run"), *extra]


def _started_with_the_architecture_only(root: Path) -> None:
    manifest = json.loads((root / "out" / "run" / "manifest.json").read_text())
    assert (manifest["model"], manifest["width"]) == ("yolov3-tiny", 0.0625)
    assert manifest["anchors"] != RECORDED_ANCHORS          # the family's: a new dataset
    assert manifest["input_size"] == 64


WEIGHTS_CASES = [
    # stage 1 and cache-bottlenecks take a start's architecture (not its anchors, input
    # size or classes: a start may be of another dataset)
    Case("train-stage1-takes-the-architecture-of-its-start", _train_from, 0, "wrote",
         check=_started_with_the_architecture_only),
    Case("train-stage1-width-contradicts-its-start",
         lambda r: _train_from(r, "--width", "0.125"), 1,
         "--width 0.125 disagrees with the weights' manifest, which records 0.0625"),
    Case("cache-bottlenecks-model-contradicts-its-start",
         lambda r: ["cache-bottlenecks", str(_lines_file(r)), "--weights", str(_trained(r)),
                    "--model", "yolov3", "--out", str(r / "out" / "c.h5")], 1,
         "--model yolov3 disagrees with the weights' manifest, which records yolov3-tiny"),
    Case("predict-takes-the-settings-recorded-with-the-weights", _predict, 0,
         "yolov3-tiny, width 0.0625, input 64 (settings from "
         "best.weights.h5.manifest.json): loaded", check=_predicted_with_the_recorded_settings),
    Case("predict-anchors-contradict-the-weights",
         lambda r: _predict(r, "--anchors", str(_anchors(r))), 1,
         "{root}/anchors.txt and {root}/run/best.weights.h5.manifest.json disagree: "
         "anchors: {root}/anchors.txt has [[10.0, 14.0], [23.0, 27.0],"),
    Case("predict-classes-contradict-the-weights",
         lambda r: _predict(r, "--classes", str(_write(r / "c.txt", "dog\ncat\n"))), 1,
         'class_names: {root}/c.txt has ["dog", "cat"], '
         '{root}/run/best.weights.h5.manifest.json has ["cat", "dog"]'),
    Case("predict-width-contradicts-the-weights",
         lambda r: _predict(r, "--width", "0.125"), 1,
         "{root}/run/best.weights.h5.manifest.json: --width 0.125 disagrees with the "
         "weights' manifest, which records 0.0625"),
    Case("predict-at-another-input-size",
         lambda r: _predict(r, "--input-size", "96"), 0,
         "running at input 96; the weights were trained at 64"),
    # a flag typed (or set in --config) at its default value is given all the same
    Case("predict-typed-default-width-contradicts-the-weights",
         lambda r: _predict(r, "--width", "1.0"), 1,
         "--width 1.0 disagrees with the weights' manifest, which records 0.0625"),
    Case("predict-typed-default-input-size-runs-at-it",
         lambda r: _predict(r, "--input-size", "416"), 0,
         "running at input 416; the weights were trained at 64"),
    Case("predict-config-default-model-contradicts-the-weights",
         lambda r: _predict(r, "--config", str(_write(r / "p.yaml", "model: yolov3\n"))), 1,
         "--model yolov3 disagrees with the weights' manifest, which records yolov3-tiny"),
    Case("eval-map-ground-truth-names-contradict-the-weights",
         lambda r: (_trained(r, ("fox", "hen")),
                    ["eval-map", str(_coco(r)), "--weights", str(r / "run" / "best.weights.h5"),
                     "--out", str(r / "out" / "report.json")])[-1], 1,
         'class_names: {root}/gt.json has ["cat", "dog"], '
         '{root}/run/best.weights.h5.manifest.json has ["fox", "hen"]'),
    Case("eval-map-voc-for-recorded-rpn-weights",
         lambda r: ["eval-map", str(_coco(r)), "--weights", str(_rpn_trained(r)),
                    "--metric", "voc07", "--out", str(r / "out" / "report.json")], 2,
         "--model rpn proposes boxes without classes: score them with --metric coco"),
    Case("predict-with-a-report-written-over-the-weights-manifest",
         lambda r: [_predict(r), _write(r / "run" / "best.weights.h5.manifest.json",
                                        json.dumps({"metric": "coco", "model": {
                                            "name": "yolov3-tiny", "width": 0.0625}}))][0],
         1,
         "{root}/run/best.weights.h5.manifest.json: not a weights manifest: 'model' is "
         "{'name': 'yolov3-tiny', 'width': 0.0625} (the file may have been written over"),
    Case("predict-with-a-report-without-model-written-over-the-weights-manifest",
         lambda r: [_predict(r), _write(r / "run" / "best.weights.h5.manifest.json",
                                        json.dumps({"metric": "coco", "stats": [0.5]}))][0],
         1, "{root}/run/best.weights.h5.manifest.json: not a weights manifest: it records "
            "no command, model or class names (the file may have been written over"),
    Case("predict-with-another-manifest-copied-over-the-weights-manifest",
         lambda r: [_predict(r), _write(r / "run" / "best.weights.h5.manifest.json",
                                        json.dumps({"artifact": "report.json",
                                                    "command": "eval-map"}))][0], 1,
         "{root}/run/best.weights.h5.manifest.json: not a weights manifest: written by "
         "'eval-map' (the file may have been written over by another command)"),
    Case("predict-with-a-detections-list-written-over-the-weights-manifest",
         lambda r: [_predict(r), _write(r / "run" / "best.weights.h5.manifest.json",
                                        json.dumps([{"image_id": 1}]))][0], 1,
         "{root}/run/best.weights.h5.manifest.json: not a manifest: a json list, not an "
         "object (the file may have been written over by another command)"),
    Case("export-model-contradicts-the-weights",
         lambda r: ["export", str(_trained(r)), "--model", "retinanet", "--out",
                    str(r / "out" / "m.onnx")], 1,
         "--model retinanet disagrees with the weights' manifest, which records "
         "yolov3-tiny"),
]


@pytest.mark.parametrize("case", WEIGHTS_CASES, ids=[case.id for case in WEIGHTS_CASES])
def test_weights_carry_their_settings(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


# ---------------------------------------------------------------------------------------
# Training: the plateau schedule's reductions during warmup, a NaN val_loss
# ---------------------------------------------------------------------------------------

class _Optimizer:
    def __init__(self, rate: float):
        self.iterations = np.int64(0)
        self.learning_rate = np.float32(rate)


class _Model:
    def __init__(self, rate: float):
        self.optimizer = _Optimizer(rate)
        self.stop_training = False


def test_plateau_reductions_during_warmup_are_kept():
    from detkit.training.schedule import LinearWarmup

    model = _Model(0.1 / 4)
    warmup = LinearWarmup(0.1, warmup_steps=4)
    warmup.set_model(model)
    rates = []
    for step in range(6):
        model.optimizer.iterations = np.int64(step)
        if step == 2:  # ReduceLROnPlateau at an epoch end inside warmup
            model.optimizer.learning_rate = np.float32(model.optimizer.learning_rate * 0.1)
        warmup.on_train_batch_begin(0)
        rates.append(float(model.optimizer.learning_rate))
    np.testing.assert_allclose(rates, [0.025, 0.05, 0.0075, 0.01, 0.01, 0.01], rtol=1e-5)
    # A run resumed inside warmup takes the reduction from the restored rate.
    resumed = LinearWarmup(0.1, warmup_steps=4)
    model = _Model(0.005)   # restored: step 1's rate (0.05) after a 0.1 reduction
    resumed.set_model(model)
    model.optimizer.iterations = np.int64(2)
    resumed.on_train_batch_begin(0)
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.0075, rtol=1e-5)


def test_nan_val_loss_stops_training_and_saves_nothing(tmp_path):
    from detkit.training.callbacks import NanGuard, RunCheckpoint

    model = _Model(0.1)
    guard = NanGuard()
    guard.set_model(model)
    guard.on_epoch_end(2, {"loss": 1.5, "val_loss": 2.0})
    assert guard.failure is None and not model.stop_training
    guard.on_epoch_end(3, {"loss": 1.5, "val_loss": float("nan")})
    assert model.stop_training
    assert guard.failure.describe() == "val_loss became nan in the validation after epoch 4"
    checkpoint = RunCheckpoint(tmp_path, network=None, monitor="val_loss")
    checkpoint.on_epoch_end(3, {"loss": 1.5, "val_loss": float("nan")})
    assert checkpoint.last_epoch == 0 and not list(tmp_path.iterdir())


def test_fit_puts_the_nan_guard_after_callbacks_that_add_val_loss():
    """FullModelValidation adds val_loss at epoch end: the guard must see it."""
    import inspect

    from detkit.training import fit

    source = inspect.getsource(fit.fit_network)
    assert "[*schedule_callbacks, guard]" in source


# ---------------------------------------------------------------------------------------
# The run lock and the clobber check as library functions
# ---------------------------------------------------------------------------------------

def test_run_lock_holds_names_and_takes_over(tmp_path):
    from detkit.artifacts import LOCK_NAME, run_lock
    from detkit.errors import ArtifactError

    with run_lock(tmp_path / "run") as notes:
        assert notes == []
        holder = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        # Held by this very process: another run_lock (e.g. a thread) is refused too.
        with pytest.raises(ArtifactError, match=f"pid {os.getpid()} on"):
            with run_lock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    _lock(tmp_path, _dead_pid())
    with run_lock(tmp_path / "run") as notes:
        assert len(notes) == 1 and "took over the stale lock" in notes[0]
        assert notes[0].endswith("(no longer running)")
    # An unreadable lock: held while young (being written), stale once old.
    lock = _write(tmp_path / "run" / LOCK_NAME, "")
    with pytest.raises(ArtifactError, match="an unknown process"):
        with run_lock(tmp_path / "run"):
            pass
    os.utime(lock, (0, 0))
    with run_lock(tmp_path / "run") as notes:
        assert notes == [f"took over the stale lock {lock} (unreadable, untouched for over "
                         "5 s)"]
    assert not lock.exists()


def test_a_dataset_file_is_refused_through_the_api(tmp_path):
    """Through the Python API (no command-line checks), an output that is a file of the
    dataset no option names is refused naming the dataset."""
    from detkit.commands import kmeans_anchors
    from detkit.errors import UsageError

    data = _lines_file(tmp_path)
    before = _hashes(tmp_path)
    with pytest.raises(UsageError, match="a.png, a file of the dataset DATA .*train.txt"):
        kmeans_anchors.run(kmeans_anchors.Options(data=data, k=2, input_size=64,
                                                  out=tmp_path / "imgs" / "a.png"))
    assert _hashes(tmp_path) == before


def test_no_clobber_check_compares_resolved_paths(tmp_path):
    from detkit.artifacts import check_no_clobber
    from detkit.commands.kmeans_anchors import Options
    from detkit.errors import UsageError

    data = _write(tmp_path / "x" / "t.txt", "a.png 1,1,5,5,0\n")
    check_no_clobber(Options(data=data, out=tmp_path / "x" / "anchors.txt"))
    with pytest.raises(UsageError, match="is the same path"):
        check_no_clobber(Options(data=data, out=tmp_path / "x" / ".." / "x" / "t.txt"))
    with pytest.raises(UsageError, match="also writes .*t.json, which is the same path"):
        check_no_clobber(Options(data=data.with_suffix(".json"),
                                 out=tmp_path / "x" / "t.anchors"))
    with pytest.raises(UsageError, match="--out would overwrite the input DATA"):
        check_no_clobber(Options(data=data, out=tmp_path / "y"),
                         extra_outputs=[("--out", data)])


# ---------------------------------------------------------------------------------------
# A real run directory (slow: trains a tiny model)
# ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_real_run_directory(tmp_path, monkeypatch):
    """--exist-ok over an old run holding a stale lock and an interrupted checkpoint; a
    new run without a flag refused; a checkpoint the disk cannot take stops the run in
    one line, the previous epoch's files kept."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "in"
    run = root / "run"
    argv = _train(root, "--exist-ok")
    _old_run(root)
    _lock(root, _dead_pid())
    _write(run / ".tmp-0123abcd-state.weights.h5", "half")
    inputs = {name: digest for name, digest in _hashes(root).items()
              if not name.startswith("run")}
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "took over the stale lock" in said
    assert "removed 1 temporary file(s) an interrupted run left" in said
    assert "note: --exist-ok: replaced the run" in said
    assert not (run / ".detkit.lock").exists() and not list(run.glob(".tmp-*"))
    assert (run / "best.weights.h5").read_bytes()[:4] == b"\x89HDF"
    assert json.loads((run / "state.json").read_text())["epoch"] == 1

    result = CliRunner().invoke(app, _train(root))
    assert result.exit_code == 2, result.output
    assert "already holds a run" in result.output

    monkeypatch.setattr("detkit.training.callbacks._variables_bytes", lambda v: 1 << 50)
    kept = {name: (run / name).read_bytes() for name in ("last.weights.h5", "state.json")}
    result = CliRunner().invoke(app, _train(root, "--resume", "--epochs", "2"))
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "no space left to write the checkpoint of epoch 2 (the weights of epoch 1 stay " \
           f"in {run / 'last.weights.h5'})" in said
    assert "Traceback" not in result.output
    assert {name: (run / name).read_bytes() for name in kept} == kept
    assert not (run / ".detkit.lock").exists() and not list(run.glob(".tmp-*"))
    assert {name: digest for name, digest in _hashes(root).items()
            if not name.startswith("run")} == inputs

    # A resumed run given another --lr says so, and its manifest keeps what the epochs
    # before ran with.
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    lr = json.loads((run / "manifest.json").read_text())["config"]["lr"]
    result = CliRunner().invoke(app, _train(root, "--resume", "--epochs", "2", "--lr", "0.05"))
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"--resume: --lr 0.05 replaces the run's {lr:g} from its next epoch" in said
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["lr"] == 0.05
    assert manifest["resumed"] == [                 # the resume the full disk stopped too
        {"epoch": 1, "changed": {"epochs": [1, 2]}},
        {"epoch": 1, "changed": {"lr": [lr, 0.05]}}]
