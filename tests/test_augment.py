"""Image decoding, letterbox and random augmentation: geometry, boxes, colour, seeding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detkit.data.augment import (AugmentConfig, ColorJitter, Placement, apply_color,
                                 filter_boxes, letterbox_image, place_image, prepare_sample,
                                 random_sample, sample_color, sample_placement)
from detkit.data.images import check_size, read_image, reduce_factor
from detkit.data.letterbox import PAD_VALUE, Letterbox
from detkit.errors import DataError, UsageError

NO_COLOR = AugmentConfig(hue=0.0, saturation=1.0, value=1.0)
WHITE, BLACK = 255, 0


# --------------------------------------------------------------------------- references
def reference_transform(boxes, placement: Placement, width, height, window, min_size,
                        min_visible):
    """Box by box: scale, shift, flip, clip, filter (slow loop reference)."""
    kept, keep = [], []
    sx, sy = placement.new_width / width, placement.new_height / height
    for index, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.float64)):
        x0, x1 = x0 * sx + placement.dx, x1 * sx + placement.dx
        y0, y1 = y0 * sy + placement.dy, y1 * sy + placement.dy
        if placement.flip:
            x0, x1 = placement.size - x1, placement.size - x0
        area = (x1 - x0) * (y1 - y0)
        cx0, cx1 = min(max(x0, window[0]), window[2]), min(max(x1, window[0]), window[2])
        cy0, cy1 = min(max(y0, window[1]), window[3]), min(max(y1, window[1]), window[3])
        w, h = cx1 - cx0, cy1 - cy0
        if w >= min_size and h >= min_size and w > 0 and h > 0 and \
                w * h >= min_visible * area:
            kept.append((cx0, cy0, cx1, cy1))
            keep.append(index)
    return np.asarray(kept, dtype=np.float64).reshape(-1, 4), np.asarray(keep, dtype=int)


def reference_color(image, color: ColorJitter):
    """Pixel by pixel HSV change in OpenCV's 8-bit HSV (slow loop reference)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int64)
    out = np.empty_like(hsv)
    for i in range(hsv.shape[0]):
        for j in range(hsv.shape[1]):
            h, s, v = hsv[i, j]
            out[i, j, 0] = int(np.rint(h + color.hue * 180)) % 180
            out[i, j, 1] = min(255, int(np.rint(s * color.saturation)))
            out[i, j, 2] = min(255, int(np.rint(v * color.value)))
    return cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_HSV2RGB)


