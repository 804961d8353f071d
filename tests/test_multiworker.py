"""Multi-worker training with real processes: two workers on localhost, TensorFlow
(``TF_CONFIG``) and JAX (``DETKIT_COORDINATOR``, gloo collectives on CPU).

Both workers must exit 0, only the chief's run directory holds weights (the other
worker's temporary directory is gone), and the first epoch's loss equals that of one
process training on the same global batches (no augmentation).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from detkit.data.synth import make_synth_dataset

SIZE = 64
#: Seconds a worker may take (TensorFlow start-up twice on a loaded 2-core machine).
TIMEOUT_S = 420
TRAIN_ARGS = ["--model", "yolov3-tiny", "--width", "0.0625", "--input-size", str(SIZE),
              "--epochs", "1", "--batch-size", "4", "--freeze", "none", "--no-augment",
              "--seed", "3", "--lr", "1e-3",
              # full global batches only: a multi-worker epoch leaves out a short last one
              "--steps-per-epoch", "3"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _env(tmp: Path, backend: str = "tensorflow", **extra: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": backend,
           "TMPDIR": str(tmp), "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    for name in ("TF_CONFIG", "DETKIT_COORDINATOR", "DETKIT_NUM_PROCESSES",
                 "DETKIT_PROCESS_ID"):
        env.pop(name, None)
    env.update(extra)
    return env


def _train(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "detkit", "train", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _first_loss(run_dir: Path) -> float:
    with open(run_dir / "history.csv", newline="") as handle:
        return float(next(csv.DictReader(handle))["loss"])


@pytest.mark.slow
def test_two_workers_match_one_process(tmp_path):
    data = tmp_path / "data"
    make_synth_dataset(data, images=20, size=SIZE, seed=5, val_fraction=0.2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    single = _train([str(data / "train.txt"), *TRAIN_ARGS, "--out",
                     str(tmp_path / "single")], _env(scratch))

    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = [_train([str(data / "train.txt"), *TRAIN_ARGS, "--strategy", "multi-worker",
                       "--out", str(tmp_path / "multi")],
                      _env(scratch, TF_CONFIG=json.dumps(
                          {"cluster": cluster, "task": {"type": "worker", "index": i}})))
               for i in range(2)]
    _check_runs(tmp_path, scratch, single, workers)


def _check_runs(tmp_path: Path, scratch: Path, single: subprocess.Popen,
                workers: list[subprocess.Popen]) -> None:
    """Both workers and the single process exit 0, only the chief wrote weights (in
    ``multi``; the other worker's scratch directory is gone), and the first epoch's
    losses agree."""
    for process in (single, *workers):
        try:
            output, _ = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in (single, *workers):
                other.kill()
            pytest.fail("a training process did not finish in time")
        assert process.returncode == 0, output[-3000:]

    assert (tmp_path / "multi" / "last.weights.h5").is_file()
    assert not list(scratch.glob("detkit-worker-*")), "the worker's scratch dir is left"
    single_loss, multi_loss = _first_loss(tmp_path / "single"), _first_loss(tmp_path / "multi")
    assert multi_loss == pytest.approx(single_loss, rel=1e-4)


@pytest.mark.slow
def test_two_jax_processes_match_one_process(tmp_path):
    pytest.importorskip("jax")
    data = tmp_path / "data"
    make_synth_dataset(data, images=20, size=SIZE, seed=5, val_fraction=0.2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # XLA's CPU backend unoptimized (the same in all three): a third less compile time.
    fast_compile = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    single = _train([str(data / "train.txt"), *TRAIN_ARGS, "--out",
                     str(tmp_path / "single")], _env(scratch, "jax", **fast_compile))
    coordinator = f"localhost:{_free_ports(1)[0]}"
    workers = [_train([str(data / "train.txt"), *TRAIN_ARGS, "--strategy", "multi-worker",
                       "--out", str(tmp_path / "multi")],
                      _env(scratch, "jax", DETKIT_COORDINATOR=coordinator,
                           DETKIT_NUM_PROCESSES="2", DETKIT_PROCESS_ID=str(i),
                           **fast_compile))
               for i in range(2)]
    _check_runs(tmp_path, scratch, single, workers)


def test_chief_is_worker_zero_or_the_chief_task(monkeypatch):
    from detkit.errors import UsageError
    from detkit.training.distributed import is_chief, replica_rows

    cluster = {"worker": ["a:1", "b:2"]}
    for index, chief in ((0, True), (1, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert is_chief() is chief
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {**cluster, "chief": ["c:3"]}, "task": {"type": "worker", "index": 0}}))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UsageError, match="TF_CONFIG must be JSON"):
        is_chief()
    assert replica_rows(8, 2, 1) == (4, 8)
    with pytest.raises(UsageError, match="multiple of the 2 replicas"):
        replica_rows(5, 2, 0)


def test_rows_of_a_batch_are_its_slices(tmp_path):
    import numpy as np

    from detkit.data.dataset import load_dataset
    from detkit.data.loader import DetectionBatches

    make_synth_dataset(tmp_path / "d", images=10, size=SIZE, seed=1)
    records = load_dataset(tmp_path / "d" / "train.txt").records
    loader = DetectionBatches(records, SIZE, 4, augment=True, shuffle=True, seed=2)
    images, targets = loader[1]
    part_images, part_targets = loader.rows(1, 2, 4)
    np.testing.assert_array_equal(part_images, images[2:4])
    np.testing.assert_array_equal(part_targets["boxes"], targets["boxes"][2:4])
    np.testing.assert_array_equal(part_targets["classes"], targets["classes"][2:4])


def test_jax_processes_feed_their_rows_of_every_global_batch(tmp_path):
    import keras
    import numpy as np

    from detkit.data.dataset import load_dataset
    from detkit.data.loader import DetectionBatches
    from detkit.errors import UsageError
    from detkit.training.distributed import distributed_batches, process_batches

    make_synth_dataset(tmp_path / "d", images=10, size=SIZE, seed=1)
    records = load_dataset(tmp_path / "d" / "train.txt").records
    loader = DetectionBatches(records, SIZE, 4, augment=True, shuffle=True, seed=2,
                              workers=2)
    parts = [process_batches(loader, 2, 4, process=p, count=2) for p in range(2)]
    assert [len(part) for part in parts] == [2, 2]  # the short last batch is left out
    assert parts[0].workers == 2
    for batch in range(2):
        images, targets = loader[batch]
        joined = [np.concatenate(arrays) for arrays in zip(
            *[(part[batch][0], part[batch][1]["boxes"]) for part in parts])]
        np.testing.assert_array_equal(joined[0], images)
        np.testing.assert_array_equal(joined[1], targets["boxes"])
    with pytest.raises(IndexError):
        parts[0][2]
    with pytest.raises(UsageError, match="multiple of the 3"):
        process_batches(loader, 2, 4, process=0, count=3)
    # A keras.distribution (JAX) gets the process's rows, not a tf.distribute dataset;
    # one process here: all the rows.
    shard = distributed_batches(keras.distribution.DataParallel(
        devices=keras.distribution.list_devices()[:1]), loader, 2, 4)
    np.testing.assert_array_equal(shard[1][0], loader[1][0])
