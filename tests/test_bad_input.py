"""Bad input, table-driven: each case runs the CLI on a tiny dataset made here and asserts
the exit code, a fragment of the message, and that every input file is byte-identical
afterwards (nothing is lost or rewritten)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

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
    """One bad input: ``args(root)`` makes the inputs under ``root`` and returns argv."""

    id: str
    args: Callable[[Path], list[str]]
    exit_code: int
    message: str


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
    Case("lines-file-with-bom", lambda r: _kmeans(_lines_file(r, BOM), r), 0,
         "anchors for 4 boxes"),
    Case("coco-json-with-bom", lambda r: _kmeans(_coco(r, BOM), r), 0, "anchors for 4 boxes"),
    Case("classes-file-with-bom",
         lambda r: _kmeans(_coco(r), r, "--classes",
                           str(_write(r / "names.txt", BOM + "dog\ncat\n"))), 0,
         "anchors for 4 boxes"),
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
]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a file the command should not write lands here
    root = tmp_path / "in"
    argv = case.args(root)
    before = _hashes(root)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == case.exit_code, result.output
    assert case.message in result.output
    assert "Traceback" not in result.output
    after = _hashes(root)
    assert {name: after.get(name) for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
