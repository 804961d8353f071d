"""Mosaic and mixup (detkit.data.mix): geometry, box filtering, determinism, the flags."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detkit.data.augment import AugmentConfig, filter_boxes
from detkit.data.augment_config import MIN_VISIBLE_FRACTION
from detkit.data.letterbox import PAD_VALUE
from detkit.data.loader import DetectionBatches
from detkit.data.mix import (MixedBatches, Tile, mixup, mosaic, mosaic_centre, quadrant,
                             sample_tile)
from detkit.data.augment import Sample
from detkit.data.records import ImageRecord
from detkit.errors import UsageError

SIZE = 64
#: A colour per class, far from the gray padding and from each other.
COLOURS = np.uint8([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]])
BACKGROUND = np.uint8([20, 20, 20])


def coloured_source(width, height, boxes, classes):
    """A dark image with each box filled with its class colour."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for (x0, y0, x1, y1), cls in zip(np.int32(boxes), classes):
        image[y0:y1, x0:x1] = COLOURS[cls]
    return image


def sources(rng, count=4):
    images, boxes, classes = [], [], []
    for i in range(count):
        width, height = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        box = np.float32([[x0, y0, x0 + rng.integers(20, 40), y0 + rng.integers(20, 40)]])
        images.append(coloured_source(width, height, box, [i]))
        boxes.append(box)
        classes.append(np.int32([i]))
    return images, boxes, classes


def assert_boxes_hold_their_colour(sample, margin=2):
    """Every output box is filled with its class colour (inner pixels, away from the
    resize's blended edge)."""
    for box, cls in zip(sample.boxes, sample.classes):
        x0, y0, x1, y1 = np.int32(np.ceil(box[:2])).tolist() + np.int32(box[2:]).tolist()
        inner = sample.image[y0 + margin:y1 - margin, x0 + margin:x1 - margin]
        if inner.size:
            np.testing.assert_array_equal(inner.reshape(-1, 3) - COLOURS[cls], 0)


@pytest.mark.parametrize("seed", range(12))
def test_mosaic_boxes_land_where_their_pixels_went(seed):
    rng = np.random.default_rng(seed)
    images, boxes, classes = sources(rng)
    config = AugmentConfig(scale=(0.8, 1.6), flip=0.5)
    centre = mosaic_centre(rng, SIZE)
    tiles = [sample_tile(rng, im.shape[1], im.shape[0], SIZE, i, centre, config)
             for i, im in enumerate(images)]
    sample = mosaic(images, boxes, classes, tiles, SIZE)
    assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == np.uint8
    assert_boxes_hold_their_colour(sample)
    for box, cls, keep in zip(sample.boxes, sample.classes, sample.keep):
        assert keep == cls  # one box per source, the source index is its class
        x0, y0, x1, y1 = quadrant(int(cls), centre, SIZE)
        assert x0 <= box[0] < box[2] <= x1 and y0 <= box[1] < box[3] <= y1
    # Every class-coloured pixel (away from edges) lies inside a kept box or belongs
    # to a box that was dropped as mostly hidden.
    for cls in range(4):
        mask = np.all(sample.image == COLOURS[cls], axis=-1)
        if cls not in sample.classes:
            continue
        box = sample.boxes[list(sample.classes).index(cls)]
        ys, xs = np.nonzero(mask)
        assert np.all((xs >= np.floor(box[0]) - 1) & (xs <= box[2]) &
                      (ys >= np.floor(box[1]) - 1) & (ys <= box[3]))


def test_mosaic_tiles_meet_at_the_centre_and_pad_the_rest():
    images = [np.full((50, 50, 3), c, np.uint8) for c in (10, 60, 110, 160)]
    centre = (30, 20)
    tiles = [Tile(40, 40, 30 - 40 if i % 2 == 0 else 30, 20 - 40 if i < 2 else 20, False,
                  quadrant(i, centre, SIZE)) for i in range(4)]
    empty = [np.zeros((0, 4), np.float32)] * 4
    sample = mosaic(images, empty, [np.zeros(0, np.int32)] * 4, tiles, SIZE)
    image = sample.image[..., 0]
    assert image[0, 0] == 10  # the top-left tile spans x [-10, 30), y [-20, 20)
    assert image[19, 29] == 10 and image[19, 30] == 60
    assert image[20, 29] == 110 and image[20, 30] == 160
    # The bottom tiles end at y = 60: the rows below are padding.
    assert image[59, 0] == 110 and image[59, SIZE - 1] == 160
    np.testing.assert_array_equal(image[60:], PAD_VALUE)
    assert len(sample.boxes) == 0 and sample.keep.dtype == np.int64


