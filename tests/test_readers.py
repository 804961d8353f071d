"""Annotation readers, format detection and the bad-input policy."""

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from detkit.artifacts import DetkitWarning
from detkit.data.dataset import detect_format, load_dataset, read_class_names
from detkit.data.fixes import CLIP_TOLERANCE, FixReport, fix_boxes
from detkit.data.readers import coco as coco_reader
from detkit.data.readers import image_size
from detkit.errors import DataError, UsageError


def make_image(path, width, height, **params):
    """Write a small noisy image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    flags = []
    for key, value in params.items():
        flags += [getattr(cv2, key), value]
    assert cv2.imwrite(str(path), pixels, flags)
    return path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------- image sizes

@pytest.mark.parametrize("name, params", [
    ("a.png", {}), ("b.jpg", {}), ("c.jpg", {"IMWRITE_JPEG_PROGRESSIVE": 1}),
    ("d.bmp", {}), ("e.webp", {}), ("f.tif", {}),
])
def test_image_size_matches_decoded_size(tmp_path, name, params):
    path = make_image(tmp_path / name, 37, 21, **params)
    assert image_size(path) == (37, 21)
    height, width = cv2.imread(str(path)).shape[:2]
    assert (width, height) == (37, 21)


def test_image_size_skips_large_exif_like_segments(tmp_path):
    path = make_image(tmp_path / "x.jpg", 50, 30)
    data = path.read_bytes()
    app1 = b"\xff\xe1" + (2 + 3000).to_bytes(2, "big") + b"\x00" * 3000
    path.write_bytes(data[:2] + app1 + data[2:])
    assert image_size(path) == (50, 30)


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xd9",
                                     b"\x89PNG\r\n\x1a\n\x00\x00", b"not an image at all"])
def test_image_size_corrupt_names_source_and_line(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        image_size(path, source="train.txt", line=4)
    assert str(info.value).startswith("train.txt:4: ")
    assert "bad.jpg" in str(info.value)


def test_image_size_missing(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        image_size(tmp_path / "nope.png")


# ------------------------------------------------------------------------ box fixes

def reference_fix(boxes, width, height):
    """Loop-based clip/drop with the documented counting rules."""
    out, keep = [], []
    counts = {"degenerate": 0, "outside": 0, "clipped": 0}
    for x1, y1, x2, y2 in boxes:
        if x2 <= x1 or y2 <= y1:
            counts["degenerate"] += 1
            keep.append(False)
            out.append([min(max(x1, 0), width), min(max(y1, 0), height),
                        min(max(x2, 0), width), min(max(y2, 0), height)])
            continue
        c = [min(max(x1, 0), width), min(max(y1, 0), height),
             min(max(x2, 0), width), min(max(y2, 0), height)]
        if c[2] <= c[0] or c[3] <= c[1]:
            counts["outside"] += 1
            keep.append(False)
        else:
            keep.append(True)
            if max(abs(a - b) for a, b in zip(c, [x1, y1, x2, y2])) > CLIP_TOLERANCE:
                counts["clipped"] += 1
        out.append(c)
    return np.float32(out), np.array(keep), counts


def test_a_rounding_overshoot_is_clipped_without_counting_as_a_repair(tmp_path):
    """Normalized labels written to 6 decimals overshoot the edge by up to 5e-7 of a side:
    clipped silently; a real overshoot is clipped and counted."""
    report = FixReport()
    boxes, keep = fix_boxes(np.float32([[0, 0, 640.0003, 480], [-0.002, 1, 20, 20],
                                        [0, 0, 641, 480]]), 640, 480, report)
    assert keep.all() and boxes[:, 2].max() == 640 and boxes[1, 0] == 0
    assert (report.clipped, report.total) == (1, 1)
    root = tmp_path / "yolo"
    make_image(root / "images" / "a.jpg", 640, 480)
    write(root / "labels" / "a.txt", "0 0.500000 0.500000 1.000001 0.400000\n")
    data = load_dataset(root)
    assert data.fixes.total == 0 and data.records[0].boxes[0, 2] == 640


def test_fix_boxes_matches_loop_reference():
    rng = np.random.default_rng(1)
    boxes = rng.integers(-30, 130, (400, 4)).astype(np.float32)
    report = FixReport()
    fixed, keep = fix_boxes(boxes, 100, 80, report, where="f.txt:3")
    ref_boxes, ref_keep, counts = reference_fix(boxes.tolist(), 100, 80)
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_allclose(fixed[keep], ref_boxes[ref_keep])
    assert (report.dropped_degenerate, report.dropped_outside, report.clipped) == \
        (counts["degenerate"], counts["outside"], counts["clipped"])
    assert counts["degenerate"] and counts["outside"] and counts["clipped"]
    assert report.examples == ["f.txt:3"]


def test_fix_report_summary():
    report = FixReport()
    assert report.summary() is None
    fix_boxes(np.float32([[5, 5, 5, 9], [-3, 0, 4, 4], [0, 0, 2, 2]]), 10, 10, report, "a:1")
    fix_boxes(np.float32([[20, 20, 30, 30]]), 10, 10, report, "a:2")
    assert report.summary() == ("fixed 3 boxes: dropped 1 with zero or negative area, "
                                "dropped 1 entirely outside the image, clipped 1 to the "
                                "image (e.g. a:1, a:2)")


# -------------------------------------------------------------------- keras-yolo3 lines

@pytest.fixture
def lines_dataset(tmp_path):
    make_image(tmp_path / "imgs" / "a.png", 40, 30)
    make_image(tmp_path / "imgs" / "b.jpg", 20, 50)
    write(tmp_path / "classes.txt", "cat\ndog\n\nbird\n")
    write(tmp_path / "train.txt",
          "# a comment\n"
          "imgs/a.png 1,2,11,12,0 3.5,4,20,25.25,2\n"
          "\n"
          "imgs/b.jpg\n"
          "imgs/a.png 0,0,40,30,1\n")
    return tmp_path


def test_yolo3_lines_reads_boxes_sizes_ids_and_lines(lines_dataset):
    data = load_dataset(lines_dataset / "train.txt")
    assert data.format == "yolo3"
    assert data.class_names == ["cat", "dog", "bird"]
    assert len(data) == 3 and data.num_boxes == 3
    a, b, again = data.records
    assert (a.width, a.height, b.width, b.height) == (40, 30, 20, 50)
    np.testing.assert_array_equal(a.boxes, np.float32([[1, 2, 11, 12], [3.5, 4, 20, 25.25]]))
    np.testing.assert_array_equal(a.classes, [0, 2])
    assert a.boxes.dtype == np.float32 and a.classes.dtype == np.int32
    assert b.num_boxes == 0 and b.boxes.shape == (0, 4)
    assert [r.image_id for r in data.records] == [0, 1, 2]
    assert [r.source_line for r in data.records] == [2, 4, 5]
    assert a.image_path == os.path.join(str(lines_dataset), "imgs", "a.png")
    assert again.image_path == a.image_path
    assert not a.difficult.any() and not a.iscrowd.any()
    assert data.fixes.summary() is None
    np.testing.assert_array_equal(data.class_counts(), [1, 1, 1])


def test_yolo3_paths_relative_to_cwd_also_work(tmp_path, monkeypatch):
    make_image(tmp_path / "pics" / "a.png", 8, 8)
    write(tmp_path / "lists" / "t.txt", "pics/a.png 1,1,4,4,0\n")
    monkeypatch.chdir(tmp_path)
    data = load_dataset("lists/t.txt")
    assert data.records[0].image_path == os.path.join("pics", "a.png")
    assert data.class_names == ["0"]


def test_yolo3_absolute_paths(tmp_path):
    image = make_image(tmp_path / "a.png", 8, 8)
    write(tmp_path / "sub" / "t.txt", f"{image} 1,1,4,4,3\n")
    data = load_dataset(tmp_path / "sub" / "t.txt")
    assert data.records[0].image_path == str(image)
    assert data.class_names == ["0", "1", "2", "3"]


@pytest.mark.parametrize("line, message", [
    ("imgs/a.png 1,2,3,0", "malformed box '1,2,3,0'"),
    ("imgs/a.png 1,2,x,4,0", "not a number"),
    ("imgs/a.png 1,2,nan,4,0", "not finite"),
    ("imgs/a.png 1,2,3,4,1.5", "not an integer"),
    ("imgs/a.png 1,2,3,4,3", "class id 3 out of range"),
    ("imgs/a.png 1,2,3,4,-1", "class id -1 out of range"),
    ("imgs/missing.png 1,2,3,4,0", "image file not found: imgs/missing.png"),
    ("imgs/corrupt.jpg 1,2,3,4,0", "corrupt or unsupported image"),
])
def test_yolo3_bad_lines_name_file_and_line(lines_dataset, line, message):
    write(lines_dataset / "imgs" / "corrupt.jpg", "garbage")
    path = write(lines_dataset / "bad.txt", "imgs/b.jpg\n\n" + line + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, classes=lines_dataset / "classes.txt")
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_yolo3_fixes_are_counted_not_raised(lines_dataset):
    path = write(lines_dataset / "fix.txt",
                 "imgs/a.png 5,5,5,9,0 -4,2,10,40,1 50,50,60,60,0 1,1,3,3,2\n"
                 "imgs/b.jpg 3,3,1,1,0\n")
    data = load_dataset(path)
    fixes = data.fixes
    assert (fixes.dropped_degenerate, fixes.dropped_outside, fixes.clipped) == (2, 1, 1)
    np.testing.assert_array_equal(data.records[0].boxes, np.float32([[0, 2, 10, 30],
                                                                     [1, 1, 3, 3]]))
    np.testing.assert_array_equal(data.records[0].classes, [1, 2])
    assert data.records[1].num_boxes == 0
    assert f"{path}:1" in fixes.summary() and f"{path}:2" in fixes.summary()


def test_empty_lines_file_is_an_error(tmp_path):
    path = write(tmp_path / "empty.txt", "\n# nothing\n")
    with pytest.raises(DataError, match="no images"):
        load_dataset(path, classes=["a"])


# -------------------------------------------------------------------------------- COCO

def coco_dict():
    return {
        "images": [{"id": 10, "file_name": "x.png", "width": 40, "height": 30},
                   {"id": 3, "file_name": "y.png", "width": 20, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [0, 0, 4, 4], "iscrowd": 1},
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [35, 0, 10, 5]},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}],
    }


def test_coco_maps_sparse_ids_and_keeps_image_ids_and_crowd(tmp_path):
    path = write(tmp_path / "gt.json", json.dumps(coco_dict()))
    data = load_dataset(path)
    assert data.format == "coco"
    assert data.class_names == ["cat", "dog"] and data.category_ids == [2, 7]
    x, y = data.records
    assert (x.image_id, y.image_id) == (10, 3)
    assert (x.width, x.height) == (40, 30)
    np.testing.assert_array_equal(x.boxes, np.float32([[1, 2, 11, 7], [0, 0, 4, 4],
                                                       [35, 0, 40, 5]]))
    np.testing.assert_array_equal(x.classes, [1, 0, 1])
    np.testing.assert_array_equal(x.iscrowd, [False, True, False])
    assert y.num_boxes == 0
    assert data.fixes.clipped == 1
    assert x.image_path == os.path.join(str(tmp_path), "x.png")


def test_training_leaves_crowd_regions_out(tmp_path):
    """Training (and kmeans-anchors, encode-labels) sees the dataset without its crowd
    regions, which COCO evaluation ignores, and a note says how many; the images stay."""
    from typer.testing import CliRunner

    from detkit.cli import app

    path = write(tmp_path / "gt.json", json.dumps(coco_dict()))
    data = load_dataset(path)
    trained, note = data.for_training()
    assert note == "1 crowd region (COCO iscrowd) left out of training: COCO evaluation " \
                   "ignores them"
    x, y = trained.records
    np.testing.assert_array_equal(x.boxes, np.float32([[1, 2, 11, 7], [35, 0, 40, 5]]))
    np.testing.assert_array_equal(x.classes, [1, 1])
    assert not x.iscrowd.any() and y.num_boxes == 0 and data.records[0].num_boxes == 3
    assert data.for_training()[0].records[0].num_boxes == 2
    again, no_note = trained.for_training()               # nothing left to drop
    assert again is trained and no_note is None
    result = CliRunner().invoke(app, ["kmeans-anchors", str(path), "--k", "2",
                                      "--input-size", "64", "--out", str(tmp_path / "a.txt")])
    assert result.exit_code == 0, result.output
    assert "note: 1 crowd region (COCO iscrowd) left out of training" in result.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["n_boxes"] == 2, report


def test_coco_with_class_names_maps_by_name(tmp_path):
    path = write(tmp_path / "gt.json", json.dumps(coco_dict()))
    data = load_dataset(path, classes=["dog", "bird", "cat"])
    assert data.class_names == ["dog", "bird", "cat"]
    assert data.category_ids == [7, 8, 2]
    np.testing.assert_array_equal(data.records[0].classes, [0, 2, 0])


def test_coco_images_folder_and_image_dir(tmp_path):
    make_image(tmp_path / "images" / "x.png", 40, 30)
    path = write(tmp_path / "gt.json", json.dumps(coco_dict()))
    data = load_dataset(path)
    assert data.records[0].image_path == os.path.join(str(tmp_path), "images", "x.png")
    data = load_dataset(path, image_dir=tmp_path / "elsewhere")
    assert data.records[1].image_path == os.path.join(str(tmp_path), "elsewhere", "y.png")
    with pytest.raises(DataError, match=r"image file not found: .*y\.png \(image id 3\)"):
        load_dataset(path, check_images=True)


@pytest.mark.parametrize("folder", ["val2017", "images/val2017", "images"])
def test_coco_2017_layouts_find_the_splits_images(tmp_path, folder):
    """``ROOT/annotations/instances_val2017.json`` with ``ROOT/val2017/`` (COCO's own
    layout), ``ROOT/images/val2017/`` (Ultralytics') or ``ROOT/images/`` (CVAT's)."""
    make_image(tmp_path / folder / "x.png", 40, 30)
    path = write(tmp_path / "annotations" / "instances_val2017.json", json.dumps(coco_dict()))
    data = load_dataset(path, check_images=False)
    assert data.records[0].image_path == os.path.join(str(tmp_path), *folder.split("/"),
                                                      "x.png")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["annotations"][0].update(category_id=5), "unknown category id 5"),
    (lambda d: d["annotations"][1].update(image_id=99), "unknown image id 99"),
    (lambda d: d["annotations"][2].update(bbox=[1, 2, 3]), "annotation id 3: 'bbox'"),
    (lambda d: d["annotations"][2].update(bbox=[1, "a", 3, 4]), "must hold numbers"),
    (lambda d: d["images"][0].pop("width"), "image id 10: 'width' must be an integer"),
    (lambda d: d["images"].append(dict(d["images"][0])), "image id 10 is given twice"),
    (lambda d: d.pop("categories"), "not a COCO dataset"),
])
def test_coco_bad_input(tmp_path, mutate, message):
    data = coco_dict()
    mutate(data)
    path = write(tmp_path / "gt.json", json.dumps(data))
    with pytest.raises(DataError, match=message) as info:
        load_dataset(path)
    assert str(info.value).startswith(str(path))


def test_coco_unknown_class_name(tmp_path):
    path = write(tmp_path / "gt.json", json.dumps(coco_dict()))
    with pytest.raises(DataError, match="unknown class name 'dog'"):
        load_dataset(path, classes=["cat", "bird"])


def test_coco_invalid_json_names_line(tmp_path):
    path = write(tmp_path / "gt.json", '{\n  "images": [],\n  "annotations": [,]\n}\n')
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{path}:3: invalid JSON")


def test_coco_results_list_is_not_ground_truth(tmp_path):
    path = write(tmp_path / "dets.json", json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(DataError, match="detections list is not ground truth"):
        load_dataset(path)


# --------------------------------------------------------------------------------- VOC

VOC_XML = """<annotation>
  <folder>VOC</folder>
  <filename>{name}</filename>
  {size}
  <object>
    <name>{first}</name>
    <difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox>
  </object>
  <object>
    <name>aeroplane</name>
    <difficult>1</difficult>
    <bndbox><xmin>5.5</xmin><ymin>6</ymin><xmax>70</xmax><ymax>7</ymax></bndbox>
  </object>
