"""Bottleneck caches: HDF5 layout, resume, mismatch errors, streaming reads, head equality."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tracemalloc
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.bottlenecks import (BottleneckCache, CachedFeatureBatches,
                                CacheSettings, choose_filters, partial_path,
                                write_cache)
from detkit.errors import (ArtifactError, ArtifactMismatchError, TrainingError,
                           UsageError)

SHAPES = [(2, 2, 8), (4, 4, 4)]


def fake_features(index: int) -> list[np.ndarray]:
    """Deterministic per-image features, one array per scale (a function of the row)."""
    rng = np.random.default_rng(index)
    return [rng.normal(size=shape).astype(np.float32) * 3 for shape in SHAPES]


class FakeCompute:
    """``compute(indices)`` of :func:`write_cache` that records calls, may fail once."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[list[int]] = []
        self.fail_at = fail_at

    def __call__(self, indices):
        indices = [int(i) for i in indices]
        if self.fail_at is not None and self.fail_at in indices:
            raise KeyboardInterrupt
        self.calls.append(indices)
        per_image = [fake_features(i) for i in indices]
        return [np.stack([f[s] for f in per_image]) for s in range(len(SHAPES))]


def settings(n: int = 10, **changes) -> CacheSettings:
    base = dict(model="yolov3-tiny", width=0.25, split="all-but-heads", input_size=64,
                weights_sha256="ab" * 32, image_paths=[f"img/{i}.png" for i in range(n)])
    base.update(changes)
    return CacheSettings(**base)


# --------------------------------------------------------------------------- storage

@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_layout_and_values(tmp_path, dtype):
    path = tmp_path / "b.h5"
    report = write_cache(path, settings(dtype=dtype), FakeCompute(), batch_size=3)
    assert path.exists() and not partial_path(path).exists()
    assert report.num_images == 10 and report.computed == 10 and report.resumed_from == 0
    itemsize = np.dtype(dtype).itemsize
    assert report.raw_bytes_per_image == sum(np.prod(s) for s in SHAPES) * itemsize
    with h5py.File(path) as handle:
        for i, shape in enumerate(SHAPES):
            dset = handle[f"features_{i}"]
            assert dset.shape == (10, *shape) and dset.dtype == np.dtype(dtype)
            assert dset.chunks == (1, *shape)
        assert bool(handle.attrs["complete"]) and int(handle.attrs["n_done"]) == 10
    with BottleneckCache(path) as cache:
        assert len(cache) == 10 and cache.shapes == SHAPES
        assert cache.image_paths == [f"img/{i}.png" for i in range(10)]
        rows = [7, 0, 7, 3]  # any order, repeats allowed
        got = cache.read(rows)
        for scale in range(len(SHAPES)):
            assert got[scale].dtype == np.float32
            want = np.stack([fake_features(r)[scale] for r in rows]).astype(dtype)
            np.testing.assert_array_equal(got[scale], want.astype(np.float32))
        with pytest.raises(IndexError):
            cache.read([10])


def test_float16_error_is_half_precision(tmp_path):
    path = tmp_path / "b.h5"
    write_cache(path, settings(), FakeCompute(), batch_size=4)
    with BottleneckCache(path) as cache:
        got = cache.read(range(10))
    for scale in range(len(SHAPES)):
        want = np.stack([fake_features(r)[scale] for r in range(10)])
        np.testing.assert_allclose(got[scale], want, rtol=2 ** -10, atol=1e-7)


def test_interrupted_run_never_looks_complete_and_resume_finishes(tmp_path):
    path = tmp_path / "b.h5"
    with pytest.raises(KeyboardInterrupt):
        write_cache(path, settings(), FakeCompute(fail_at=7), batch_size=3)
    assert not path.exists()
    partial = partial_path(path)
    assert partial.exists()
    with h5py.File(partial) as handle:
        assert int(handle.attrs["n_done"]) == 6 and not bool(handle.attrs["complete"])
    with pytest.raises(ArtifactError, match="--resume"):
        BottleneckCache(path)
    with pytest.raises(ArtifactError, match=r"incomplete cache \(6 of 10"):
        BottleneckCache(partial)

    compute = FakeCompute()
    report = write_cache(path, settings(), compute, batch_size=3, resume=True)
    assert compute.calls == [[6, 7, 8], [9]]  # only the missing rows
    assert report.resumed_from == 6 and report.computed == 4
    assert not partial.exists()
    fresh = tmp_path / "fresh.h5"
    write_cache(fresh, settings(), FakeCompute(), batch_size=5)
    with BottleneckCache(path) as a, BottleneckCache(fresh) as b:
        for x, y in zip(a.read(range(10)), b.read(range(10))):
            np.testing.assert_array_equal(x, y)


