"""DetectionBatches: shapes, padding, the deterministic path, seeding, workers, errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from detkit.data.augment import prepare_sample
from detkit.data.images import read_image
from detkit.data.loader import PAD_CLASS, DetectionBatches
from detkit.data.records import ImageRecord
from detkit.errors import DataError, UsageError

SIZE = 64


def write_images(folder, count, width=80, height=60, seed=0, known_size=True):
    """``count`` PNG images with 1-3 white boxes on smooth noise, and their records."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        small = rng.integers(0, 200, (4, 5, 3), dtype=np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        boxes = []
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 20)
            x1, y1 = x0 + rng.integers(8, 20), y0 + rng.integers(8, 20)
            image[y0:y1, x0:x1] = 255
            boxes.append((x0, y0, x1, y1))
        path = folder / f"im{i}.png"
        cv2.imwrite(str(path), image)
        w, h = (width, height) if known_size else (None, None)
        records.append(ImageRecord(str(path), w, h, np.float32(boxes),
                                   rng.integers(0, 5, len(boxes)), image_id=i))
    return records


@pytest.fixture
def records(tmp_path):
    return write_images(tmp_path, 7)


def batches_equal(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1]["boxes"], b[1]["boxes"])
    np.testing.assert_array_equal(a[1]["classes"], b[1]["classes"])


def test_shapes_dtypes_padding_and_length(records):
    loader = DetectionBatches(records, SIZE, 3, max_boxes=5)
    assert len(loader) == 3
    images, targets = loader[0]
    assert images.shape == (3, SIZE, SIZE, 3) and images.dtype == np.float32
    assert targets["boxes"].shape == (3, 5, 4) and targets["boxes"].dtype == np.float32
    assert targets["classes"].shape == (3, 5) and targets["classes"].dtype == np.int32
    assert 0.0 <= images.min() and images.max() <= 1.0
    for slot, record in enumerate(records[:3]):
        n = record.num_boxes
        np.testing.assert_array_equal(targets["classes"][slot, :n], record.classes)
        np.testing.assert_array_equal(targets["classes"][slot, n:], PAD_CLASS)
        np.testing.assert_array_equal(targets["boxes"][slot, n:], 0)
    last_images, last_targets = loader[2]  # 7 = 3 + 3 + 1
    assert last_images.shape[0] == 1 and last_targets["boxes"].shape == (1, 5, 4)
    with pytest.raises(IndexError):
        loader[3]
    assert len(list(loader)) == 3


def test_deterministic_path_equals_prepare_sample(records):
    loader = DetectionBatches(records, SIZE, 4)
    images, targets = loader[1]
    for slot, record in enumerate(records[4:]):
        sample = prepare_sample(read_image(record.image_path), record.boxes, record.classes,
                                SIZE)
        np.testing.assert_allclose(images[slot], sample.image / 255.0, atol=1e-6)
        n = len(sample.boxes)
        np.testing.assert_allclose(targets["boxes"][slot, :n], sample.boxes)
        np.testing.assert_array_equal(targets["classes"][slot, :n], sample.classes)


def test_unknown_sizes_give_the_same_batches(tmp_path):
    known = write_images(tmp_path, 3, width=300, height=200)
    unknown = [ImageRecord(r.image_path, None, None, r.boxes, r.classes) for r in known]
    # 300x200 -> 64 shrinks more than 4x: the known-size path decodes reduced (PNG here,
    # so the reduction is a resize inside OpenCV); boxes agree exactly, pixels closely.
    for augment in (False, True):
        a = DetectionBatches(known, SIZE, 3, augment=augment, seed=1)[0]
        b = DetectionBatches(unknown, SIZE, 3, augment=augment, seed=1)[0]
        np.testing.assert_allclose(a[1]["boxes"], b[1]["boxes"], atol=1e-4)
        np.testing.assert_array_equal(a[1]["classes"], b[1]["classes"])
        assert np.abs(a[0] - b[0]).mean() < 0.03


def test_same_seed_same_batches_any_order(records):
    a = DetectionBatches(records, SIZE, 2, augment=True, shuffle=True, seed=5)
    b = DetectionBatches(records, SIZE, 2, augment=True, shuffle=True, seed=5)
    reverse = [b[i] for i in reversed(range(len(b)))][::-1]
    for i in range(len(a)):
        batches_equal(a[i], reverse[i])
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(b.__getitem__, range(len(b))))
    for i in range(len(a)):
        batches_equal(a[i], threaded[i])


def test_other_seed_or_epoch_differs(records):
    a = DetectionBatches(records, SIZE, 7, augment=True, seed=5)
    b = DetectionBatches(records, SIZE, 7, augment=True, seed=6)
    assert not np.array_equal(a[0][0], b[0][0])
    first = a[0][0]
    a.on_epoch_end()
    assert a.epoch == 1
    assert not np.array_equal(first, a[0][0])
    a.set_epoch(0)
    np.testing.assert_array_equal(first, a[0][0])


def test_shuffle_order_is_seeded_per_epoch(records):
    loader = DetectionBatches(records, SIZE, 2, shuffle=True, seed=3)
    orders = []
    for _ in range(4):
        orders.append(loader.order)
        loader.on_epoch_end()
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(7))
    assert len({tuple(o) for o in orders}) > 1
    again = DetectionBatches(records, SIZE, 2, shuffle=True, seed=3, epoch=2)
    np.testing.assert_array_equal(again.order, orders[2])
    plain = DetectionBatches(records, SIZE, 2, shuffle=False, seed=3)
    plain.on_epoch_end()
    np.testing.assert_array_equal(plain.order, np.arange(7))