</annotation>
"""
SIZE = "<size><width>64</width><height>48</height><depth>3</depth></size>"


def make_voc(root, first="person", size=SIZE):
    write(root / "Annotations" / "001.xml", VOC_XML.format(name="001.jpg", size=size,
                                                            first=first))
    write(root / "Annotations" / "002.xml", "<annotation><filename>002.jpg</filename>"
          f"{SIZE}</annotation>")
    make_image(root / "JPEGImages" / "001.jpg", 64, 48)
    make_image(root / "JPEGImages" / "002.jpg", 64, 48)
    return root


def test_voc_reads_corners_difficult_and_names(tmp_path):
    data = load_dataset(make_voc(tmp_path / "VOC"))
    assert data.format == "voc"
    assert data.class_names == ["aeroplane", "person"]
    first, second = data.records
    np.testing.assert_array_equal(first.boxes, np.float32([[0, 1, 10, 20], [4.5, 5, 64, 7]]))
    np.testing.assert_array_equal(first.classes, [1, 0])
    np.testing.assert_array_equal(first.difficult, [False, True])
    assert first.image_path == os.path.join(str(tmp_path), "VOC", "JPEGImages", "001.jpg")
    assert second.num_boxes == 0 and (second.width, second.height) == (64, 48)
    assert data.fixes.clipped == 1


def test_voc_size_from_image_when_missing(tmp_path):
    root = make_voc(tmp_path / "VOC", size="<size><width>0</width><height>0</height></size>")
    make_image(root / "JPEGImages" / "001.jpg", 100, 90)
    record = load_dataset(root).records[0]
    assert (record.width, record.height) == (100, 90)
    assert load_dataset(root).fixes.summary() is None


def test_voc_unknown_class_names_the_object_line(tmp_path):
    root = make_voc(tmp_path / "VOC", first="zebra")
    with pytest.raises(DataError) as info:
        load_dataset(root, classes=["person", "aeroplane"])
    assert str(info.value).startswith(f"{root / 'Annotations' / '001.xml'}:5: ")
    assert "unknown class name 'zebra'" in str(info.value)


def test_unknown_class_differing_only_in_case_says_so(tmp_path):
    """VOC, COCO and CSV name the known class a label matches but for case."""
    root = make_voc(tmp_path / "VOC")
    with pytest.raises(DataError) as info:
        load_dataset(root, classes=["Person", "aeroplane"])
    assert str(info.value).endswith("unknown class name 'person' (differs only in case "
                                    "from 'Person'); known classes: Person, aeroplane")
    path = write(tmp_path / "gt.json", json.dumps(coco_dict()))
    with pytest.raises(DataError) as info:
        load_dataset(path, classes=["cat", "Dog"])
    assert str(info.value).endswith("unknown class name 'dog' (category id 7; differs only "
                                    "in case from 'Dog'); known classes: cat, Dog")
    path = make_csv(tmp_path / "csv", "filename,class,xmin,ymin,xmax,ymax\nb.png,Dog,1,2,5,6\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, classes=["dog", "cat"])
    assert str(info.value) == (f"{path}:2: unknown class name 'Dog' (differs only in case "
                               "from 'dog'); known classes: dog, cat")


def test_voc_bad_xml_and_bad_number(tmp_path):
    root = make_voc(tmp_path / "VOC")
    write(root / "Annotations" / "003.xml", "<annotation>\n<filename>x</filename>\n<obj\n")
    with pytest.raises(DataError, match="invalid XML") as info:
        load_dataset(root)
    assert ":4: " in str(info.value) or ":3: " in str(info.value)
    write(root / "Annotations" / "003.xml", VOC_XML.format(
        name="001.jpg", size=SIZE, first="person").replace("<ymax>20", "<ymax>2o"))
    with pytest.raises(DataError, match=r"003\.xml:5: malformed <ymax>"):
        load_dataset(root)


def make_voc_splits(root):
    """:func:`make_voc` plus 003 (a dog) and ImageSets/Main lists, as VOCdevkit has them."""
    make_voc(root)
    write(root / "Annotations" / "003.xml", VOC_XML.format(name="003.jpg", size=SIZE,
                                                            first="dog"))
    make_image(root / "JPEGImages" / "003.jpg", 64, 48)
    write(root / "ImageSets" / "Main" / "train.txt", "003\n001\n")
    write(root / "ImageSets" / "Main" / "val.txt", "002\n\n")
    write(root / "ImageSets" / "Main" / "dog_train.txt", "003  1\n001 -1\n")
    return root


def test_voc_split_list_reads_its_images_in_list_order(tmp_path, monkeypatch):
    root = make_voc_splits(tmp_path / "VOC2007")
    train = load_dataset(root / "ImageSets" / "Main" / "train.txt")
    assert train.format == "voc" and train.class_names == ["aeroplane", "dog", "person"]
    assert [Path(r.image_path).name for r in train.records] == ["003.jpg", "001.jpg"]
    np.testing.assert_array_equal(train.records[1].boxes, [[0, 1, 10, 20], [4.5, 5, 64, 7]])
    np.testing.assert_array_equal(train.records[1].difficult, [False, True])
    dog = load_dataset(root / "ImageSets" / "Main" / "dog_train.txt")
    assert [r.image_path for r in dog.records] == [r.image_path for r in train.records]
    action = write(root / "ImageSets" / "Action" / "train.txt", "003 1\n003 2\n001 1\n")
    assert [r.image_path for r in load_dataset(action).records] == [   # one per person
        r.image_path for r in train.records]
    val = load_dataset(root / "ImageSets" / "Main" / "val.txt")
    assert [Path(r.image_path).name for r in val.records] == ["002.jpg"]
    write(root / "classes.txt", "person\ndog\naeroplane\n")   # the VOC root's list
    assert load_dataset(root / "ImageSets" / "Main" / "val.txt").class_names == [
        "person", "dog", "aeroplane"]
    for folder, split in ((root / "ImageSets", "Main/train.txt"),
                          (root / "ImageSets" / "Main", "train.txt")):
        monkeypatch.chdir(folder)                   # relative paths from inside the root
        assert [Path(r.image_path).name for r in load_dataset(split).records] == [
            "003.jpg", "001.jpg"]


@pytest.mark.parametrize("text, line, message", [
    ("001\n004\n", 2, "no annotation file for image id '004' (looked for "),
    ("\n\n", None, "no image ids in the split list"),
])
def test_voc_bad_split_list_names_the_line(tmp_path, text, line, message):
    root = make_voc_splits(tmp_path / "VOC2007")
    split = write(root / "ImageSets" / "Main" / "test.txt", text)
    with pytest.raises(DataError) as info:
        load_dataset(split)
    where = f"{split}:{line}: " if line else f"{split}: "
    assert str(info.value).startswith(where + message), str(info.value)


def test_voc_flat_folder_with_images_beside(tmp_path):
    write(tmp_path / "a.xml", VOC_XML.format(name="a.png", size="", first="dog"))
    make_image(tmp_path / "a.png", 30, 40)
    data = load_dataset(tmp_path)
    assert data.format == "voc" and (data.records[0].width, data.records[0].height) == (30, 40)
    assert data.records[0].image_path == os.path.join(str(tmp_path), "a.png")


def test_voc_single_xml_file_is_a_dataset_of_one_image(tmp_path):
    """One image's .xml (of a flat folder or of Annotations/) reads as that image alone,
    its image found where the whole dataset's would be."""
    write(tmp_path / "flat" / "a.xml", VOC_XML.format(name="a.png", size="", first="dog"))
    write(tmp_path / "flat" / "b.xml", VOC_XML.format(name="b.png", size="", first="cat"))
    make_image(tmp_path / "flat" / "a.png", 30, 40)
    data = load_dataset(tmp_path / "flat" / "a.xml")
    assert data.format == "voc" and len(data.records) == 1
    assert data.class_names == ["aeroplane", "dog"]
    assert data.records[0].image_path == os.path.join(str(tmp_path), "flat", "a.png")
    whole = load_dataset(make_voc(tmp_path / "VOC"))
    one = load_dataset(tmp_path / "VOC" / "Annotations" / "001.xml")
    assert one.records[0].image_path == whole.records[0].image_path
    np.testing.assert_array_equal(one.records[0].boxes, whole.records[0].boxes)