def drawn_image(width, height, boxes):
    """Black image with each (integer) box filled white."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=int):
        image[y0:y1, x0:x1] = WHITE
    return image


def bright_extent(canvas, box, margin=3):
    """The tight xyxy extent of white pixels near ``box`` on a canvas."""
    x0, y0, x1, y1 = box
    h, w = canvas.shape[:2]
    xa, ya = max(int(x0) - margin, 0), max(int(y0) - margin, 0)
    xb, yb = min(int(np.ceil(x1)) + margin, w), min(int(np.ceil(y1)) + margin, h)
    patch = canvas[ya:yb, xa:xb].min(axis=2) > 200
    ys, xs = np.nonzero(patch)
    return np.float64([xs.min() + xa, ys.min() + ya, xs.max() + xa + 1, ys.max() + ya + 1])


# --------------------------------------------------------------------------- images
def test_read_image_returns_rgb(tmp_path):
    bgr = np.zeros((6, 8, 3), dtype=np.uint8)
    bgr[..., 0] = 10   # blue
    bgr[..., 2] = 200  # red
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), bgr)
    image = read_image(path)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], [200, 0, 10])


def test_read_image_gray_png_becomes_three_channels(tmp_path):
    path = tmp_path / "g.png"
    cv2.imwrite(str(path), np.full((5, 7), 77, dtype=np.uint8))
    image = read_image(path)
    assert image.shape == (5, 7, 3)
    np.testing.assert_array_equal(image, 77)


@pytest.mark.parametrize("reduce", [2, 4, 8])
def test_read_image_reduced_size(tmp_path, reduce):
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), np.full((481, 641, 3), 90, dtype=np.uint8))
    image = read_image(path, reduce=reduce)
    assert abs(image.shape[1] - 641 / reduce) < 1 and abs(image.shape[0] - 481 / reduce) < 1
    check_size(image, 641, 481, reduce, path)  # no error
    with pytest.raises(DataError, match="annotation says 640x480"):
        check_size(read_image(path), 640, 480, 1, path)


def test_read_image_bad_reduce(tmp_path):
    with pytest.raises(ValueError, match="got 3"):
        read_image(tmp_path / "x.jpg", reduce=3)


def test_reduce_factor_never_upsamples():
    assert reduce_factor(640, 480, 416, 312) == 1
    assert reduce_factor(640, 480, 320, 240) == 2
    assert reduce_factor(640, 480, 321, 100) == 1
    assert reduce_factor(4000, 3000, 416, 312) == 8
    assert reduce_factor(1000, 1000, 200, 200) == 4


def test_missing_image_names_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match="not found") as info:
        read_image(path)
    assert info.value.path == str(path) and "nope.jpg" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"this is not a jpeg" * 20,
                                     b"\xff\xd8\xff\xe0" + b"\x00" * 300])
def test_corrupt_image_names_file(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot decode") as info:
        read_image(path)
    assert "bad.jpg" in str(info.value)


def test_truncated_jpeg_names_file(tmp_path):
    rng = np.random.default_rng(0)
    ok, data = cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        read_image(path)


def test_folder_instead_of_image(tmp_path):
    with pytest.raises(DataError, match="folder"):
        read_image(tmp_path)


# --------------------------------------------------------------------------- letterbox
def test_letterbox_image_hand_case():
    image = np.full((480, 640, 3), 7, dtype=np.uint8)
    canvas = letterbox_image(image, 416)
    assert canvas.shape == (416, 416, 3) and canvas.dtype == np.uint8
    # scale 0.65 -> 416 x 312 at (0, 52)
    np.testing.assert_array_equal(canvas[:52], PAD_VALUE)
    np.testing.assert_array_equal(canvas[52 + 312:], PAD_VALUE)
    np.testing.assert_array_equal(canvas[52:52 + 312], 7)


def test_prepare_sample_equals_letterbox():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    boxes = np.float32([[0, 0, 90, 50], [10, 5, 30, 40], [45, 10, 46, 11]])
    sample = prepare_sample(image, boxes, [1, 2, 3], 64)
    np.testing.assert_array_equal(sample.image, letterbox_image(image, 64))
    expected = Letterbox(90, 50, 64).to_input(boxes)
    # the 1x1 box shrinks below 1 px and is dropped
    np.testing.assert_array_equal(sample.keep, [0, 1])
    np.testing.assert_allclose(sample.boxes, expected[:2], atol=1e-5)
    np.testing.assert_array_equal(sample.classes, [1, 2])
    assert sample.boxes.dtype == np.float32 and sample.classes.dtype == np.int32


def test_prepare_sample_clips_to_image_area_and_drops_outside():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    boxes = np.float32([[-20, 10, 50, 60],     # clipped on the left, kept
                        [150, -5, 210, 50],    # clipped right and top, kept
                        [190, 80, 400, 300]])  # mostly outside: dropped
    sample = prepare_sample(image, boxes, [0, 1, 2], 100)
    box = Letterbox(200, 100, 100)
    dx, dy = box.offset
    new_w, new_h = box.new_size
    ref, keep = reference_transform(boxes, Placement(new_w, new_h, dx, dy, False, 100),
                                    200, 100, (dx, dy, dx + new_w, dy + new_h), 1.0, 0.25)
    np.testing.assert_array_equal(sample.keep, keep)
    np.testing.assert_array_equal(keep, [0, 1])
    np.testing.assert_allclose(sample.boxes, ref, atol=1e-4)
    assert sample.boxes[:, 1].min() >= dy  # nothing in the gray border


def test_prepare_sample_with_reduced_decode_matches_full():
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    full = cv2.resize(small, (640, 480), interpolation=cv2.INTER_LINEAR)
    half = cv2.resize(full, (320, 240), interpolation=cv2.INTER_AREA)
    boxes = np.float32([[100, 50, 300, 400]])
    a = prepare_sample(full, boxes, [0], 128)
    b = prepare_sample(half, boxes, [0], 128, source_size=(640, 480))
    np.testing.assert_allclose(a.boxes, b.boxes)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 2.0


# --------------------------------------------------------------------------- boxes
def test_filter_boxes_hand_cases():
    boxes = np.float32([[400, 10, 500, 50],   # 16 of 100 px wide visible: dropped
                        [300, 10, 500, 50],   # 116 of 200 visible: kept, clipped
                        [10, 10, 10.5, 40],   # 0.5 px wide: dropped
                        [10, 10, 12, 40],     # 2 px wide: kept
                        [30, 30, 20, 40]])    # inverted: dropped
    kept, keep = filter_boxes(boxes, (0, 0, 416, 416))
    np.testing.assert_array_equal(keep, [1, 3])
    np.testing.assert_allclose(kept, [[300, 10, 416, 50], [10, 10, 12, 40]])
    kept, keep = filter_boxes(boxes, (0, 0, 416, 416), min_size=3, min_visible=0.0)
    np.testing.assert_array_equal(keep, [0, 1])
    assert keep.dtype == np.int64 or keep.dtype == np.intp


def test_filter_boxes_matches_reference_on_random_boxes():
    rng = np.random.default_rng(3)
    xy = rng.uniform(-50, 150, (300, 2))
    wh = rng.uniform(0, 60, (300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    window = (5, 10, 100, 90)
    kept, keep = filter_boxes(boxes, window, min_size=2, min_visible=0.4)
    identity = Placement(100, 100, 0, 0, False, 100)
    ref, ref_keep = reference_transform(boxes, identity, 100, 100, window, 2, 0.4)
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_allclose(kept, ref, atol=1e-4)
    assert 0 < len(keep) < len(boxes)


def test_placement_to_input_hand_case_with_flip():
    placement = Placement(new_width=200, new_height=100, dx=10, dy=20, flip=True, size=416)
    out = placement.to_input(np.float32([[0, 0, 40, 50]]), width=400, height=200)
    # scale 0.5: (10, 20, 30, 45); flipped about 416: x -> 416 - x
    np.testing.assert_allclose(out, [[386, 20, 406, 45]])
    assert placement.left == 416 - 10 - 200
    assert placement.window == (206, 20, 406, 120)


def test_random_sample_boxes_match_reference_transform():
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 500, (40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 200, (40, 2))], axis=1)
    boxes = np.minimum(boxes, [640, 480, 640, 480]).astype(np.float32)
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    classes = np.arange(40)
    config = AugmentConfig()
    for seed in range(30):
        placement = sample_placement(np.random.default_rng(seed), 640, 480, 416, config)
        sample = random_sample(image, boxes, classes, 416, np.random.default_rng(seed), config)
        ref, keep = reference_transform(boxes, placement, 640, 480, placement.window,
                                        config.min_size, config.min_visible)
        np.testing.assert_array_equal(sample.keep, keep)
        np.testing.assert_allclose(sample.boxes, ref, atol=1e-3)
        np.testing.assert_array_equal(sample.classes, classes[keep])


# --------------------------------------------------------------------------- drawn boxes
@pytest.mark.parametrize("seed", range(12))
def test_drawn_box_lands_on_drawn_pixels(seed):
    boxes = np.float32([[100, 80, 260, 200], [400, 300, 600, 460], [30, 350, 90, 470]])
    image = drawn_image(640, 480, boxes)
    sample = random_sample(image, boxes, [0, 1, 2], 416, np.random.default_rng(seed),
                           NO_COLOR)
    for box in sample.boxes:
        if min(box[2] - box[0], box[3] - box[1]) < 6:
            continue
        np.testing.assert_allclose(bright_extent(sample.image, box), box, atol=1.01)
        # and the box interior is entirely white
        x0, y0, x1, y1 = np.ceil(box[:2] + 1).astype(int).tolist() + \
            np.floor(box[2:] - 1).astype(int).tolist()
        assert sample.image[y0:y1, x0:x1].min() > 200


def test_drawn_box_round_trip_covers_flips_and_crops():
    boxes = np.float32([[100, 80, 260, 200]])
    image = drawn_image(640, 480, boxes)
    flips, crops = 0, 0
    for seed in range(60):
        placement = sample_placement(np.random.default_rng(seed), 640, 480, 416, NO_COLOR)
        sample = random_sample(image, boxes, [0], 416, np.random.default_rng(seed), NO_COLOR)
        flips += placement.flip
        crops += placement.window != (placement.left, placement.dy,
                                      placement.left + placement.new_width,
                                      placement.dy + placement.new_height)
        if len(sample.boxes) and min(np.diff(sample.boxes[0].reshape(2, 2), axis=0)[0]) > 6:
            np.testing.assert_allclose(bright_extent(sample.image, sample.boxes[0]),
                                       sample.boxes[0], atol=1.01)
    assert flips > 10 and crops > 10


def test_drawn_box_with_color_jitter_stays_colored():
    boxes = np.float32([[200, 150, 400, 300]])
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    image[150:300, 200:400] = (255, 0, 0)
    for seed in range(8):
        sample = random_sample(image, boxes, [0], 416, np.random.default_rng(seed))
        if not len(sample.boxes):
            continue
        x0, y0, x1, y1 = sample.boxes[0]
        spread = sample.image.max(axis=2).astype(int) - sample.image.min(axis=2)
        inside = spread[int(y0) + 2:int(y1) - 1, int(x0) + 2:int(x1) - 1]
        assert inside.min() > 60  # still strongly coloured everywhere inside
        colored = np.argwhere(spread > 60)
        np.testing.assert_allclose(colored.min(axis=0)[::-1], [x0, y0], atol=1.01)
        np.testing.assert_allclose(colored.max(axis=0)[::-1] + 1, [x1, y1], atol=1.01)


def test_place_image_pad_and_window():
    image = np.full((40, 60, 3), 9, dtype=np.uint8)
    placement = Placement(new_width=30, new_height=20, dx=5, dy=7, flip=False, size=64)
    canvas = place_image(image, placement)
    np.testing.assert_array_equal(canvas[7:27, 5:35], 9)
    canvas[7:27, 5:35] = PAD_VALUE
    np.testing.assert_array_equal(canvas, PAD_VALUE)


def test_place_image_flip_mirrors_canvas():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    plain = place_image(image, Placement(60, 40, -7, 3, False, 48))
    flipped = place_image(image, Placement(60, 40, -7, 3, True, 48))
    np.testing.assert_array_equal(flipped, plain[:, ::-1])


# --------------------------------------------------------------------------- colour
def test_apply_color_matches_pixel_loop():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    for color in (ColorJitter(0.05, 1.3, 0.8), ColorJitter(-0.1, 0.7, 1.45)):
        np.testing.assert_array_equal(apply_color(image, color), reference_color(image, color))


def test_apply_color_agrees_with_float_hsv_of_keras_yolo3():
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    color = ColorJitter(0.07, 1.4, 0.75)
    x = rgb_to_hsv(image / 255.0)
    x[..., 0] = (x[..., 0] + color.hue) % 1
    x[..., 1] *= color.saturation
    x[..., 2] *= color.value
    expected = hsv_to_rgb(np.clip(x, 0, 1)) * 255
    diff = np.abs(apply_color(image, color).astype(np.float64) - expected)
    assert diff.mean() < 1.5 and diff.max() < 8


def test_identity_color_is_unchanged():
    image = np.random.default_rng(8).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_color(image, ColorJitter()), image)


# --------------------------------------------------------------------------- randomness
def test_same_seed_same_sample_other_seed_differs():
    rng = np.random.default_rng(9)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes = np.float32([[10, 10, 50, 40]])
    a = random_sample(image, boxes, [1], 64, np.random.default_rng(11))
    b = random_sample(image, boxes, [1], 64, np.random.default_rng(11))
    c = random_sample(image, boxes, [1], 64, np.random.default_rng(12))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.image, c.image)


def test_placement_and_color_ranges():
    config = AugmentConfig(scale=(0.25, 2.0), jitter=0.3)  # keras-yolo3's ranges
    rng = np.random.default_rng(10)
    placements = [sample_placement(rng, 640, 480, 416, config) for _ in range(500)]
    longer = np.array([max(p.new_width, p.new_height) for p in placements])
    assert longer.min() >= int(0.25 * 416) and longer.max() <= 2 * 416
    assert longer.min() < 150 and longer.max() > 750
    aspect = np.array([p.new_width / p.new_height for p in placements])
    # image aspect 4/3 jittered by (1 +- .3) / (1 +- .3)
    assert aspect.min() > 4 / 3 * 0.7 / 1.3 - 0.05 and aspect.max() < 4 / 3 * 1.3 / 0.7 + 0.05
    assert 0.4 < np.mean([p.flip for p in placements]) < 0.6
    for p in placements:  # the image always overlaps the canvas
        x0, y0, x1, y1 = p.window
        assert x1 > x0 and y1 > y0
    colors = [sample_color(rng, config) for _ in range(500)]
    hues = np.array([c.hue for c in colors])
    sats = np.array([c.saturation for c in colors])
    assert np.abs(hues).max() <= 0.1 and hues.min() < -0.08 and hues.max() > 0.08
    assert sats.min() >= 1 / 1.5 - 1e-9 and sats.max() <= 1.5 + 1e-9
    assert 0.4 < np.mean(sats > 1) < 0.6


def test_given_placement_is_used():
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    placement = Placement(32, 24, 4, 6, True, 64)
    sample = random_sample(image, np.float32([[0, 0, 64, 48]]), [0], 64,
                           np.random.default_rng(0), NO_COLOR, placement=placement)
    np.testing.assert_allclose(sample.boxes, [[64 - 4 - 32, 6, 64 - 4, 30]])
    with pytest.raises(ValueError, match="not 32"):
        random_sample(image, np.zeros((0, 4)), [], 32, np.random.default_rng(0),
                      placement=placement)


def test_no_boxes_is_fine():
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    sample = random_sample(image, np.zeros((0, 4)), [], 32, np.random.default_rng(0))
    assert sample.boxes.shape == (0, 4) and sample.classes.shape == (0,)
    sample = prepare_sample(image, np.zeros((0, 4)), [], 32)
    assert sample.boxes.shape == (0, 4) and sample.image.shape == (32, 32, 3)


@pytest.mark.parametrize("kwargs", [dict(jitter=1.0), dict(scale=(2.0, 1.0)),
                                    dict(flip=1.5), dict(hue=0.7), dict(saturation=0.5),
                                    dict(value=0.9), dict(min_size=-1),
                                    dict(min_visible=2.0)])
def test_bad_config_is_usage_error(kwargs):
    with pytest.raises(UsageError, match="got"):
        AugmentConfig(**kwargs)
