"""Writers: write-then-read round trips in every format, and synth through every reader."""

import json
import os

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from detkit.data.dataset import load_dataset
from detkit.data.records import ImageRecord
from detkit.data.synth import make_synth_dataset
from detkit.data.writers import (format_number, write_coco_json, write_voc_folder,
                                 write_yolo3_lines, write_yolo_folder)
from detkit.errors import DataError

NAMES = ["cat", "dog", "bird"]


def random_records(folder, count=5, seed=0):
    """Records of real tiny images with random in-image boxes (fractional corners)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        width, height = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        path = folder / "imgs" / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
        n = 0 if i == 1 else int(rng.integers(1, 5))
        xy = rng.uniform(0, 0.5, (n, 2)) * [width, height]
        wh = rng.uniform(0.1, 0.5, (n, 2)) * [width, height]
        boxes = np.round(np.concatenate([xy, xy + wh], axis=1), 2)
        records.append(ImageRecord(str(path), width, height, boxes,
                                   rng.integers(0, len(NAMES), n),
                                   difficult=rng.random(n) < 0.3, iscrowd=rng.random(n) < 0.3,
                                   image_id=100 + i))
    return records


def assert_same_records(read, written, *, atol=0.0, ids=False, difficult=False,
                        crowd=False):
    assert len(read) == len(written)
    for a, b in zip(read, written):
        assert os.path.samefile(a.image_path, b.image_path)
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=atol, rtol=0)
        np.testing.assert_array_equal(a.classes, b.classes)
        if ids:
            assert a.image_id == b.image_id
        if difficult:
            np.testing.assert_array_equal(a.difficult, b.difficult)
        if crowd:
            np.testing.assert_array_equal(a.iscrowd, b.iscrowd)


def test_format_number_round_trips_float32():
    values = np.random.default_rng(3).uniform(-5000, 5000, 2000).astype(np.float32)
    values = np.concatenate([values, np.float32([0, 1, 12.0, 0.1, 1e-3, 4096.5])])
    for value in values:
        assert np.float32(format_number(value)) == value
    assert format_number(12.0) == "12" and format_number(0.5) == "0.5"


def test_yolo3_lines_round_trip(tmp_path):
    records = random_records(tmp_path)
    path = write_yolo3_lines(tmp_path / "out" / "train.txt", records)
    first = path.read_text().splitlines()[0]
    assert first.startswith("../imgs/im0.png ")
    data = load_dataset(path, classes=NAMES)
    assert_same_records(data.records, records)
    assert data.fixes.summary() is None


def test_yolo3_lines_relative_to(tmp_path, monkeypatch):
    records = random_records(tmp_path, count=2)
    path = write_yolo3_lines(tmp_path / "lists" / "t.txt", records, relative_to=tmp_path)
    assert path.read_text().startswith("imgs/im0.png")
    monkeypatch.chdir(tmp_path)
    assert_same_records(load_dataset("lists/t.txt", classes=NAMES).records, records)


def test_yolo3_lines_rejects_whitespace_paths(tmp_path):
    record = ImageRecord(str(tmp_path / "a b.png"), 10, 10, np.zeros((0, 4)), [])
    with pytest.raises(DataError, match="whitespace"):
        write_yolo3_lines(tmp_path / "t.txt", [record])
    assert not (tmp_path / "t.txt").exists()


def test_coco_round_trip_keeps_ids_and_crowd(tmp_path):
    records = random_records(tmp_path)
    path = write_coco_json(tmp_path / "gt.json", records, NAMES)
    data = load_dataset(path)
    assert data.class_names == NAMES and data.category_ids == [1, 2, 3]
    assert_same_records(data.records, records, atol=1e-4, ids=True, crowd=True)
    # written category ids are kept on a second round trip through a Dataset
    write_coco_json(tmp_path / "again.json", data)
    assert load_dataset(tmp_path / "again.json").category_ids == [1, 2, 3]
    write_coco_json(tmp_path / "sparse.json", records, NAMES, category_ids=[5, 9, 2])
    sparse = load_dataset(tmp_path / "sparse.json")
    assert sparse.class_names == ["bird", "cat", "dog"] and sparse.category_ids == [2, 5, 9]


def test_coco_json_loads_in_pycocotools(tmp_path):
    records = random_records(tmp_path)
    path = write_coco_json(tmp_path / "gt.json", records, NAMES)
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [r.image_id for r in records]
    assert len(coco.getAnnIds()) == sum(r.num_boxes for r in records)
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[100]))[0]
    x1, y1, x2, y2 = records[0].boxes[0]
    np.testing.assert_allclose(ann["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-4)
    np.testing.assert_allclose(ann["area"], (x2 - x1) * (y2 - y1), rtol=1e-5)
    assert coco.loadCats(ann["category_id"])[0]["name"] == NAMES[records[0].classes[0]]
    assert json.loads(path.read_text())["images"][0]["file_name"] == "imgs/im0.png"


def test_coco_writer_errors(tmp_path):
    records = random_records(tmp_path, count=2)
    with pytest.raises(DataError, match="needs class names"):
        write_coco_json(tmp_path / "gt.json", records)
    records[1].image_id = records[0].image_id
    with pytest.raises(DataError, match="used twice"):
        write_coco_json(tmp_path / "gt.json", records, NAMES)


def test_voc_round_trip_keeps_difficult(tmp_path):
    records = random_records(tmp_path)
    write_voc_folder(tmp_path / "voc", records, NAMES)
    data = load_dataset(tmp_path / "voc", classes=NAMES)
    assert data.format == "voc"
    assert_same_records(data.records, records, atol=1e-4, difficult=True)


def test_yolo_round_trip(tmp_path):
    records = random_records(tmp_path)
    write_yolo_folder(tmp_path / "yolo", records, NAMES)
    data = load_dataset(tmp_path / "yolo")
    assert data.format == "yolo" and data.class_names == NAMES
    assert not (tmp_path / "yolo" / "labels" / "im1.txt").exists()  # negative: no file
    assert_same_records(data.records, records, atol=1e-3)


def test_synth_dataset_loads_through_every_reader(tmp_path):
    make_synth_dataset(tmp_path / "s", images=20, size=48, classes=4, seed=1,
                       val_fraction=0)
    lines = load_dataset(tmp_path / "s" / "train.txt")
    assert lines.num_boxes > 20 and lines.records[19].num_boxes == 0  # a negative
    write_voc_folder(tmp_path / "voc", lines)
    write_yolo_folder(tmp_path / "yolo", lines)
    coco = load_dataset(tmp_path / "s" / "train.json")
    voc = load_dataset(tmp_path / "voc", classes=tmp_path / "s" / "classes.txt")
    yolo = load_dataset(tmp_path / "yolo")
    for other, atol in ((coco, 0), (voc, 0), (yolo, 1e-3)):
        assert other.class_names == lines.class_names
        assert_same_records(other.records, lines.records, atol=atol)
        assert other.fixes.summary() is None
    np.testing.assert_array_equal(coco.class_counts(), lines.class_counts())