def test_shuffled_batch_holds_the_ordered_records(records):
    loader = DetectionBatches(records, SIZE, 3, shuffle=True, seed=8)
    plain = DetectionBatches(records, SIZE, 1)
    order = loader.order
    images, targets = loader[0]
    for slot, index in enumerate(order[:3]):
        np.testing.assert_array_equal(images[slot], plain[int(index)][0][0])
        np.testing.assert_array_equal(targets["boxes"][slot], plain[int(index)][1]["boxes"][0])


def test_augmented_boxes_stay_inside_and_classes_follow(records):
    loader = DetectionBatches(records, SIZE, 7, augment=True, seed=2, max_boxes=4)
    for epoch in range(5):
        loader.set_epoch(epoch)
        _, targets = loader[0]
        valid = targets["classes"] >= 0
        boxes = targets["boxes"][valid]
        assert np.all(boxes >= 0) and np.all(boxes <= SIZE)
        assert np.all(boxes[:, 2:] - boxes[:, :2] >= 1)
        for slot, record in enumerate(records):
            assert set(targets["classes"][slot][valid[slot]]) <= set(record.classes)


def test_max_boxes_keeps_the_largest_in_order(tmp_path):
    path = tmp_path / "many.png"
    cv2.imwrite(str(path), np.zeros((64, 64, 3), dtype=np.uint8))
    boxes = np.float32([[0, 0, 10, 10], [0, 0, 30, 30], [5, 5, 10, 10],
                        [0, 0, 40, 20], [1, 1, 3, 3]])
    record = ImageRecord(str(path), 64, 64, boxes, [0, 1, 2, 3, 4])
    _, targets = DetectionBatches([record], SIZE, 1, max_boxes=2)[0]
    np.testing.assert_array_equal(targets["classes"][0], [1, 3])
    np.testing.assert_allclose(targets["boxes"][0], boxes[[1, 3]])


def test_encoder_hook_gets_padded_arrays(records):
    seen = {}

    def encoder(boxes, classes):
        seen["shapes"] = (boxes.shape, classes.shape)
        return [boxes.sum(axis=(1, 2)), (classes >= 0).sum(axis=1)]

    images, targets = DetectionBatches(records, SIZE, 3, max_boxes=6, encoder=encoder)[0]
    assert seen["shapes"] == ((3, 6, 4), (3, 6))
    np.testing.assert_array_equal(targets[1], [r.num_boxes for r in records[:3]])
    assert images.shape == (3, SIZE, SIZE, 3)


def test_bad_image_raises_data_error_naming_it(tmp_path, records):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    loader = DetectionBatches(records + [ImageRecord(str(bad), None, None, [], [])], SIZE, 4)
    loader[0]  # the good batch still works
    with pytest.raises(DataError, match="broken.jpg"):
        loader[1]
    missing = ImageRecord(str(tmp_path / "gone.png"), 80, 60, [], [])
    with pytest.raises(DataError, match="gone.png"):
        DetectionBatches([missing], SIZE, 1, augment=True)[0]


def test_wrong_recorded_size_is_data_error(records):
    wrong = ImageRecord(records[0].image_path, 100, 60, records[0].boxes, records[0].classes)
    with pytest.raises(DataError, match="annotation says 100x60"):
        DetectionBatches([wrong], SIZE, 1)[0]


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(input_size=-32),
                                    dict(max_boxes=0), dict(seed=-1), dict(batch_size=2.5)])
def test_bad_arguments_are_usage_errors(records, kwargs):
    args = dict(input_size=SIZE, batch_size=2) | kwargs
    with pytest.raises(UsageError, match="got"):
        DetectionBatches(records, **args)


def test_keras_fit_with_workers_advances_epochs(records):
    import keras

    loader = DetectionBatches(records, SIZE, 4, augment=True, shuffle=True, seed=0,
                              workers=2, encoder=lambda b, c: (c >= 0).sum(axis=1,
                                                                         keepdims=True))
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(loader, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.all(np.isfinite(history.history["loss"]))
    assert loader.epoch == 1  # fit epochs 0 and 1 used this dataset's epochs 0 and 1


def test_keras_epoch_protocol_counts_beginnings(records):
    loader = DetectionBatches(records, SIZE, 2, shuffle=True, seed=4, epoch=3)
    orders = {e: DetectionBatches(records, SIZE, 2, shuffle=True, seed=4, epoch=e).order
              for e in (3, 4)}
    loader.on_epoch_end()  # Keras resets the iterator once before training
    for epoch in (3, 4):
        loader.on_epoch_begin()
        assert loader.epoch == epoch
        np.testing.assert_array_equal(loader.order, orders[epoch])
        loader.on_epoch_end()
    assert loader.epoch == 4


def test_each_image_gets_its_own_draws(records):
    twins = [records[0]] * 4
    images, _ = DetectionBatches(twins, SIZE, 4, augment=True, seed=1)[0]
    for i in range(4):
        for j in range(i):
            assert not np.array_equal(images[i], images[j])
