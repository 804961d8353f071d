"""Anchor files: parse, format round trip, sorting, masks, shipped defaults."""

import numpy as np
import pytest

from detkit.anchors import (anchor_masks, default_anchors_path, load_anchors,
                            parse_anchors, save_anchors, sort_by_area, strides)
from detkit.errors import DataError, UsageError


def test_shipped_defaults():
    yolo = load_anchors(default_anchors_path("yolov3"))
    tiny = load_anchors(default_anchors_path("yolov3-tiny"))
    assert yolo.shape == (9, 2) and tiny.shape == (6, 2)
    np.testing.assert_array_equal(yolo[0], [10, 13])
    np.testing.assert_array_equal(tiny[-1], [344, 319])
    areas = yolo.prod(axis=1)
    assert (np.diff(areas) > 0).all()


def test_round_trip(tmp_path):
    anchors = np.array([[10.4, 13], [33, 23], [16, 30]], np.float32)
    path = save_anchors(tmp_path / "a.txt", anchors)
    assert path.read_text() == "10,13, 33,23, 16,30\n"
    np.testing.assert_array_equal(load_anchors(path), np.round(anchors))
    save_anchors(path, anchors, decimals=2)
    np.testing.assert_allclose(load_anchors(path), anchors, atol=1e-2)


def test_sort_by_area():
    anchors = np.array([[30, 61], [10, 13], [33, 23], [16, 30]])
    np.testing.assert_array_equal(sort_by_area(anchors),
                                  [[10, 13], [16, 30], [33, 23], [30, 61]])


@pytest.mark.parametrize("text,message", [
    ("10,13, 16", "odd number"),
    ("10,13, x,30", "'x' is not a number"),
    ("10,13,\n0,30", "must be positive"),
    ("", "no anchors"),
])
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(DataError, match=message) as err:
        parse_anchors(text, path="a.txt")
    assert "a.txt" in str(err.value)
    if "positive" in message:
        assert err.value.line == 2


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbf10,13, 16,30, 33,23\n")
    np.testing.assert_array_equal(load_anchors(path), [[10, 13], [16, 30], [33, 23]])
    np.testing.assert_array_equal(parse_anchors("\ufeff10,13"), [[10, 13]])


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbf10,13\n16,30 # caf\xe9\n")
    with pytest.raises(DataError) as info:
        load_anchors(path)
    assert str(info.value) == f"{path}:2: byte 0xe9 is not UTF-8 text"


def test_missing_file():
    with pytest.raises(DataError, match="not found"):
        load_anchors("/nonexistent/anchors.txt")


def test_masks_and_strides():
    assert anchor_masks(9) == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert anchor_masks(6) == [[3, 4, 5], [0, 1, 2]]
    assert strides(9) == [32, 16, 8] and strides(6) == [32, 16]
    assert sorted(sum(anchor_masks(9), [])) == list(range(9))
    with pytest.raises(UsageError):
        anchor_masks(7)
    with pytest.raises(UsageError):
        default_anchors_path("resnet")