def test_voc_missing_image_is_looked_for_where_the_dataset_keeps_images(tmp_path):
    """An image that is nowhere: its expected place is the dataset's (beside the xml in a
    flat folder, JPEGImages/ in a VOC one), not the annotator's ``<path>``."""
    stale = "<path>/Users/someone/Desktop/raccoon/images/a.jpg</path>"
    write(tmp_path / "flat" / "a.xml", VOC_XML.format(name="a.jpg", size=SIZE, first="dog")
          .replace("<annotation>", "<annotation>" + stale))
    assert load_dataset(tmp_path / "flat").records[0].image_path == os.path.join(
        str(tmp_path), "flat", "a.jpg")
    root = make_voc(tmp_path / "VOC")
    (root / "JPEGImages" / "001.jpg").unlink()
    assert load_dataset(root).records[0].image_path == os.path.join(
        str(tmp_path), "VOC", "JPEGImages", "001.jpg")
    write(tmp_path / "kept" / "Annotations" / "a.xml",
          VOC_XML.format(name="a.jpg", size=SIZE, first="dog"))
    (tmp_path / "kept" / "images").mkdir()
    make_image(tmp_path / "kept" / "images" / "other.jpg", 8, 8)
    assert load_dataset(tmp_path / "kept").records[0].image_path == os.path.join(
        str(tmp_path), "kept", "images", "a.jpg")


# -------------------------------------------------------------------------------- YOLO

def make_yolo(root):
    make_image(root / "images" / "train" / "a.jpg", 100, 50)
    make_image(root / "images" / "train" / "b.png", 10, 10)
    write(root / "labels" / "train" / "a.txt", "1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.1 0.1\n")
    return root


def test_yolo_folder_denormalizes_and_allows_missing_labels(tmp_path):
    root = make_yolo(tmp_path / "ds")
    data = load_dataset(root)
    assert data.format == "yolo" and data.class_names == ["0", "1"]
    a, b = data.records
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [5, 2.5, 15, 7.5]], atol=1e-4)
    np.testing.assert_array_equal(a.classes, [1, 0])
    assert b.num_boxes == 0 and (b.width, b.height) == (10, 10)


@pytest.mark.parametrize("names_file, text, expected", [
    ("data.yaml", "names: [cat, dog, cow]\n", ["cat", "dog", "cow"]),
    ("data.yaml", "names:\n  0: cat\n  1: dog\n", ["cat", "dog"]),
    ("data.yaml", "nc: 2\nnames: [cat, dog]\n", ["cat", "dog"]),
    ("classes.txt", "x\ny\n", ["x", "y"]),
    ("labels/classes.txt", "p\nq\nr\n", ["p", "q", "r"]),
])
def test_yolo_class_names_sources(tmp_path, names_file, text, expected):
    root = make_yolo(tmp_path / "ds")
    write(root / names_file, text)
    assert load_dataset(root).class_names == expected


def test_yolo_class_count_must_agree_with_the_names(tmp_path):
    root = make_yolo(tmp_path / "ds")
    write(root / "data.yaml", "nc: 4\nnames: [cat, dog, cow]\n")
    with pytest.raises(DataError, match="data.yaml: 'nc' is 4 but 'names' lists 3 classes: "
                                        "they must agree"):
        load_dataset(root)


@pytest.mark.parametrize("label, message", [
    ("1 0.5 0.5 0.2\n", "malformed label line"),
    ("2 0.5 0.5 0.2 0.2\n", "class id 2 out of range"),
    ("1 0.5 zz 0.2 0.2\n", "not a number"),
])
def test_yolo_bad_label_line(tmp_path, label, message):
    root = make_yolo(tmp_path / "ds")
    path = write(root / "labels" / "train" / "a.txt", "0 0.5 0.5 0.1 0.1\n" + label)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(root, classes=["a", "b"])
    assert str(info.value).startswith(f"{path}:2: ")


