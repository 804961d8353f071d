"""Shared test setup: quiet TensorFlow, default backend, small shared fixtures."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


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