def test_resume_refuses_other_settings_and_restarts_unreadable_partial(tmp_path):
    path = tmp_path / "b.h5"
    with pytest.raises(KeyboardInterrupt):
        write_cache(path, settings(), FakeCompute(fail_at=4), batch_size=2)
    with pytest.raises(ArtifactMismatchError, match="weights_sha256") as err:
        write_cache(path, settings(weights_sha256="cd" * 32), FakeCompute(), resume=True)
    assert "without --resume to start over, with --exist-ok" in str(err.value)
    partial_path(path).write_bytes(b"not hdf5 at all")
    report = write_cache(path, settings(), FakeCompute(), batch_size=4, resume=True)
    assert report.resumed_from == 0 and report.computed == 10
    assert any("unreadable" in note for note in report.notes)
    # write_cache without resume replaces an old partial file (the command refuses
    # first: test_cli_new_run_over_a_partial_cache_is_refused_unless_exist_ok).
    with pytest.raises(KeyboardInterrupt):
        write_cache(tmp_path / "c.h5", settings(), FakeCompute(fail_at=4), batch_size=2)
    compute = FakeCompute()
    write_cache(tmp_path / "c.h5", settings(), compute, batch_size=5)
    assert compute.calls == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_mismatch_names_every_difference_and_first_image(tmp_path):
    path = tmp_path / "b.h5"
    write_cache(path, settings(), FakeCompute(), batch_size=5)
    with BottleneckCache(path) as cache:
        cache.check(settings())  # the same settings pass
        paths = [f"img/{i}.png" for i in range(10)]
        paths[3] = "img/other.png"
        other = settings(model="yolov3", weights_sha256="cd" * 32, image_paths=paths)
        with pytest.raises(ArtifactMismatchError) as err:
            cache.check(other)
        message = str(err.value)
        assert "model: " in message and "yolov3-tiny" in message
        assert "weights_sha256" in message and "images_sha256" in message
        assert "image 3: img/3.png vs img/other.png" in message
        assert "width" not in message and "input_size" not in message
        with pytest.raises(ArtifactMismatchError, match=r"num_images: .* has 10, .* has 9"):
            cache.check(settings(n=9))
        with pytest.raises(ArtifactMismatchError, match="split"):
            cache.check(settings(split="body"))


def test_an_image_edited_after_caching_makes_the_cache_stale(tmp_path):
    """Rows are stamped with their image's size, time and sha256: other bytes in an image
    still there are refused naming it; a touch or a copy of the same bytes is not a
    change, and images that are gone (moved data) are not compared."""
    images = tmp_path / "img"
    images.mkdir()
    paths = [images / f"{i}.png" for i in range(6)]
    for i, path in enumerate(paths):
        path.write_bytes(bytes([i]) * (100 + i))
    path = tmp_path / "c.h5"
    write_cache(path, settings(n=6, image_paths=[str(p) for p in paths]), FakeCompute(),
                batch_size=4)
    BottleneckCache(path).close()                      # unchanged: opens

    os.utime(paths[1], ns=(1, 1))                      # touched: same bytes
    paths[2].unlink()                                  # gone: not compared
    BottleneckCache(path).close()

    paths[4].write_bytes(bytes([9]) * 104)             # same size, other bytes
    with pytest.raises(ArtifactMismatchError,
                       match=rf"stale: image 4 \({re.escape(str(paths[4]))}\) changed after "
                             r"the cache was made"):
        BottleneckCache(path)
    paths[4].write_bytes(bytes([4]) * 104)             # restored: opens again
    BottleneckCache(path).close()
    paths[5].write_bytes(b"longer now" * 20)           # another size
    with pytest.raises(ArtifactMismatchError, match=r"image 5 "):
        BottleneckCache(path)


def test_resumed_cache_stamps_every_row(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(5)]
    for i, image in enumerate(paths):
        image.write_bytes(bytes([i]) * 10)
    path, s = tmp_path / "c.h5", settings(n=5, image_paths=[str(p) for p in paths])
    with pytest.raises(KeyboardInterrupt):
        write_cache(path, s, FakeCompute(fail_at=3), batch_size=2)
    write_cache(path, s, FakeCompute(), batch_size=2, resume=True)
    with h5py.File(path, "r") as handle:
        assert [len(d) for d in handle["image_sha256"][:]] == [64] * 5
        assert list(handle["image_bytes"][:]) == [10] * 5


