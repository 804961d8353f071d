"""Shared test setup: quiet TensorFlow, default backend, small shared fixtures."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

#: Test files that take minutes (about their summed seconds on the 2-core CPU), longest
#: first. They are collected before all others and `make test` keeps that order
#: (``--no-loadscope-reorder``: xdist would otherwise send the files with the most tests
#: first and a one-test, three-minute file last), so both workers end together.
LONGEST_FILES = ("test_families_e2e.py", "test_export.py", "test_demo_smoke.py",
                 "test_distill.py", "test_multiworker.py", "test_backbones.py",
                 "test_train.py", "test_strategy.py", "test_monitor.py",
                 "test_train_bottlenecks.py", "test_darknet.py", "test_tensorboard.py")


def pytest_collection_modifyitems(session, config, items):
    """Longest files first (:data:`LONGEST_FILES`), the others after in their order."""
    rank = {name: position for position, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def synth_with_anchors(tmp_path_factory):
    """Factory: ``make(anchors)`` -> folder of a 12-image, 64 px, 2-class synth dataset
    (train.txt, val.txt, val.json, ...) with ``anchors`` written to anchors.txt."""
    from detkit.anchors import save_anchors
    from detkit.data.synth import make_synth_dataset

    def make(anchors):
        root = tmp_path_factory.mktemp("synth")
        make_synth_dataset(root, images=12, size=64, classes=2, seed=0, val_fraction=0.25)
        save_anchors(root / "anchors.txt", anchors)
        return root

    return make