def test_yolo_polygon_lines_are_their_enclosing_boxes(tmp_path):
    """Ultralytics' segmentation labels: ``class x1 y1 ... xn yn``, the box around them."""
    root = make_yolo(tmp_path / "ds")
    write(root / "labels" / "train" / "a.txt",
          "1 0.5 0.5 0.2 0.4\n0 0.1 0.2 0.3 0.1 0.25 0.6\n1 0.9 0.9 0.7 0.95 0.8 0.7 0.75 0.85\n")
    a = load_dataset(root).records[0]
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [10, 5, 30, 30],
                                         [70, 35, 90, 47.5]], atol=1e-4)
    np.testing.assert_array_equal(a.classes, [1, 0, 1])


def test_yolo_pose_lines_keep_their_box(tmp_path):
    """With ``kpt_shape: [K, D]`` a line is a box and K * D keypoint values (dropped)."""
    root = make_yolo(tmp_path / "ds")
    write(root / "data.yaml", "names: [a, b]\nkpt_shape: [3, 2]\n")
    label = write(root / "labels" / "train" / "a.txt",
                  "1 0.5 0.5 0.2 0.4 0.45 0.4 0.5 0.5 0.55 0.6\n")
    a = load_dataset(root).records[0]
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35]], atol=1e-4)
    write(label, "1 0.5 0.5 0.2 0.4\n")    # a box without its keypoints
    with pytest.raises(DataError) as info:
        load_dataset(root)
    assert str(info.value) == (
        f"{label}:1: malformed label line '1 0.5 0.5 0.2 0.4': expected 'class cx cy w h' "
        "and 6 keypoint values (kpt_shape of data.yaml)")
    yaml_file = write(root / "data.yaml", "names: [a, b]\nkpt_shape: [3]\n")
    with pytest.raises(DataError, match=r"'kpt_shape' must be \[keypoints, values per "
                       r"keypoint\], got \[3\]") as info:
        load_dataset(root)
    assert str(info.value).startswith(f"{yaml_file}: ")


@pytest.mark.parametrize("label, message", [
    ("0 0.1 0.2 0.3 0.1 0.25\n", "malformed label line '0 0.1 0.2 0.3 0.1 0.25': expected "
     "'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...'; a pose line? "
     "data.yaml's kpt_shape says how many keypoint values follow the box"),
    ("0 0.1 0.2 0.3\n", "malformed label line '0 0.1 0.2 0.3': expected 'class cx cy w h' "
     "or a polygon 'class x1 y1 x2 y2 x3 y3 ...'"),
    ("0 0.1 0.2 0.3 0.1 0.25 nan\n", "malformed box: 'nan' is not finite"),
    ("0 10 20 30 10 25 60\n", "polygon values 10 20 30 10 25 60 look like pixel coordinates"),
])
def test_yolo_bad_polygon_line(tmp_path, label, message):
    root = make_yolo(tmp_path / "ds")
    path = write(root / "labels" / "train" / "a.txt", "0 0.5 0.5 0.1 0.1\n" + label)
    with pytest.raises(DataError) as info:
        load_dataset(root, classes=["a", "b"])
    assert str(info.value).startswith(f"{path}:2: {message}"), str(info.value)


def test_yolo_split_folders_read_alone_with_the_roots_names(tmp_path):
    """``ROOT/images/train`` is one split (coco8's layout); Roboflow's ``data.yaml`` sits
    above ``train/`` and ``valid/``, each a YOLO folder."""
    root = make_yolo(tmp_path / "ds")           # images/train: a.jpg, b.png
    make_image(root / "images" / "val" / "c.jpg", 40, 20)
    write(root / "labels" / "val" / "c.txt", "2 0.5 0.5 0.5 0.5\n")
    write(root / "data.yaml", "names: [cat, dog, cow]\n")
    train = load_dataset(root / "images" / "train")
    assert train.format == "yolo" and train.class_names == ["cat", "dog", "cow"]
    assert [Path(r.image_path).name for r in train.records] == ["a.jpg", "b.png"]
    val = load_dataset(root / "images" / "val")
    assert [Path(r.image_path).name for r in val.records] == ["c.jpg"]
    np.testing.assert_allclose(val.records[0].boxes, [[10, 5, 30, 15]])
    with pytest.warns(DetkitWarning, match="holds the splits train, val"):
        assert len(load_dataset(root).records) == 3      # the whole folder: both splits
    write(root / "classes.txt", "x\ny\nz\n")          # the root's classes.txt first
    assert load_dataset(root / "images" / "val").class_names == ["x", "y", "z"]
    roboflow = tmp_path / "export"
    make_yolo(roboflow / "train")
    write(roboflow / "data.yaml", "train: ../train/images\nnames: [p, q]\n")
    assert load_dataset(roboflow / "train").class_names == ["p", "q"]
    write(roboflow / "data.yaml", "unrelated: true\n")  # a parent's yaml without names
    assert load_dataset(roboflow / "train").class_names == ["0", "1"]


def test_yolo_folder_with_splits_warns_that_it_reads_them_all(tmp_path, recwarn):
    """A whole folder holding ``images/train`` and ``images/val`` is read (doctor on all
    of it is fine) with one warning: training on it would train on the val images."""
    root = make_yolo(tmp_path / "ds")                    # images/train only: no warning
    assert len(load_dataset(root).records) == 2
    flat = tmp_path / "flat"                             # images directly in images/
    make_image(flat / "images" / "a.jpg", 20, 10)
    write(flat / "labels" / "a.txt", "0 0.5 0.5 0.2 0.2\n")
    (flat / "images" / "train").mkdir()                  # one split folder: no warning
    assert len(load_dataset(flat).records) == 1
    assert not [w for w in recwarn if issubclass(w.category, DetkitWarning)]
    make_image(root / "images" / "val" / "c.jpg", 40, 20)
    write(root / "labels" / "val" / "c.txt", "1 0.5 0.5 0.5 0.5\n")
    with pytest.warns(DetkitWarning) as told:
        assert len(load_dataset(root).records) == 3
    assert [str(w.message) for w in told] == [
        f"{root} holds the splits train, val and reads them all: for training give "
        f"{root}/images/train (with --val {root}/images/val)"]
    write(root / "data.yaml", "names: [a, b]\n")
    make_image(root / "images" / "test" / "d.jpg", 40, 20)
    with pytest.warns(DetkitWarning) as told:
        load_dataset(root)
    assert [str(w.message) for w in told] == [
        f"{root} holds the splits test, train, val and reads them all: for training give "
        f"{root}/images/train (with --val {root}/images/val) or {root}/data.yaml"]
    recwarn.clear()
    load_dataset(root / "images" / "val")               # one split: no warning
    assert not [w for w in recwarn if issubclass(w.category, DetkitWarning)]


def test_roboflow_export_root_says_to_give_its_data_yaml(tmp_path):
    """Roboflow's layout, ``train/images`` + ``valid/images`` + ``data.yaml``: its root is
    no dataset itself; the error says what to give."""
    root = tmp_path / "robo"
    make_yolo(root / "train")
    make_yolo(root / "valid")
    with pytest.raises(UsageError) as info:
        load_dataset(root)
    assert str(info.value) == (f"{root} looks like a Roboflow/Ultralytics export: give "
                               f"{root}/train")
    write(root / "data.yaml", "train: ../train/images\nval: ../valid/images\nnames: [a, b]\n")
    with pytest.raises(UsageError) as info:
        detect_format(root)
    assert str(info.value) == (f"{root} looks like a Roboflow/Ultralytics export: give "
                               f"{root}/data.yaml (or {root}/train)")
    with pytest.raises(DataError) as info:
        load_dataset(root, format="yolo")
    assert str(info.value) == (f"{root}: expected images/ and labels/ folders; it looks "
                               f"like a Roboflow/Ultralytics export: give {root}/data.yaml "
                               f"(or {root}/train)")
    assert len(load_dataset(root / "data.yaml").records) == 2
    (root / "other").mkdir()                            # a folder of nothing: as before
    with pytest.raises(UsageError, match="cannot tell the dataset format.*set --format"):
        detect_format(root / "other")


def test_ultralytics_image_list_reads_its_images_in_list_order(tmp_path, monkeypatch):
    """``ROOT/train.txt``: image paths (``./images/...`` relative to the list), each
    labelled by ``labels/`` at the same place (coco2017's ``train2017.txt``)."""
    root = make_yolo(tmp_path / "ds")
    make_image(root / "images" / "val" / "c.jpg", 40, 20)
    write(root / "labels" / "val" / "c.txt", "1 0.5 0.5 0.5 0.5\n")
    listing = write(root / "train.txt", "./images/val/c.jpg\n\nimages/train/a.jpg\n"
                    f"{root / 'images' / 'train' / 'b.png'}\n")
    data = load_dataset(listing)
    assert data.format == "yolo" and data.class_names == ["0", "1"]
    assert [Path(r.image_path).name for r in data.records] == ["c.jpg", "a.jpg", "b.png"]
    np.testing.assert_allclose(data.records[0].boxes, [[10, 5, 30, 15]])
    assert len(data.records[1].boxes) == 2 and len(data.records[2].boxes) == 0
    monkeypatch.chdir(root)                  # a relative list from the dataset's root
    assert len(load_dataset("train.txt").records) == 3


