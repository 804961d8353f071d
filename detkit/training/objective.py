"""What a run optimizes: the ground-truth loss (``train``), or more (``distill``).

An :class:`Objective` is made once, before any file is written, from the run's
anchors and classes; it then answers three questions the phases ask: which training
model wraps the detector and its loss, which batches it fits on, and what the
manifests record about it. ``distill`` plugs in a teacher by subclassing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras


class Objective:
    """The plain objective of ``train``: the detection loss alone.

    Attributes:
        command: the command recorded in the manifests.
        settings: extra settings recorded in the manifests and ``state.json`` and
            checked on ``--resume``.
        inputs: extra input files whose sha256 the manifests record.
        notes: warnings worth showing at the end of the run.
    """

    command = "train"

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.inputs: list[Path] = []
        self.notes: list[str] = []

    def training_model(self, detector: keras.Model, loss: Any):
        """The training model around ``detector`` (built inside the strategy's scope)."""
        from detkit.training.model import YoloTrainingModel

        return YoloTrainingModel(detector, loss)

    def train_batches(self, base: keras.utils.PyDataset, model) -> keras.utils.PyDataset:
        """The batches to fit on, given the loader's and the training model."""
        del model
        return base
