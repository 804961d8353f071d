"""``detkit synth``: write the synthetic shapes dataset (see :mod:`detkit.data.synth`)."""

from __future__ import annotations

import os
from pathlib import Path

from detkit.artifacts import write_manifest
from detkit.data.synth import SynthDataset, make_synth_dataset

#: The dataset's manifest is ``OUT/dataset.manifest.json``.
MANIFEST_NAME = "dataset"


def synth(out: str | os.PathLike, *, images: int = 200, size: int = 256, classes: int = 4,
          seed: int = 0, val_fraction: float = 0.2, image_format: str = "jpg",
          max_objects: int = 6, min_size: float = 0.04, max_size: float = 0.6
          ) -> SynthDataset:
    """Write a synthetic dataset to ``out`` and its manifest; return what was written.

    Raises:
        UsageError: an option value out of range.
    """
    settings = dict(images=images, size=size, classes=classes, seed=seed,
                    val_fraction=val_fraction, image_format=image_format,
                    max_objects=max_objects, min_size=min_size, max_size=max_size)
    result = make_synth_dataset(out, **settings)
    write_manifest(Path(out) / MANIFEST_NAME, command="synth",
                   config={"out": str(out), **settings}, seed=seed,
                   extra={"class_names": result.class_names, "n_train": result.n_train,
                          "n_val": result.n_val, "n_empty": result.n_empty,
                          "n_boxes": result.n_boxes, "class_counts": result.class_counts})
    return result