@pytest.mark.parametrize("text, line, message", [
    ("images/train/a.jpg\nimages/train/b.png 1,2,3,4,0\n", 2,
     "expected one image path a line (an Ultralytics image list), got 'images/train/b.png "
     "1,2,3,4,0'; for keras-yolo3 lines set --format yolo3"),
    ("images/train/a.jpg\nother/b.png\n", 2,
     "image 'other/b.png' is not under an 'images' folder, so it has no 'labels' folder"),
])
def test_ultralytics_bad_image_list_names_the_line(tmp_path, text, line, message):
    root = make_yolo(tmp_path / "ds")
    listing = write(root / "train.txt", text)
    with pytest.raises(DataError) as info:
        load_dataset(listing, format="yolo")    # (detected, the first is keras-yolo3's)
    assert str(info.value) == f"{listing}:{line}: {message}"


@pytest.mark.parametrize("text", ["images/train/a.jpg 1,2,30,20,0\nimages/train/b.png\n",
                                  "images/train/b.png\nimages/train/a.jpg 1,2,30,20,0\n"])
def test_lines_file_is_not_taken_for_an_image_list(tmp_path, text):
    """Any line with boxes makes it keras-yolo3's, even after a negative image's line."""
    root = make_yolo(tmp_path / "ds")
    lines = write(root / "train.txt", text)
    assert detect_format(lines) == "yolo3"
    assert load_dataset(lines).num_boxes == 1


def test_yolo_paths_relative_to_a_folder_inside_the_dataset(tmp_path, monkeypatch):
    """``.`` and other relative names still find the split, the parent's data.yaml, its
    kpt_shape and, for COCO, the images of annotations/instances_val2017.json."""
    root = make_yolo(tmp_path / "ds")
    write(root / "data.yaml", "names: [cat, dog]\nkpt_shape: [1, 3]\n")
    write(root / "labels" / "train" / "a.txt", "1 0.5 0.5 0.2 0.4 0.5 0.5 2\n")
    monkeypatch.chdir(root / "images" / "train")
    data = load_dataset(".")
    assert (data.format, data.class_names) == ("yolo", ["cat", "dog"])
    np.testing.assert_allclose(data.records[0].boxes, [[40, 15, 60, 35]], atol=1e-4)
    monkeypatch.chdir(root / "images")
    assert load_dataset("train").class_names == ["cat", "dog"]
    make_image(tmp_path / "coco" / "val2017" / "x.png", 40, 30)
    write(tmp_path / "coco" / "annotations" / "instances_val2017.json", json.dumps(coco_dict()))
    monkeypatch.chdir(tmp_path / "coco" / "annotations")
    record = load_dataset("instances_val2017.json").records[0]
    assert os.path.isfile(record.image_path)


def test_coco_outside_an_annotations_folder_looks_only_beside_it(tmp_path):
    make_image(tmp_path / "images" / "x.png", 40, 30)      # another dataset's images
    path = write(tmp_path / "b" / "instances_val.json", json.dumps(coco_dict()))
    assert load_dataset(path).records[0].image_path == os.path.join(str(tmp_path), "b",
                                                                    "x.png")


def test_polygon_coordinates_far_outside_are_refused(tmp_path):
    root = make_yolo(tmp_path / "ds")
    label = write(root / "labels" / "train" / "a.txt", "0 -1e308 0.1 1 0.1 0.5 0.9\n")
    with pytest.raises(DataError) as info:
        load_dataset(root)
    assert str(info.value).startswith(f"{label}:1: polygon values -1e308 0.1 1 0.1 0.5 0.9 "
                                      "look like pixel coordinates")


