"""``detkit synth OUT``: write the synthetic shapes dataset (see :mod:`detkit.data.synth`).

Writes ``OUT/images/``, ``train.txt``, ``val.txt``, ``classes.txt``, ``train.json`` and
``val.json`` (COCO ground truth), and ``OUT/dataset.manifest.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from detkit.artifacts import write_manifest
from detkit.commands.groups import SeedOptions
from detkit.options import argument, as_config, option
from detkit.progress import SILENT, Progress

if TYPE_CHECKING:
    from detkit.data.synth import SynthDataset

COMMAND = "synth"
#: The dataset's manifest is ``OUT/dataset.manifest.json``.
MANIFEST_NAME = "dataset"
#: The options that are :func:`detkit.data.synth.make_synth_dataset`'s keyword arguments.
SETTINGS = ("images", "size", "classes", "seed", "val_fraction", "image_format",
            "max_objects", "min_size", "max_size")


@dataclasses.dataclass(kw_only=True)
class Options(SeedOptions):
    """The options of ``synth``."""

    out: Path = argument("Output folder of the dataset.", role="output", folder=True)
    images: int = option(200, "Number of images.")
    size: int = option(256, "Image side in pixels.")
    classes: int = option(4, "Number of shape classes (1-6: circle, rectangle, triangle, "
                          "cross, star, ring).")
    val_fraction: float = option(0.2, "Share of images in the validation split.")
    image_format: str = option("jpg", "jpg (quality 90) or png.")
    max_objects: int = option(6, "Most objects in one image.")
    min_size: float = option(0.04, "Smallest object side, as a fraction of the image side.")
    max_size: float = option(0.6, "Largest object side, as a fraction of the image side.")


def run(opts: Options, progress: Progress = SILENT) -> SynthDataset:
    """Write a synthetic dataset to ``opts.out`` and its manifest; return what was written.

    The values are checked by :func:`~detkit.data.synth.make_synth_dataset` (its errors
    name the flags), the one check library callers get too.

    Raises:
        UsageError: an option value out of range, or ``opts.out`` is a file.
        DataError: the folder cannot be written.
    """
    from detkit.data.synth import make_synth_dataset  # OpenCV: off the --help path

    del progress  # make_synth_dataset reports none (a few hundred images take seconds)
    settings = {key: getattr(opts, key) for key in SETTINGS}
    result = make_synth_dataset(opts.out, **settings)
    write_manifest(Path(opts.out) / MANIFEST_NAME, command=COMMAND, config=as_config(opts),
                   seed=opts.seed,
                   extra={"class_names": result.class_names, "n_train": result.n_train,
                          "n_val": result.n_val, "n_empty": result.n_empty,
                          "n_boxes": result.n_boxes, "class_counts": result.class_counts})
    return result