def test_mosaic_filters_boxes_with_the_single_image_rules():
    # The top-left quadrant ends at x = 20 (the centre), inside the tile's image: the
    # box is clipped to the quadrant, and filter_boxes decides what is kept.
    image = coloured_source(40, 40, [[0, 0, 40, 40]], [0])
    box = np.float32([[10, 10, 30, 30]])
    for dx, expected in ((-2, True), (4, False)):  # visible 12/20 vs 6/20 of the width
        tile = Tile(40, 40, dx, 0, False, quadrant(0, (20, 40), SIZE))
        blank = np.zeros((0, 4), np.float32)
        sample = mosaic([image] * 4, [box, blank, blank, blank],
                        [np.int32([0]), *[np.zeros(0, np.int32)] * 3],
                        [tile, *[Tile(1, 1, 0, 0, False, (0, 0, 0, 0))] * 3], SIZE,
                        min_visible=0.5)
        mapped = box + np.float32([dx, 0, dx, 0])
        reference, _ = filter_boxes(mapped, tile.window, min_visible=0.5)
        np.testing.assert_allclose(sample.boxes, reference)
        assert (len(sample.boxes) == 1) == expected


def test_mosaic_flipped_tile_mirrors_boxes():
    rng = np.random.default_rng(3)
    images, boxes, classes = sources(rng)
    centre = (32, 32)
    tiles = [Tile(32, 32, 0 if i % 2 == 0 else 32, 0 if i < 2 else 32, True,
                  quadrant(i, centre, SIZE)) for i in range(4)]
    sample = mosaic(images, boxes, classes, tiles, SIZE, min_visible=MIN_VISIBLE_FRACTION)
    assert len(sample.boxes) == 4
    assert_boxes_hold_their_colour(sample, margin=1)


def test_mixup_blends_pixels_and_keeps_both_boxes():
    a = Sample(np.full((8, 8, 3), 200, np.uint8), np.float32([[0, 0, 4, 4]]),
               np.int32([1]), np.int64([0]))
    b = Sample(np.full((8, 8, 3), 100, np.uint8), np.float32([[2, 2, 6, 6], [1, 1, 3, 3]]),
               np.int32([2, 3]), np.int64([0, 2]))
    mixed = mixup(a, b, 0.25, offset=3)
    np.testing.assert_array_equal(mixed.image, 125)
    np.testing.assert_allclose(mixed.boxes, [[0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 3, 3]])
    np.testing.assert_array_equal(mixed.classes, [1, 2, 3])
    np.testing.assert_array_equal(mixed.keep, [0, 3, 5])
    with pytest.raises(ValueError, match="ratio"):
        mixup(a, b, 1.5)


def write_records(folder, count=5, seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        width, height = int(rng.integers(60, 100)), int(rng.integers(50, 90))
        box = np.float32([[5, 5, 5 + rng.integers(15, 40), 5 + rng.integers(15, 40)]])
        cls = int(rng.integers(0, 4))
        path = folder / f"im{i}.png"
        cv2.imwrite(str(path), coloured_source(width, height, box, [cls])[..., ::-1])
        records.append(ImageRecord(str(path), width if i % 2 else None,
                                   height if i % 2 else None, box, np.int32([cls]),
                                   image_id=i))
    return records


def test_mixed_batches_are_deterministic_and_plain_without_mixing(tmp_path):
    records = write_records(tmp_path)
    config = AugmentConfig(mosaic=1.0, mixup=0.5, hue=0, saturation=1, value=1)
    make = lambda cfg: MixedBatches(records, SIZE, 5, augment=True, shuffle=True, seed=3,
                                    augment_config=cfg)
    first, second = make(config)[0], make(config)[0]
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1]["boxes"], second[1]["boxes"])
    other = make(config)
    other.set_epoch(1)
    assert not np.array_equal(other[0][0], first[0])
    # Probabilities 0: exactly the loader's samples.
    plain = DetectionBatches(records, SIZE, 5, augment=True, shuffle=True, seed=3)
    np.testing.assert_array_equal(make(AugmentConfig())[0][0], plain[0][0])
    # Validation (no augment) never mixes.
    val = MixedBatches(records, SIZE, 5, augment_config=config)
    np.testing.assert_array_equal(val[0][0], DetectionBatches(records, SIZE, 5)[0][0])