def test_ultralytics_dataset_file_stands_for_its_splits(tmp_path):
    """A data.yaml as DATA: its train split (val for ground truth and validation), read
    with its names; coco8's ``images/train`` and Roboflow's ``../train/images``."""
    coco8 = make_yolo(tmp_path / "coco8")                 # images/train: a.jpg, b.png
    make_image(coco8 / "images" / "val" / "c.jpg", 40, 20)
    write(coco8 / "labels" / "val" / "c.txt", "1 0.5 0.5 0.5 0.5\n")
    yaml_file = write(coco8 / "coco8.yaml",
                      "path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    train = load_dataset(yaml_file)
    assert (train.format, train.class_names, len(train.records)) == ("yolo", ["a", "b"], 2)
    val = load_dataset(yaml_file, split="val")
    assert [Path(r.image_path).name for r in val.records] == ["c.jpg"]
    assert load_dataset(yaml_file, classes=["a", "b", "c"]).class_names == ["a", "b", "c"]
    with pytest.raises(DataError, match="names class 0 'a', the class names given"):
        load_dataset(yaml_file, classes=["x", "y"])
    with pytest.raises(DataError) as info:
        load_dataset(yaml_file, split="test")
    assert str(info.value) == (f"{yaml_file}: the dataset file names no 'test' split (it "
                               "has train, val)")
    export = tmp_path / "export"
    make_yolo(export / "train")
    yaml_file = write(export / "data.yaml", "train: ../train/images\nval: ../valid/images\n"
                      "names: [p, q]\n")
    data = load_dataset(yaml_file)
    assert data.class_names == ["p", "q"] and len(data.records) == 2
    with pytest.raises(DataError, match="the 'val' split, .*valid.*, does not exist"):
        load_dataset(yaml_file, split="val")               # no valid/ folder


def test_ultralytics_dataset_file_forms(tmp_path, monkeypatch):
    """A pose file kept apart from its data (``kpt_shape`` still applies), ``nc`` without
    ``names``, a ``path`` relative to the working folder; lists of datasets, a file naming
    itself and a missing split are refused naming the file."""
    root = make_yolo(tmp_path / "pose")
    write(root / "labels" / "train" / "a.txt", "0 .5 .5 .2 .4 .45 .45 2 .55 .55 2\n")
    pose = write(tmp_path / "cfg" / "pose8.yaml", "path: ../pose\ntrain: images/train\n"
                 "kpt_shape: [2, 3]\nnc: 3\n")
    data = load_dataset(pose)
    assert data.class_names == ["0", "1", "2"]
    np.testing.assert_allclose(data.records[0].boxes, [[40, 15, 60, 35]], atol=1e-4)
    monkeypatch.chdir(tmp_path)
    elsewhere = write(tmp_path / "cfg" / "cwd.yaml", "path: pose\ntrain: images/train\n")
    assert len(load_dataset(elsewhere).records) == 2
    for text, message in [
            ("train: self.yaml\n", "'train' names another dataset file"),
            ("train: 5\n", "'train' must be a path or a list of paths, got 5"),
            ("train: []\n", "'train' is an empty list"),
            ("train: images/train\nval:\n", "the dataset file names no 'val' split (it "
             "has train)"),
            ("train: images/nowhere\n", "the 'train' split, "),
    ]:
        bad = write(root / "self.yaml", text)
        with pytest.raises(DataError) as info:
            load_dataset(bad, split="val" if "val:" in text else "train")
        assert str(info.value).startswith(f"{bad}: {message}"), str(info.value)


def test_list_split_parts_must_agree_on_class_ids(tmp_path):
    """Without names in the file, each part names its own classes: one naming more is
    taken when the others' are its first ones, else the file is asked for names."""
    make_csv(tmp_path)
    write(tmp_path / "more.csv", "filename,class,xmin,ymin,xmax,ymax\nb.png,cat,1,2,5,6\n"
          "b.png,dog,1,2,5,6\nb.png,emu,1,2,5,6\n")
    write(tmp_path / "other.csv", "filename,class,xmin,ymin,xmax,ymax\nb.png,ant,1,2,5,6\n")
    both = write(tmp_path / "both.yaml", "train: [labels.csv, more.csv]\n")
    assert load_dataset(both).class_names == ["cat", "dog", "emu"]
    clash = write(tmp_path / "clash.yaml", "train: [labels.csv, other.csv]\n")
    with pytest.raises(DataError, match="name their classes differently .*give 'names' in "
                       "the dataset file"):
        load_dataset(clash)
    write(tmp_path / "clash.yaml", "train: [labels.csv, other.csv]\nnames: [ant, cat, dog]\n")
    assert load_dataset(clash).class_names == ["ant", "cat", "dog"]


def test_ultralytics_dataset_file_list_splits_read_as_one(tmp_path):
    """Ultralytics' VOC.yaml trains on a list of splits: one dataset, in order, image ids
    renumbered, repairs added up; the first part's names serve every part."""
    root = make_yolo(tmp_path / "ds")                     # images/train: a.jpg, b.png
    make_image(root / "images" / "val" / "c.jpg", 40, 20)
    write(root / "labels" / "val" / "c.txt", "1 0.5 0.5 0.5 0.5\n1 0.9 0.5 0.5 0.5\n")
    yaml_file = write(root / "voc.yaml", "path: .\ntrain:\n  - images/val\n"
                      "  - images/train\nval: images/val\nnames: [a, b]\n")
    data = load_dataset(yaml_file)
    assert data.path == yaml_file and data.format == "yolo" and data.class_names == ["a", "b"]
    assert [Path(r.image_path).name for r in data.records] == ["c.jpg", "a.jpg", "b.png"]
    assert [r.image_id for r in data.records] == [0, 1, 2]
    assert data.fixes.clipped == 1 and data.num_boxes == 4
    assert len(load_dataset(yaml_file, split="val").records) == 1


# ------------------------------------------------------------------------ CSV box tables

CSV_TABLE = """Filename,Width,Height,Class,xmin,ymin,xmax,ymax
b.png,10,10,dog,1,2,5,6
images/a.jpg,100,50,cat,10,5,30,25
c.png,,,,,,,
b.png,10,10,cat,0,0,20,3
"""


def make_csv(root, table=CSV_TABLE):
    make_image(root / "b.png", 10, 10)
    make_image(root / "images" / "a.jpg", 100, 50)
    make_image(root / "images" / "c.png", 12, 8)           # found in images/
    return write(root / "labels.csv", table)


def test_csv_box_table_groups_rows_by_image_in_first_row_order(tmp_path):
    """labelImg's xml_to_csv / TF OD API tables: header in any case, rows of an image
    anywhere, a row without a box lists a negative, sizes from the table or the image."""
    path = make_csv(tmp_path)
    data = load_dataset(path)
    assert data.format == "csv" and data.class_names == ["cat", "dog"]
    b, a, c = data.records
    assert [Path(r.image_path).name for r in data.records] == ["b.png", "a.jpg", "c.png"]
    np.testing.assert_array_equal(b.boxes, [[1, 2, 5, 6], [0, 0, 10, 3]])   # clipped
    np.testing.assert_array_equal(b.classes, [1, 0])
    np.testing.assert_array_equal(a.boxes, [[10, 5, 30, 25]])
    assert c.num_boxes == 0 and (c.width, c.height) == (12, 8)
    assert [r.source_line for r in data.records] == [2, 3, 4] and data.fixes.clipped == 1
    ordered = load_dataset(path, classes=["dog", "cat"])
    np.testing.assert_array_equal(ordered.records[0].classes, [0, 1])
    # the same image spelled two ways, a trailing empty cell, numeric names by value
    write(path, "filename,class,xmin,ymin,xmax,ymax\nb.png,10,1,2,5,6,\n./b.png,2,1,2,5,6\n")
    data = load_dataset(path)
    assert len(data.records) == 1 and data.class_names == ["2", "10"]
    np.testing.assert_array_equal(data.records[0].classes, [1, 0])


@pytest.mark.parametrize("table, line, message", [
    ("filename,class,xmin,ymin,xmax\n", 1, "the header lacks ymax: expected the columns "
     "filename, class, xmin, ymin, xmax, ymax (and width, height)"),
    ("filename,class,xmin,ymin,xmax,ymax\nb.png,dog,1,2,5\n", 2,
     "5 cells, the header has 6"),
    ("filename,class,xmin,ymin,xmax,ymax\nb.png,dog,1,2,5,x6\n", 2, "malformed ymax"),
    ("filename,class,xmin,ymin,xmax,ymax\nb.png,dog,1,2,5,6\nb.png,cow,1,2,5,6\n", 3,
     "unknown class name 'cow'; known classes: dog, cat"),
    ("filename,class,xmin,ymin,xmax,ymax\nnope.png,dog,1,2,5,6\n", 2,
     "image file not found"),
    ("filename,class,xmin,ymin,xmax,ymax\nb.png,,1,2,5,6\n", 2, "a box without a class"),
    ('filename,class,xmin,ymin,xmax,ymax\nb.png,"d\nog",1,2,5,6\nb.png,dog,1,2,5,x\n', 4,
     "malformed ymax"),                               # the line, past a two-line cell
    ("filename,class,xmin,ymin,xmax,ymax\n,dog,1,2,5,6\n", 2, "a row without a filename"),
    ("filename,class,xmin,ymin,xmax,ymax\nimages,dog,1,2,5,6\n", 2,
     "filename 'images' names a folder"),
    ("filename,width,height,class,xmin,ymin,xmax,ymax\nb.png,10,10,dog,1,2,5,6\n"
     "b.png,640,480,dog,1,2,5,6\n", 3, "b.png is 640x480 here, 10x10 on line 2"),
    ("filename,width,height,class,xmin,ymin,xmax,ymax\nb.png,1e19,10,dog,1,2,5,6\n", 2,
     "width '1e19' is not a whole number of pixels"),
    ("filename,width,height,class,xmin,ymin,xmax,ymax\nb.png,10.5,10,dog,1,2,5,6\n", 2,
     "width '10.5' is not a whole number of pixels"),
    ('filename,class,xmin,ymin,xmax,ymax\nb.png,"dog' + "a" * 140_000 + "\n", 2,
     "malformed CSV: field larger than field limit"),
])
def test_csv_bad_rows_name_the_line(tmp_path, table, line, message):
    path = make_csv(tmp_path, table)
    with pytest.raises(DataError) as info:
        load_dataset(path, classes=["dog", "cat"])
    assert str(info.value).startswith(f"{path}:{line}: {message}"), str(info.value)


def test_yolo_label_without_image(tmp_path):
    root = make_yolo(tmp_path / "ds")
    orphan = write(root / "labels" / "train" / "zz.txt", "0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match="label file without an image") as info:
        load_dataset(root)
    assert str(orphan) in str(info.value)


# ----------------------------------------------------------------- detection, classes

def test_detect_format(tmp_path, lines_dataset):
    assert detect_format(lines_dataset / "train.txt") == "yolo3"
    assert detect_format(write(tmp_path / "g.json", "{}")) == "coco"
    assert detect_format(make_voc(tmp_path / "VOC")) == "voc"
    assert detect_format(make_yolo(tmp_path / "Y")) == "yolo"
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UsageError, match="set --format"):
        detect_format(tmp_path / "nothing")
    assert detect_format(write(tmp_path / "a.csv", "x")) == "csv"
    with pytest.raises(UsageError, match="set --format"):
        detect_format(write(tmp_path / "a.tsv", "x"))


def test_explicit_format_and_aliases(lines_dataset):
    path = lines_dataset / "train.txt"
    assert load_dataset(path, format="keras-yolo3").format == "yolo3"
    with pytest.raises(UsageError, match="unknown dataset format 'tsv'"):
        load_dataset(path, format="tsv")
    with pytest.raises(DataError, match="the header lacks filename, class"):
        load_dataset(path, format="csv")
    with pytest.raises(DataError, match="not a COCO dataset|invalid JSON"):
        load_dataset(path, format="coco")


def test_missing_dataset(tmp_path):
    with pytest.raises(DataError, match="dataset not found"):
        load_dataset(tmp_path / "absent.txt")


def test_read_class_names(tmp_path):
    assert read_class_names(write(tmp_path / "c.txt", " a \n\nb\n")) == ["a", "b"]
    with pytest.raises(DataError) as info:
        read_class_names(write(tmp_path / "d.txt", "a\nb\na\n"))
    assert str(info.value) == f"{tmp_path / 'd.txt'}:3: class name 'a' is given twice"
    with pytest.raises(DataError, match="no class names"):
        read_class_names(write(tmp_path / "e.txt", "\n\n"))
    with pytest.raises(DataError, match="class names file not found"):
        read_class_names(tmp_path / "nope.txt")


def test_given_names_are_checked_against_the_names_the_reader_would_use(tmp_path):
    """--classes meets the names the reader itself would take (root classes.txt before
    labels/classes.txt before data.yaml); a data.yaml of ``nc`` only, or without names at
    all, names nothing to disagree with; a dataset file's names are its splits' own."""
    root = make_yolo(tmp_path / "ds")
    write(root / "classes.txt", "cat\ndog\n")
    write(root / "labels" / "classes.txt", "x\ny\n")
    assert load_dataset(root).class_names == ["cat", "dog"]
    assert load_dataset(root, classes=["cat", "dog"]).class_names == ["cat", "dog"]
    with pytest.raises(DataError, match=r"ds/classes.txt: names class 0 'cat'"):
        load_dataset(root, classes=["x", "y"])
    (root / "classes.txt").unlink()
    (root / "labels" / "classes.txt").unlink()
    write(root / "data.yaml", "nc: 2\n")
    assert load_dataset(root, classes=["cat", "dog"]).class_names == ["cat", "dog"]
    write(root / "data.yaml", "download: nothing\n")
    assert load_dataset(root, classes=["cat", "dog"]).class_names == ["cat", "dog"]
    (root / "data.yaml").unlink()
    make_image(root / "images" / "val" / "c.jpg", 40, 20)
    write(root / "labels" / "val" / "c.txt", "1 0.5 0.5 0.5 0.5\n")
    write(root / "labels" / "classes.txt", "stray\n")   # the names file is set.yaml
    yaml_file = write(root / "set.yaml", "train: images/train\nval: images/val\n"
                      "names: [a, b]\n")
    assert load_dataset(yaml_file, classes=["a", "b"], split="val").class_names == ["a", "b"]
    (root / "labels" / "classes.txt").unlink()
    write(root / "set.yaml", "train: images/train\nval: images/val\nnc: 2\n")
    assert load_dataset(yaml_file, classes=["p", "q"]).class_names == ["p", "q"]


def test_class_names_list_and_beside_file(lines_dataset):
    """Labels of class indices: names given must agree with the classes.txt beside (as
    far as both go); without it they name the indices."""
    path = lines_dataset / "train.txt"
    assert load_dataset(path, classes=["cat", "dog", "bird"]).class_names == [
        "cat", "dog", "bird"]
    assert load_dataset(path, classes=["cat", "dog", "bird", "fox"]).class_names[-1] == "fox"
    with pytest.raises(DataError, match=r"classes.txt: names class 2 'bird', the class "
                                        r"names given .* name it 'z'"):
        load_dataset(path, classes=["cat", "dog", "z"])
    with pytest.raises(UsageError):
        load_dataset(path, classes=["x", "x"])
    (lines_dataset / "classes.txt").unlink()
    assert load_dataset(path).class_names == ["0", "1", "2"]
    assert load_dataset(path, classes=["x", "y", "z"]).class_names == ["x", "y", "z"]


# ------------------------------------------- vectorized readers against loop references
#
# The readers check and convert whole columns at once; these loop-based references read
# the same randomized files one box at a time (clip/drop with ``reference_fix``) and the
# readers must agree on every record, every repair count and the example locations.
# Coordinates are multiples of 0.25, so float32 and float64 arithmetic agree exactly.


def random_boxes(rng, n, low=-30, high=130):
    """``(n, 4)`` xywh in quarters of a pixel: some empty, outside or partly outside."""
    xy = rng.integers(low * 4, high * 4, (n, 2)) / 4
    wh = rng.integers(-20, 240, (n, 2)) / 4
    return np.concatenate([xy, wh], axis=1)


def reference_records(images, rows_of, where_of):
    """Loop reference: ``images`` (path, w, h, id, line), ``rows_of(i)`` ->
    [(xyxy, class, flag)]; returns comparable tuples, fix counts and examples."""
    records, totals, examples = [], {"degenerate": 0, "outside": 0, "clipped": 0}, []
    for i, (path, width, height, image_id, line) in enumerate(images):
        rows = rows_of(i)
        boxes, keep, counts = reference_fix([r[0] for r in rows], width, height)
        boxes, keep = boxes.reshape(-1, 4), np.asarray(keep, bool)
        for key in totals:
            totals[key] += counts[key]
        if any(counts.values()) and len(examples) < 3:
            examples.append(where_of(i))
        kept = [r for r, k in zip(rows, keep) if k]
        records.append((path, width, height, image_id, line, boxes[keep].reshape(-1, 4),
                        [r[1] for r in kept], [r[2] for r in kept]))
    return records, (totals["degenerate"], totals["outside"], totals["clipped"]), examples


def assert_same_records(data, reference, flag="iscrowd"):
    records, counts, examples = reference
    assert len(data.records) == len(records)
    for record, (path, width, height, image_id, line, boxes, classes, flags) in zip(
            data.records, records):
        assert (record.image_path, record.width, record.height, record.image_id,
                record.source_line) == (path, width, height, image_id, line)
        np.testing.assert_array_equal(record.boxes, np.float32(boxes).reshape(-1, 4))
        np.testing.assert_array_equal(record.classes, np.int32(classes).reshape(-1))
        np.testing.assert_array_equal(getattr(record, flag), np.bool_(flags).reshape(-1))
        assert record.boxes.dtype == np.float32 and record.classes.dtype == np.int32
    fixes = data.fixes
    assert (fixes.dropped_degenerate, fixes.dropped_outside, fixes.clipped) == counts
    assert fixes.examples == examples
    assert min(counts) > 0  # the data exercised every repair


def random_coco(rng, dense, float_ids=True):
    """A COCO dict of 60 images (ids dense or sparse, with ``float_ids`` some written as
    floats such as ``7.0``: the reader's json path, else its typed path) and 500
    annotations in random order, with bad boxes of every kind."""
    ids = (rng.permutation(60) + 1 if dense else rng.choice(10 ** 9, 60, replace=False))
    images = [{"id": int(i), "file_name": f"im{i}.jpg", "width": int(rng.integers(20, 100)),
               "height": int(rng.integers(20, 100))} for i in ids]
    for image in images[::7] if float_ids else ():
        image["id"] = float(image["id"])
    cats = [3, 17, 90]
    annotations = []
    for k, (x, y, w, h) in enumerate(random_boxes(rng, 500)):
        annotation = {"id": 1000 + k, "image_id": int(rng.choice(ids)),
                      "category_id": int(rng.choice(cats)), "bbox": [x, y, w, h]}
        if k % 3:
            annotation["iscrowd"] = int(rng.integers(0, 2))
        if k % 11 == 0:
            annotation["bbox"] = [int(v) for v in annotation["bbox"]]
        annotations.append(annotation)
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": f"c{c}"} for c in cats]}


def reference_coco(data, folder):
    cat_ids = sorted(c["id"] for c in data["categories"])
    by_image = {int(image["id"]): [] for image in data["images"]}
    for annotation in data["annotations"]:
        x, y, w, h = (float(v) for v in annotation["bbox"])
        by_image[int(annotation["image_id"])].append(
            ([x, y, x + w, y + h], cat_ids.index(annotation["category_id"]),
             bool(annotation.get("iscrowd", 0))))
    images = [(os.path.join(str(folder), image["file_name"]), image["width"],
               image["height"], int(image["id"]), None) for image in data["images"]]
    return reference_records(images, lambda i: by_image[images[i][3]],
                             lambda i: f"{folder / 'gt.json'} (image id {images[i][3]})")


@pytest.mark.parametrize("seed, dense", [(0, True), (1, False), (2, True), (3, False)])
@pytest.mark.parametrize("float_ids", [True, False])
def test_coco_reader_matches_loop_reference(tmp_path, monkeypatch, seed, dense, float_ids):
    data = random_coco(np.random.default_rng(seed), dense, float_ids)
    path = write(tmp_path / "gt.json", json.dumps(data))
    if not float_ids:  # a plain file: the typed decoder reads it, never json.loads
        monkeypatch.setattr(coco_reader, "read_json", lambda *a, **k: pytest.fail("json"))
    assert_same_records(load_dataset(path), reference_coco(data, tmp_path))


def test_coco_typed_path_skips_unknown_keys_and_keeps_crowd(tmp_path, monkeypatch):
    data = random_coco(np.random.default_rng(7), dense=True, float_ids=False)
    for k, annotation in enumerate(data["annotations"]):
        annotation.update(segmentation=[[1.0, 2.0, 3.0]], area=12.5, extra={"a": [k]})
    data["info"] = {"year": 2026}
    path = write(tmp_path / "gt.json", json.dumps(data))
    monkeypatch.setattr(coco_reader, "read_json", lambda *a, **k: pytest.fail("json"))
    assert_same_records(load_dataset(path), reference_coco(data, tmp_path))


#: COCO corruptions: (what to do to an annotation, the message fragment it gets).
COCO_CORRUPTIONS = [
    (lambda a: a.update(image_id=123456789012), "refers to unknown image id 123456789012"),
    (lambda a: a.update(image_id=True), "'image_id' must be an integer, got True"),
    (lambda a: a.update(image_id=2.5), "'image_id' must be an integer, got 2.5"),
    (lambda a: a.pop("category_id"), "'category_id' must be an integer, got None"),
    (lambda a: a.update(category_id=4), "refers to unknown category id 4"),
    (lambda a: a.update(bbox=[1, 2, 3]), "'bbox' must be [x, y, width, height]"),
    (lambda a: a.update(bbox="1234"), "'bbox' must be [x, y, width, height]"),
    (lambda a: a.update(bbox=[1, None, 3, 4]), "'bbox' must hold numbers"),
    (lambda a: a.update(bbox=[1, [2], 3, 4]), "'bbox' must hold numbers"),
    (lambda a: a.update(bbox=[1, 2, float("inf"), 4]), "'bbox' is not finite"),
]


@pytest.mark.parametrize("seed", range(8))
def test_coco_first_bad_annotation_is_named(tmp_path, seed):
    """Two corrupted annotations: the message is the first one's, as a loop would give
    (seeds 4-7 in files the typed decoder takes, where its checks send it to json)."""
    rng = np.random.default_rng(seed)
    data = random_coco(rng, dense=bool(seed % 2), float_ids=seed < 4)
    first, second = sorted(rng.choice(len(data["annotations"]), 2, replace=False))
    kinds = rng.choice(len(COCO_CORRUPTIONS), 2)
    for position, kind in zip((second, first), kinds[::-1]):
        COCO_CORRUPTIONS[kind][0](data["annotations"][position])
    path = write(tmp_path / "gt.json", json.dumps(data))
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = COCO_CORRUPTIONS[kinds[0]][1]
    assert str(info.value).startswith(
        f"{path}: annotation id {data['annotations'][first]['id']}"), str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("mutate, message", [
    (lambda images: images[4].update(id=images[1]["id"]), "image id {1} is given twice"),
    (lambda images: images[4].update(width=True), "image id {4}: 'width' must be an integer"),
    (lambda images: images[4].update(height=1.5), "image id {4}: 'height' must be an integer"),
    (lambda images: images[4].update(file_name=""), "image id {4}: no 'file_name'"),
    (lambda images: images.__setitem__(4, "x.jpg"), "image #4: 'id' must be an integer"),
])
@pytest.mark.parametrize("float_ids", [True, False])
def test_coco_first_bad_image_is_named(tmp_path, mutate, message, float_ids):
    data = random_coco(np.random.default_rng(5), dense=False, float_ids=float_ids)
    ids = [int(image["id"]) for image in data["images"]]
    mutate(data["images"])
    # A second problem, after the first (one the typed decoder accepts, without float ids).
    data["images"][9]["id"] = "later" if float_ids else ids[2]
    path = write(tmp_path / "gt.json", json.dumps(data))
    with pytest.raises(DataError, match=re.escape(message.format(*ids))):
        load_dataset(path)


def random_lines(rng, folder, sizes):
    """keras-yolo3 lines over images of ``sizes`` (some shared), with blank and comment
    lines, lines without boxes, and bad boxes of every repair kind."""
    for k, (width, height) in enumerate(sizes):
        make_image(folder / "imgs" / f"{k}.png", width, height)
    lines = []
    for number in range(120):
        if number % 17 == 5:
            lines.append("" if number % 2 else "# comment 1,2,3,4,0")
            continue
        boxes = random_boxes(rng, int(rng.integers(0, 6)))
        tokens = [",".join(f"{v:g}" for v in (x, y, x + w, y + h)) + f",{rng.integers(0, 4)}"
                  for x, y, w, h in boxes]
        lines.append(" ".join([f"imgs/{rng.integers(0, len(sizes))}.png", *tokens]))
    return lines


def reference_lines(lines, folder, path):
    entries = []
    for number, raw in enumerate(lines, start=1):
        tokens = raw.split()
        if tokens and not tokens[0].startswith("#"):
            rows = []
            for token in tokens[1:]:
                *xyxy, cls = (float(v) for v in token.split(","))
                rows.append((xyxy, int(cls), False))
            entries.append((number, tokens[0], rows))
    images = []
    for k, (number, image, _) in enumerate(entries):
        width, height = cv2.imread(str(folder / image)).shape[1::-1]
        images.append((os.path.join(str(folder), image), width, height, k, number))
    return reference_records(images, lambda i: entries[i][2],
                             lambda i: f"{path}:{entries[i][0]}")


@pytest.mark.parametrize("seed", range(3))
def test_yolo3_reader_matches_loop_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    lines = random_lines(rng, tmp_path, [(64, 48), (100, 30), (33, 90)])
    path = write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    data = load_dataset(path, classes=["a", "b", "c", "d"])
    assert_same_records(data, reference_lines(lines, tmp_path, path), flag="difficult")


#: Bad box tokens of a lines file and the message fragment each gets.
LINE_CORRUPTIONS = [
    ("1,2,3,4", "malformed box '1,2,3,4'"),
    ("1,2,3,4,0,5", "malformed box '1,2,3,4,0,5'"),
    ("1,2,x,4,0", "is not a number"),
    ("1,2,,4,0", "is not a number"),
    ("1,2,inf,4,0", "is not finite"),
    ("1,2,3,4,1.5", "malformed class id: '1.5' is not an integer"),
    ("1,2,3,4,4", "class id 4 out of range"),
    ("1,2,3,4,-1", "class id -1 out of range"),
    ("1,2,3,4,1e30", "class id 1000000000000000019884624838656 out of range"),
]


@pytest.mark.parametrize("seed", range(6))
def test_yolo3_first_bad_line_is_named(tmp_path, seed):
    """A bad box (or a missing image) on an earlier line wins over one on a later line."""
    rng = np.random.default_rng(seed)
    lines = random_lines(rng, tmp_path, [(64, 48)])
    first, second = sorted(rng.choice([k for k, ln in enumerate(lines) if ln and ln[0] != "#"],
                                      2, replace=False))
    kinds = rng.choice(len(LINE_CORRUPTIONS), 2)
    lines[second] += " " + LINE_CORRUPTIONS[kinds[1]][0]
    if seed % 3 == 2:  # the first problem is a missing image, before any bad box
        lines[first] = "imgs/missing.png" + lines[first][len("imgs/0.png"):]
        message = "image file not found: imgs/missing.png"
    else:
        lines[first] += " 1,1,5,5,0 " + LINE_CORRUPTIONS[kinds[0]][0]
        message = LINE_CORRUPTIONS[kinds[0]][1]
    path = write(tmp_path / "bad.txt", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, classes=["a", "b", "c", "d"])
    assert str(info.value).startswith(f"{path}:{first + 1}: "), str(info.value)
    assert message in str(info.value)


def random_yolo(rng, root, count=12):
    """A YOLO folder of ``count`` images (some without a label file) with normalized
    boxes, some partly or entirely outside the image."""
    texts = {}
    for k in range(count):
        width, height = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        make_image(root / "images" / f"{k:02d}.png", width, height)
        if k % 5 == 4:
            continue
        boxes = random_boxes(rng, int(rng.integers(0, 8)), -10, 70) / 64
        rows = [f"{rng.integers(0, 3)} {x + w / 2:g} {y + h / 2:g} {w:g} {h:g}"
                for x, y, w, h in boxes]
        if k % 3 == 1:  # a segmentation label: polygons of 3 to 8 points
            points = [rng.random((int(rng.integers(3, 9)), 2)) * 1.2 - 0.1
                      for _ in range(int(rng.integers(1, 4)))]
            rows += [f"{rng.integers(0, 3)} " + " ".join(f"{v:g}" for v in p.ravel())
                     for p in points]
            rng.shuffle(rows)
        texts[k] = "\n".join(rows[:2] + [""] + rows[2:]) + "\n"
        write(root / "labels" / f"{k:02d}.txt", texts[k])
    return texts


def reference_yolo(root, count):
    images, rows_of = [], []
    for k in range(count):
        image = root / "images" / f"{k:02d}.png"
        width, height = cv2.imread(str(image)).shape[1::-1]
        label = root / "labels" / f"{k:02d}.txt"
        rows = []
        for line in (label.read_text().splitlines() if label.is_file() else []):
            values = [float(v) for v in line.split()]
            if len(values) > 5:      # a polygon: its enclosing box
                cls, xs, ys = values[0], values[1::2], values[2::2]
                cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
                values = [cls, cx, cy, max(xs) - min(xs), max(ys) - min(ys)]
            if values:
                cls, cx, cy, w, h = (np.float32(v) for v in values)
                xyxy = np.float32([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                rows.append(((xyxy * np.float32([width, height] * 2)).tolist(), int(cls),
                             False))
        images.append((str(image), width, height, k, None))
        rows_of.append(rows)
    where = [str(root / "labels" / f"{k:02d}.txt") for k in range(count)]
    return reference_records(images, lambda i: rows_of[i], lambda i: where[i])


@pytest.mark.parametrize("seed", range(3))
def test_yolo_reader_matches_loop_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    random_yolo(rng, tmp_path / "ds")
    data = load_dataset(tmp_path / "ds", classes=["a", "b", "c"])
    assert_same_records(data, reference_yolo(tmp_path / "ds", 12), flag="iscrowd")


YOLO_BAD_LINES = ["0 0.5 0.5 0.2", "7 0.5 0.5 0.1 0.1", "0 0.5 nan 0.1 0.1",
                  "0 320 240 50 80", "0 0.1 0.1 0.5 0.1 300 0.9", "0 0.1 0.1 0.5 0.1 0.3 0.9 1",
                  "1 0.1 0.1 0.5 x 0.3 0.9"]


@pytest.mark.parametrize("seed", range(len(YOLO_BAD_LINES)))
def test_yolo_first_bad_label_line_is_named(tmp_path, seed):
    rng = np.random.default_rng(seed)
    texts = random_yolo(rng, tmp_path / "ds")
    first, second = sorted(rng.choice(sorted(texts), 2, replace=False))
    bad = YOLO_BAD_LINES
    write(tmp_path / "ds" / "labels" / f"{second:02d}.txt", texts[second] + bad[seed] + "\n")
    label = write(tmp_path / "ds" / "labels" / f"{first:02d}.txt",
                  texts[first] + bad[(seed + 1) % len(bad)] + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "ds", classes=["a", "b", "c"])
    line = len(texts[first].splitlines()) + 1
    assert str(info.value).startswith(f"{label}:{line}: "), str(info.value)


# ------------------------------------------------------- pixel labels, byte order marks

@pytest.mark.parametrize("row, ok", [
    ("0 320 240 50 80", False), ("0 0.5 0.5 2.5 0.1", False), ("0 2.01 0.5 0.1 0.1", False),
    ("0 1.5 0.5 0.2 0.2", True), ("0 0.5 0.5 2 1", True), ("0 0.5 0.5 0.2 0.2", True),
])
def test_yolo_labels_in_pixels_are_named(tmp_path, row, ok):
    """A value above 2 cannot be a fraction of the image size: the file holds pixels."""
    root = make_yolo(tmp_path / "ds")
    label = write(root / "labels" / "train" / "a.txt", "0 0.5 0.5 0.1 0.1\n" + row + "\n")
    if ok:
        assert load_dataset(root).num_boxes >= 1
        return
    with pytest.raises(DataError) as info:
        load_dataset(root)
    assert str(info.value) == (
        f"{label}:2: label values {row[2:]} look like pixel coordinates: YOLO labels are "
        "'class cx cy w h' divided by the image width and height (values in [0, 1])")


def test_byte_order_marks_are_dropped(tmp_path, lines_dataset):
    bom = "\ufeff"
    lines = lines_dataset / "train.txt"
    write(lines, bom + lines.read_text())
    write(lines_dataset / "classes.txt", bom + "cat\ndog\nbird\n")
    data = load_dataset(lines)
    assert data.class_names == ["cat", "dog", "bird"]
    assert data.records[0].image_path == os.path.join(str(lines_dataset), "imgs", "a.png")
    path = write(tmp_path / "coco" / "gt.json", bom + json.dumps(coco_dict()))
    assert load_dataset(path).class_names == ["cat", "dog"]
    root = make_yolo(tmp_path / "ds")
    write(root / "labels" / "train" / "a.txt", bom + "1 0.5 0.5 0.2 0.4\n")
    write(root / "classes.txt", bom + "x\ny\n")
    data = load_dataset(root)
    assert data.class_names == ["x", "y"] and data.records[0].classes.tolist() == [1]


def test_records_own_their_arrays(lines_dataset):
    """Records share one array per field as views; each view is its own image's rows."""
    data = load_dataset(lines_dataset / "train.txt")
    first, _, third = data.records
    first.boxes[0, 0] = 99
    first.difficult[:] = True
    assert third.boxes[0, 0] == 0 and not third.difficult.any()
