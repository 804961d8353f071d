"""kmeans.input_box_sizes (one NumPy pass) against a per-record loop with Letterbox."""

import numpy as np
import pytest

from detkit import kmeans
from detkit.data.letterbox import Letterbox
from detkit.data.records import ImageRecord
from detkit.errors import DataError


def _reference_sizes(records, input_size, resize):
    """The loop kmeans used before: one Letterbox (or stretch) per record."""
    sizes = []
    for record in records:
        boxes = np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4)
        if not len(boxes):
            continue
        if not record.width or not record.height:
            raise DataError(f"image size unknown for {record.image_path}",
                            line=record.source_line)
        if resize == "letterbox":
            sx, sy = Letterbox(record.width, record.height, input_size).scale_xy
        else:
            sx, sy = input_size / record.width, input_size / record.height
        sizes.append((boxes[:, 2:4] - boxes[:, 0:2]) * np.float32([sx, sy]))
    return np.concatenate(sizes).astype(np.float32) if sizes else np.zeros((0, 2), np.float32)


def _records(seed, count=300):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        n = int(rng.integers(0, 5))
        width, height = (int(v) for v in rng.integers(1, 3000, 2))
        xy = rng.random((n, 2)) * [width, height]
        boxes = np.concatenate([xy, xy + rng.random((n, 2)) * 200 + 0.5], axis=1)
        if n == 0 and i % 3 == 0:
            width = height = None          # an image without boxes may have no size
        records.append(ImageRecord(f"im{i}.jpg", width, height, boxes, np.zeros(n)))
    return records


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
@pytest.mark.parametrize("input_size", [416, 97, 1280])
def test_same_sizes_as_the_per_record_loop(resize, input_size):
    records = _records(seed=input_size)
    expected = _reference_sizes(records, input_size, resize)
    got = kmeans.input_box_sizes(records, input_size, resize)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_boxes_given_as_lists_and_no_boxes_at_all():
    class Plain:                            # any object with width, height, boxes
        def __init__(self, boxes, width=64, height=32):
            self.boxes, self.width, self.height = boxes, width, height
            self.image_path, self.source_line = "p.jpg", None

    records = [Plain([[0, 0, 8, 4]]), Plain([]), Plain([[1, 1, 3, 9], [0, 0, 64, 32]])]
    np.testing.assert_array_equal(kmeans.input_box_sizes(records, 64, "stretch"),
                                  _reference_sizes(records, 64, "stretch"))
    assert kmeans.input_box_sizes([Plain([])], 64).shape == (0, 2)


def test_unknown_size_names_the_first_image_with_boxes():
    records = [ImageRecord("a.jpg", None, None, np.zeros((0, 4)), []),
               ImageRecord("b.jpg", 0, 10, [[0, 0, 1, 1]], [0], source_line=7),
               ImageRecord("c.jpg", None, 10, [[0, 0, 1, 1]], [0])]
    with pytest.raises(DataError, match="image size unknown for b.jpg") as err:
        kmeans.input_box_sizes(records, 416)
    assert err.value.line == 7