def test_reader_rejects_other_files(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        BottleneckCache(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("hello")
    with pytest.raises(ArtifactError, match="not a readable HDF5"):
        BottleneckCache(bad)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle.attrs["kind"] = "something"
    with pytest.raises(ArtifactError, match="not a bottleneck cache"):
        BottleneckCache(other)


def test_bad_options(tmp_path):
    with pytest.raises(UsageError, match="--dtype"):
        settings(dtype="float64")
    with pytest.raises(UsageError, match="--compression"):
        write_cache(tmp_path / "x.h5", settings(), FakeCompute(), compression="zip")
    with pytest.raises(UsageError, match="--batch-size"):
        write_cache(tmp_path / "x.h5", settings(), FakeCompute(), batch_size=0)
    assert not (tmp_path / "x.h5").exists()


def test_features_beyond_float16_or_non_finite_are_refused(tmp_path):
    def huge(indices):
        out = FakeCompute()(indices)
        out[1][-1, 0, 0, 0] = 1e6  # the last image of each batch
        return out

    with pytest.raises(UsageError, match=r"image 3 reach \|x\| = 1e\+06.*--dtype float32"):
        write_cache(tmp_path / "h.h5", settings(), huge, batch_size=4)
    assert not (tmp_path / "h.h5").exists()
    write_cache(tmp_path / "h32.h5", settings(dtype="float32"), huge, batch_size=4)
    with BottleneckCache(tmp_path / "h32.h5") as cache:
        assert cache.read([3])[1][0, 0, 0, 0] == 1e6

    def nan(indices):
        out = FakeCompute()(indices)
        out[0][0, 0, 0, 0] = np.nan
        return out

    with pytest.raises(TrainingError, match="NaN/Inf features for image 0"):
        write_cache(tmp_path / "n.h5", settings(dtype="float32"), nan, batch_size=4)


def test_compression_only_when_it_pays(tmp_path):
    zeros = np.zeros((2, 8, 8, 16), np.float16)
    noise = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype(np.float16)
    assert choose_filters(zeros).compression in ("lzf", "gzip")
    assert choose_filters(zeros).ratio < 0.5
    auto = choose_filters(noise)
    assert auto.compression is None and auto.ratio == 1.0
    assert choose_filters(noise, "gzip").compression == "gzip"
    assert choose_filters(zeros, "none").compression is None
    # Leaky-ReLU-like activations (many small negatives): whatever auto picks must
    # make the stored data no larger than the raw bytes.
    act = np.where(noise > 0, noise, noise * np.float16(0.1)).astype(np.float16)
    choice = choose_filters(act)
    assert choice.ratio <= 1.0


# --------------------------------------------------------------------------- streaming

def test_batches_cover_every_row_once_per_epoch_and_pair_targets(tmp_path):
    path = tmp_path / "b.h5"
    write_cache(path, settings(n=11), FakeCompute(), batch_size=4)
    seen_targets = []
    cache = BottleneckCache(path)
    batches = CachedFeatureBatches(cache, lambda rows: rows * 10, batch_size=4, shuffle=True,
                                   seed=1)
    assert len(batches) == 3
    orders = []
    for _ in range(2):
        rows = []
        for b in range(len(batches)):
            features, targets = batches[b]
            expect = batches.batch_indices(b)
            np.testing.assert_array_equal(targets, expect * 10)
            np.testing.assert_array_equal(
                features[0], np.stack([fake_features(r)[0] for r in expect])
                .astype(np.float16).astype(np.float32))
            rows += list(expect)
            seen_targets.append(targets)
        assert sorted(rows) == list(range(11))
        orders.append(rows)
        batches.on_epoch_end()
    assert orders[0] != orders[1]
    # A resumed run (epoch=1) sees the second epoch's order; paths follow the rows.
    again = CachedFeatureBatches(cache, lambda r: r, batch_size=4, shuffle=True, seed=1,
                                 epoch=1)
    assert [int(r) for b in range(3) for r in again.batch_indices(b)] == orders[1]
    assert again.batch_images(0) == [f"img/{r}.png" for r in again.batch_indices(0)]
    subset = CachedFeatureBatches(cache, lambda r: r, 2, shuffle=False, indices=[5, 1, 9])
    assert [list(subset[i][1]) for i in range(len(subset))] == [[5, 1], [9]]
    with pytest.raises(IndexError):
        subset[2]


def test_reads_stream_without_loading_the_cache(tmp_path):
    """A cache 50x larger than a batch is iterated with memory of a few batches."""
    n, shape = 200, (16, 16, 128)  # 64 KiB per row at float16, 13 MB in all
    path = tmp_path / "big.h5"
    s = CacheSettings(model="m", width=1.0, split="body", input_size=512,
                      weights_sha256="x", image_paths=[str(i) for i in range(n)])

    def compute(indices):
        return [np.ones((len(indices), *shape), np.float32)]

    write_cache(path, s, compute, batch_size=8, compression="none")
    cache = BottleneckCache(path)
    batches = CachedFeatureBatches(cache, lambda r: r, batch_size=4, shuffle=True)
    tracemalloc.start()
    total = 0.0
    for b in range(len(batches)):
        features, _ = batches[b]
        total += float(features[0].sum())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == pytest.approx(n * np.prod(shape))
    whole = n * np.prod(shape) * 2
    batch_bytes = 4 * np.prod(shape) * (2 + 4)  # float16 buffer + float32 copy
    assert peak < 3 * batch_bytes < whole / 4


def test_reader_pickles_for_worker_processes(tmp_path):
    path = tmp_path / "b.h5"
    write_cache(path, settings(), FakeCompute(), batch_size=5)
    cache = BottleneckCache(path)
    want = cache.read([2, 4])
    clone = pickle.loads(pickle.dumps(cache))
    for x, y in zip(clone.read([2, 4]), want):
        np.testing.assert_array_equal(x, y)
    cache.close()
    clone.close()


# --------------------------------------------------------------------------- models

@pytest.fixture(scope="module")
def tiny_model():
    import keras

    from detkit.models import build_model

    keras.utils.set_random_seed(3)
    return build_model("yolov3-tiny", 2, width=0.125, input_size=64)


@pytest.mark.parametrize("split", ["body", "all-but-heads"])
def test_split_parts_compose_to_the_model(tiny_model, split):
    from detkit.bottleneck_training import frozen_features, split_model

    parts = split_model(tiny_model, split)
    images = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    want = tiny_model(images, training=False)
    got = parts.trainable(frozen_features(parts, images), training=False)
    for x, y in zip(got, want):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
    # The trainable part shares the detector's variables (training it trains the model).
    model_ids = {id(v) for v in tiny_model.weights}
    assert parts.trainable.weights and all(id(v) in model_ids for v in parts.trainable.weights)
    if split == "all-but-heads":
        assert {w.path.split("/")[0] for w in parts.trainable.weights} <= {
            "head_out_0", "head_out_1"}


def test_split_rejects_unknown_names(tiny_model):
    from detkit.bottleneck_training import split_model

    with pytest.raises(UsageError, match="--split"):
        split_model(tiny_model, "neck")


# --------------------------------------------------------------------------- end to end

def make_dataset(root, n=5, size=64):
    """A lines-file dataset of ``n`` random images (one or two boxes each)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        w, h = size, size * 3 // 4 if i % 2 else size
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        path = root / "images" / f"{i}.png"
        cv2.imwrite(str(path), image)
        boxes = [f"{w // 8},{h // 8},{w // 2},{h // 2},{i % 2}"]
        if i % 3 == 0:
            boxes.append(f"{w // 3},{h // 4},{w - 2},{h - 3},0")
        lines.append(f"{path} {' '.join(boxes)}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("a\nb\n")
    return root / "train.txt"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A dataset, its labels.npz and a float32 cache of a from-scratch tiny model."""
    from detkit.commands import encode_labels

    root = tmp_path_factory.mktemp("pipe")
    data = make_dataset(root)
    common = dict(classes=root / "classes.txt", input_size=64, model="yolov3-tiny")
    encode_labels.run(encode_labels.Options(data=data, out=root / "labels.npz", **common))
    result = cache_features(data, out=root / "b32.h5", width=0.125, dtype="float32",
                               seed=5, batch_size=2, **common)
    return root, data, result


def test_api_writes_cache_manifest_and_init_weights(pipeline):
    from detkit.artifacts import sha256_file, sha256_strings

    root, data, result = pipeline
    assert result.num_images == 5 and result.dtype == "float32"
    assert result.init_weights == root / "b32.init.weights.h5"
    manifest = json.loads(result.manifest.read_text())
    cache_info = manifest["cache"]
    assert cache_info["weights_sha256"] == sha256_file(result.init_weights)
    assert cache_info["images_sha256"] == sha256_strings(manifest["image_paths"])
    assert cache_info["model"] == "yolov3-tiny" and cache_info["split"] == "all-but-heads"
    assert manifest["init_weights"] == "b32.init.weights.h5"
    assert manifest["input_size"] == 64 and manifest["class_names"] == ["a", "b"]
    # The init weights carry a weights manifest, as trained weights do.
    from detkit.models.recorded import read_recorded

    recorded = read_recorded(result.init_weights)
    assert recorded.values == {"model": "yolov3-tiny", "width": 0.125, "backbone":
                               "darknet-tiny", "input_size": 64}
    assert recorded.class_names == ["a", "b"]
    np.testing.assert_array_equal(recorded.anchors, np.asarray(manifest["anchors"]))
    init_manifest = json.loads((root / "b32.init.weights.h5.manifest.json").read_text())
    assert init_manifest["bytes"] == result.init_weights.stat().st_size
    assert init_manifest["command"] == "cache-bottlenecks"
    with BottleneckCache(result.path) as cache:
        assert cache.settings["weights_sha256"] == cache_info["weights_sha256"]
        assert cache.shapes == [tuple(s) for s in cache_info["shapes"]]


def _model_from_cache_weights(root):
    from detkit.bottleneck_training import cache_weights
    from detkit.models import build_model
    from detkit.models.weights import load_weights_by_name

    model = build_model("yolov3-tiny", 2, width=0.125, input_size=64)
    load_weights_by_name(model, cache_weights(root / "b32.h5", None), strict=True)
    return model


def test_heads_on_cached_features_equal_heads_on_images(pipeline):
    """The cache is exact: heads(cached features) == model(letterboxed image)."""
    from detkit.bottleneck_training import split_model
    from detkit.data.dataset import load_dataset
    from detkit.data.loader import DetectionBatches

    root, data, result = pipeline
    model = _model_from_cache_weights(root)
    dataset = load_dataset(data, classes=root / "classes.txt")
    images, _ = DetectionBatches(dataset.records, 64, 5, augment=False, shuffle=False)[0]
    want = model(images, training=False)
    trainable = split_model(model, "all-but-heads").trainable
    with BottleneckCache(result.path) as cache:
        got = trainable(cache.read([0, 1, 2, 3, 4]), training=False)
    for x, y in zip(got, want):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-4)


def test_float16_cache_heads_close_to_images(tmp_path, pipeline):
    from detkit.bottleneck_training import split_model

    root, data, _ = pipeline
    out = tmp_path / "b16.h5"
    init = root / "b32.init.weights.h5"
    result = cache_features(data, out=out, model="yolov3-tiny", width=0.125,
                               weights=init, classes=root / "classes.txt", input_size=64)
    assert result.init_weights is None and result.dtype == "float16"
    model = _model_from_cache_weights(root)
    trainable = split_model(model, "all-but-heads").trainable
    with BottleneckCache(out) as c16, BottleneckCache(root / "b32.h5") as c32:
        assert c16.settings["weights_sha256"] == c32.settings["weights_sha256"]
        assert c16.settings["images_sha256"] == c32.settings["images_sha256"]
        a = trainable(c16.read(range(5)), training=False)
        b = trainable(c32.read(range(5)), training=False)
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(x, y, atol=2e-3 * (1 + np.abs(y).max()))


def _open(root, data, **changes):
    from detkit.bottleneck_training import cache_weights, open_cache
    from detkit.data.dataset import load_dataset
    from detkit.labels import LabelsFile

    dataset = load_dataset(data, classes=root / "classes.txt")
    kwargs = dict(model="yolov3-tiny", width=0.125, input_size=64,
                  weights=cache_weights(root / "b32.h5", None),
                  image_paths=[r.image_path for r in dataset.records],
                  labels=LabelsFile(root / "labels.npz"))
    kwargs.update(changes)
    return open_cache(root / "b32.h5", **kwargs), dataset


def test_training_heads_on_cache_updates_only_the_heads(pipeline):
    import keras

    from detkit.bottleneck_training import (FullModelValidation, LabelTargets,
                                            split_model, train_heads_on_cache)
    from detkit.data.loader import DetectionBatches
    from detkit.labels import LabelsFile
    from detkit.losses import YoloV3Loss
    from detkit.training.model import YoloTrainingModel
    from detkit.training.targets import YoloTrainingTargets

    root, data, result = pipeline
    model = _model_from_cache_weights(root)
    labels = LabelsFile(root / "labels.npz")
    cache, dataset = _open(root, data, labels=labels)
    before = {w.path: np.array(w.numpy()) for w in model.weights}
    loss = YoloV3Loss(labels.settings["anchors"], 2, 64)
    val = DetectionBatches(dataset.records, 64, 5, augment=False, shuffle=False,
                           encoder=YoloTrainingTargets(labels.settings["anchors"], 64, 2))
    evaluator = YoloTrainingModel(model, loss)
    evaluator.compile()
    history = train_heads_on_cache(model, cache, labels, loss=loss,
                                   optimizer=keras.optimizers.Adam(1e-2), epochs=2,
                                   batch_size=2, callbacks=[FullModelValidation(
                                       evaluator, val)], verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert len(history.history["val_loss"]) == 2
    after = {w.path: np.array(w.numpy()) for w in model.weights}
    moved = sorted(p for p in before if not np.array_equal(before[p], after[p]))
    assert moved and all(p.startswith("head_out_") for p in moved)

    # The loss on the cache equals the detector's loss on the letterboxed images.
    targets = LabelTargets(labels)
    rows = np.arange(5)
    y_true = targets(rows)
    trainable = split_model(model, "all-but-heads").trainable
    from_cache = float(loss(y_true, list(trainable(cache.read(rows), training=False))))
    images, _ = val[0]
    from_images = float(loss(y_true, list(model(images, training=False))))
    np.testing.assert_allclose(from_cache, from_images, rtol=1e-4)
    # ... and the last val_loss logged is the full model's loss on those images.
    np.testing.assert_allclose(history.history["val_loss"][-1],
                               evaluator.evaluate(val, verbose=0, return_dict=True)["loss"],
                               rtol=1e-5)
    cache.close()


def test_open_cache_refuses_other_weights_images_and_labels(pipeline, tmp_path,
                                                            monkeypatch):
    from detkit.bottleneck_training import cache_weights

    root, data, result = pipeline
    cache, dataset = _open(root, data)
    cache.close()
    other = tmp_path / "other.weights.h5"
    other.write_bytes(cache_weights(root / "b32.h5", None).read_bytes() + b"x")
    with pytest.raises(ArtifactMismatchError, match="weights_sha256"):
        _open(root, data, weights=other)
    with pytest.raises(ArtifactMismatchError, match=r"width: .* has 0.125, .* has 0.25"):
        _open(root, data, width=0.25)
    with pytest.raises(ArtifactMismatchError, match="input_size"):
        _open(root, data, input_size=96)
    paths = [r.image_path for r in dataset.records]
    with pytest.raises(ArtifactMismatchError, match=r"first difference: image 0"):
        _open(root, data, image_paths=["elsewhere.png"] + paths[1:])
    # The same files spelled from another folder are the cache's; their bytes are checked
    # where they are now (a copy with other bytes is stale).
    _open(root, data, image_paths=[os.path.relpath(p) for p in paths])[0].close()
    monkeypatch.chdir(tmp_path)
    tails = [Path(*Path(p).parts[-2:]) for p in paths]
    for path, tail in zip(paths, tails):
        tail.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tail)
    _open(root, data, image_paths=[str(t) for t in tails])[0].close()
    tails[1].write_bytes(tails[1].read_bytes() + b"\0")
    with pytest.raises(ArtifactMismatchError, match=r"stale: image 1 \("):
        _open(root, data, image_paths=[str(t) for t in tails])
    with pytest.raises(ArtifactError, match="no --weights given"):
        cache_weights(tmp_path / "nothing.h5", None)
    assert cache_weights(tmp_path / "nothing.h5", other) == other


def test_label_targets_boxes_match_labels_rows(pipeline):
    from detkit.bottleneck_training import LabelTargets
    from detkit.labels import LabelsFile

    root, _, _ = pipeline
    labels = LabelsFile(root / "labels.npz")
    targets = LabelTargets(labels, max_boxes=4)
    y = targets([3, 0])
    assert y["boxes"].shape == (2, 4, 4)
    for slot, index in enumerate([3, 0]):
        xywh = labels.image_rows(index)["xywh"]
        # slow reference: every distinct labelled box, as xyxy, in sorted order
        ref = sorted({(x - w / 2, y0 - h / 2, x + w / 2, y0 + h / 2)
                      for x, y0, w, h in xywh.tolist()})
        got = [tuple(b) for b in y["boxes"][slot].tolist() if any(b)]
        np.testing.assert_allclose(sorted(got), ref, rtol=1e-6)
    for scale, dense in enumerate(labels.dense_batch([3, 0])):
        np.testing.assert_array_equal(y["targets"][scale], dense)


# --------------------------------------------------------------------------- CLI

def test_cli_runs_reports_size_and_rejects_bad_values(tmp_path, pipeline):
    from detkit.cli import app

    root, data, _ = pipeline
    runner = CliRunner()
    out = tmp_path / "cli.h5"
    args = ["cache-bottlenecks", str(data), "--model", "yolov3-tiny", "--width", "0.125",
            "--classes", str(root / "classes.txt"), "--input-size", "64", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "MB per image" in result.output and "images: 5" in result.output
    assert out.exists() and (tmp_path / "cli.init.weights.h5").exists()

    bad = runner.invoke(app, args[:-1] + [str(tmp_path / "x.h5"), "--dtype", "float64"])
    assert bad.exit_code == 2 and "--dtype" in bad.output
    bad = runner.invoke(app, args[:-1] + [str(tmp_path / "x.h5"), "--split", "neck"])
    assert bad.exit_code == 2 and "--split" in bad.output
    bad = runner.invoke(app, args[:-1] + [str(tmp_path / "x.h5"), "--input-size", "50"])
    assert bad.exit_code == 2 and "multiple of 32" in bad.output
    config = tmp_path / "c.yaml"
    config.write_text("dtype: float32\nsplitt: body\n")
    bad = runner.invoke(app, args + ["--config", str(config)])
    assert bad.exit_code == 2 and "unknown key 'splitt'" in bad.output
    missing = runner.invoke(app, ["cache-bottlenecks", str(tmp_path / "nope.txt"),
                                  "--out", str(tmp_path / "x.h5")])
    assert missing.exit_code == 1 and "not found" in missing.output
    assert not (tmp_path / "x.h5").exists()


def test_cli_interrupted_run_then_resume(tmp_path, pipeline, monkeypatch):
    import detkit.bottleneck_training as bt
    from detkit.cli import app

    root, data, _ = pipeline
    out = tmp_path / "r.h5"
    weights = root / "b32.init.weights.h5"
    args = ["cache-bottlenecks", str(data), "--model", "yolov3-tiny", "--width", "0.125",
            "--classes", str(root / "classes.txt"), "--input-size", "64", "--out", str(out),
            "--weights", str(weights), "--batch-size", "2", "--dtype", "float32"]
    real = bt.frozen_features
    calls = []

    def flaky(parts, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(parts, images)

    monkeypatch.setattr(bt, "frozen_features", flaky)
    runner = CliRunner()
    interrupted = runner.invoke(app, args)
    assert interrupted.exit_code == 130 and "interrupted" in interrupted.output
    assert not out.exists() and partial_path(out).exists()

    monkeypatch.setattr(bt, "frozen_features", real)
    resumed = runner.invoke(app, args + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "3 computed, 2 resumed" in resumed.output
    with BottleneckCache(out) as a, BottleneckCache(root / "b32.h5") as b:
        assert a.settings["weights_sha256"] == b.settings["weights_sha256"]
        for x, y in zip(a.read(range(5)), b.read(range(5))):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def _ctrl_c_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th forward pass of cache-bottlenecks raise KeyboardInterrupt."""
    import detkit.bottleneck_training as bt

    real, calls = bt.frozen_features, []

    def flaky(parts, images):
        calls.append(len(images))
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(parts, images)

    monkeypatch.setattr(bt, "frozen_features", flaky)


def _cache_args(root, data, out, *extra):
    return ["cache-bottlenecks", str(data), "--model", "yolov3-tiny", "--width", "0.125",
            "--classes", str(root / "classes.txt"), "--input-size", "64", "--out", str(out),
            "--batch-size", "2", "--dtype", "float32", "--seed", "5", *extra]


def test_cli_ctrl_c_names_the_partial_cache_and_resume(tmp_path, pipeline, monkeypatch):
    """Ctrl-C: one line naming the partial cache, the init weights --resume needs, and
    --resume (exit 130); the resumed cache equals an uninterrupted one."""
    from detkit.cli import app

    root, data, _ = pipeline
    out = tmp_path / "r.h5"
    init = tmp_path / "r.init.weights.h5"
    _ctrl_c_at(monkeypatch, 3)
    result = CliRunner().invoke(app, _cache_args(root, data, out))
    assert result.exit_code == 130, result.output
    message = (f"interrupted: {partial_path(out)} keeps 4 of 5 images ({init}, which "
               f"--resume needs, is kept too); the same command with --resume continues it")
    assert message in " ".join(result.output.split()), result.output
    assert partial_path(out).exists() and init.exists() and not out.exists()

    monkeypatch.undo()
    resumed = CliRunner().invoke(app, _cache_args(root, data, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "1 computed, 4 resumed" in resumed.output
    with BottleneckCache(out) as a, BottleneckCache(root / "b32.h5") as b:
        for x, y in zip(a.read(range(5)), b.read(range(5))):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_cli_ctrl_c_before_the_first_batch_leaves_no_init_weights(tmp_path, pipeline,
                                                                   monkeypatch):
    """Nothing cached yet: nothing to resume, so the init weights go too."""
    from detkit.cli import app

    root, data, _ = pipeline
    out = tmp_path / "r.h5"
    _ctrl_c_at(monkeypatch, 1)
    result = CliRunner().invoke(app, _cache_args(root, data, out))
    assert result.exit_code == 130, result.output
    assert "interrupted: no batch finished: nothing of this cache is kept" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_failing_run_leaves_no_init_weights(tmp_path, pipeline, monkeypatch):
    """A run that fails before any batch is kept (features beyond float16) removes the
    init weights it wrote and their manifest: exit 2, one line, no file left."""
    import detkit.bottleneck_training as bt
    from detkit.cli import app

    root, data, _ = pipeline
    real = bt.frozen_features
    monkeypatch.setattr(bt, "frozen_features",
                        lambda parts, images: [f * 1e9 for f in real(parts, images)])
    args = [a if a != "float32" else "float16" for a in _cache_args(root, data,
                                                                     tmp_path / "f.h5")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "beyond the range of float16" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_new_run_over_a_partial_cache_is_refused_unless_exist_ok(tmp_path, pipeline,
                                                                     monkeypatch):
    """Without --resume an unfinished cache is never dropped silently: exit 2 naming it
    and both flags, the partial file untouched; --exist-ok starts over with a note."""
    from detkit.cli import app

    root, data, _ = pipeline
    out = tmp_path / "r.h5"
    _ctrl_c_at(monkeypatch, 2)
    assert CliRunner().invoke(app, _cache_args(root, data, out)).exit_code == 130
    monkeypatch.undo()
    before = partial_path(out).read_bytes()

    refused = CliRunner().invoke(app, _cache_args(root, data, out))
    assert refused.exit_code == 2, refused.output
    assert (f"error: --out {out} has the unfinished cache of an interrupted run, "
            f"{partial_path(out)} (2 of 5 images): pass --resume to continue it, --exist-ok "
            f"to replace it, or choose another --out") in " ".join(refused.output.split())
    assert partial_path(out).read_bytes() == before and not out.exists()

    replaced = CliRunner().invoke(app, _cache_args(root, data, out, "--exist-ok"))
    assert replaced.exit_code == 0, replaced.output
    assert "5 computed" in replaced.output and "resumed" not in replaced.output
    assert (f"--exist-ok: removed the unfinished cache {partial_path(out)} (2 of 5 "
            f"images); starting over") in " ".join(replaced.output.split())
    assert out.exists() and not partial_path(out).exists()


def test_cached_trainer_fits_through_the_train_stage_loop(pipeline, tmp_path):
    """The seam the train stage uses: fit_network on cached batches writes whole detectors."""
    import keras

    from detkit.bottleneck_training import (CachedFeaturesTrainingModel,
                                            FullModelValidation,
                                            cached_batches)
    from detkit.data.loader import DetectionBatches
    from detkit.labels import LabelsFile
    from detkit.losses import YoloV3Loss
    from detkit.models import build_model
    from detkit.models.freeze import freeze
    from detkit.models.weights import load_weights_by_name
    from detkit.training.fit import fit_network
    from detkit.training.model import YoloTrainingModel
    from detkit.training.targets import YoloTrainingTargets

    root, data, result = pipeline
    detector = _model_from_cache_weights(root)
    cache, dataset = _open(root, data)
    labels = LabelsFile(root / "labels.npz")
    loss = YoloV3Loss(labels.settings["anchors"], 2, 64)
    freeze(detector, "all-but-heads")
    trainer = CachedFeaturesTrainingModel(detector, "all-but-heads", loss)
    assert trainer.network is detector
    assert len(trainer.weights) == len(detector.weights)
    assert len(trainer.losses) == len(detector.losses)
    assert {v.path.split("/")[0] for v in trainer.trainable_variables} == {
        "head_out_0", "head_out_1"}
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    evaluator = YoloTrainingModel(detector, loss)
    evaluator.compile()
    val = DetectionBatches(dataset.records, 64, 5, augment=False,
                           encoder=YoloTrainingTargets(labels.settings["anchors"], 64, 2))
    outcome = fit_network(trainer, cached_batches(cache, labels, 2), run_dir=tmp_path,
                          epochs=1, monitor="val_loss",
                          schedule_callbacks=[FullModelValidation(evaluator, val)])
    assert outcome["checkpoint"].best_epoch == 1
    fresh = build_model("yolov3-tiny", 2, width=0.125, input_size=64)
    report = load_weights_by_name(fresh, tmp_path / "best.weights.h5", strict=True)
    assert report.complete
    for a, b in zip(fresh.weights, detector.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert "val_loss" in (tmp_path / "history.csv").read_text()
    cache.close()


def cache_features(data, **options):
    """``detkit cache-bottlenecks`` through its library entry point."""
    from detkit.commands import cache_bottlenecks

    return cache_bottlenecks.run(cache_bottlenecks.Options(data=data, **options))