def test_mosaics_stop_at_mosaic_until(tmp_path):
    """``--close-mosaic``: mosaics before epoch ``mosaic_until``, the loader's samples
    from it on (mixup 0)."""
    records = write_records(tmp_path)
    config = AugmentConfig(mosaic=1.0, hue=0, saturation=1, value=1)
    closing = MixedBatches(records, SIZE, 5, augment=True, shuffle=True, seed=3,
                           augment_config=config, mosaic_until=2)
    plain = DetectionBatches(records, SIZE, 5, augment=True, shuffle=True, seed=3,
                             augment_config=config)      # the loader never makes mosaics
    for epoch in range(4):
        closing.set_epoch(epoch)
        plain.set_epoch(epoch)
        assert closing.mosaic_probability() == (1.0 if epoch < 2 else 0.0)
        same = np.array_equal(closing[0][0], plain[0][0])
        assert same == (epoch >= 2), epoch


def test_mixed_batches_mosaic_boxes_hold_their_colour(tmp_path):
    records = write_records(tmp_path, 6, seed=1)
    config = AugmentConfig(mosaic=1.0, hue=0, saturation=1, value=1)
    loader = MixedBatches(records, SIZE, 6, augment=True, shuffle=False, seed=0,
                          augment_config=config)
    for index in range(len(records)):
        sample = loader.load_sample(index)
        assert_boxes_hold_their_colour(sample, margin=2)


def test_probabilities_are_checked():
    with pytest.raises(UsageError, match="mosaic must be a probability"):
        AugmentConfig(mosaic=1.5)
    with pytest.raises(UsageError, match="mixup must be a probability"):
        AugmentConfig(mixup=-0.1)


# ---------------------------------------------------------------------------------------
# The train flags
# ---------------------------------------------------------------------------------------

TRAIN_ANCHORS = np.float32([[8, 8], [12, 16], [16, 12], [20, 24], [28, 28], [40, 40]])


@pytest.fixture(scope="module")
def dataset(synth_with_anchors):
    return synth_with_anchors(TRAIN_ANCHORS)


def train_args(dataset, out, *extra):
    return ["train", str(dataset / "train.txt"), "--model", "yolov3-tiny", "--width",
            "0.0625", "--anchors", str(dataset / "anchors.txt"), "--input-size",
            str(SIZE), "--batch-size", "4", "--steps-per-epoch", "2", "--out", str(out),
            *extra]


@pytest.mark.parametrize("extra,message", [
    (["--mosaic", "1.5"], "--mosaic must be in [0, 1], got 1.5"),
    (["--mixup", "-0.1"], "--mixup must be in [0, 1], got -0.1"),
    (["--mosaic", "0.5", "--no-augment"], "--mosaic 0.5 is a training augmentation; it "
                                          "contradicts --no-augment"),
    (["--mixup", "0.2", "--no-augment"], "--mixup 0.2 is a training augmentation"),
    (["--close-mosaic", "3"], "--close-mosaic 3 needs --mosaic"),
    (["--label-smoothing", "1.0"], "--label-smoothing must be in [0, 0.99], got 1.0"),
    (["--label-smoothing", "0.1", "--model", "yolov2"],
     "--label-smoothing does not apply to --model yolov2"),
])
def test_flag_bounds_are_one_line_usage_errors(dataset, tmp_path, extra, message):
    from typer.testing import CliRunner

    from detkit.cli import app

    result = CliRunner().invoke(app, train_args(dataset, tmp_path / "run", *extra))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_with_every_augmentation_flag_is_finite_and_recorded(dataset, tmp_path):
    import csv
    import json
    import math

    from typer.testing import CliRunner

    from detkit.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, train_args(
        dataset, out, "--epochs", "2", "--mosaic", "1.0", "--close-mosaic", "1",
        "--mixup", "0.5",
        "--label-smoothing", "0.1", "--freeze", "none", "--no-plots"))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["mosaic"] == 1.0 and config["mixup"] == 0.5
    assert config["close_mosaic"] == 1
    assert config["label_smoothing"] == 0.1
    with open(out / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        for name in ("loss", "xy", "wh", "obj", "cls"):
            assert math.isfinite(float(row[name])), (name, row)
