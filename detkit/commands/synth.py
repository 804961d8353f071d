"""``detkit synth OUT``: write the synthetic shapes dataset (see :mod:`detkit.data.synth`).

Writes ``OUT/images/``, ``train.txt``, ``val.txt``, ``classes.txt``, ``train.json`` and
``val.json`` (COCO ground truth), and ``OUT/dataset.manifest.json``.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from detkit.artifacts import check_writable, write_manifest
from detkit.commands.groups import SeedOptions
from detkit.errors import ArtifactError, UsageError
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
    exist_ok: bool = option(False, "Replace the synthetic dataset OUT already holds (without "
                            "it, one is refused; a folder of other files always is).",
                            toggle=True)


def run(opts: Options, progress: Progress = SILENT) -> SynthDataset:
    """Write a synthetic dataset to ``opts.out`` and its manifest; return what was written.

    The values are checked by :func:`~detkit.data.synth.make_synth_dataset` (its errors
    name the flags), the one check library callers get too.

    Raises:
        UsageError: an option value out of range, ``opts.out`` is a file, a folder of
            other files, or a synthetic dataset without ``exist_ok``.
        ArtifactError: ``opts.out`` or its manifest cannot be written.
        DataError: the dataset's files cannot be written.
    """
    from detkit.data.synth import (check_options,  # OpenCV: off the --help path
                                   make_synth_dataset)

    del progress  # make_synth_dataset reports none (a few hundred images take seconds)
    settings = {key: getattr(opts, key) for key in SETTINGS}
    check_options(**settings)
    out = Path(opts.out)
    check_writable(out, flag="OUT", folder=True)
    try:
        make_room(out, exist_ok=opts.exist_ok)
        out.mkdir(parents=True, exist_ok=True)
        # First without the counts: an interrupted run leaves a folder known as synth's.
        write_manifest(out / MANIFEST_NAME, command=COMMAND, config=as_config(opts),
                       seed=opts.seed)
        result = make_synth_dataset(out, **settings)
        write_manifest(out / MANIFEST_NAME, command=COMMAND, config=as_config(opts),
                       seed=opts.seed,
                       extra={"class_names": result.class_names, "n_train": result.n_train,
                              "n_val": result.n_val, "n_empty": result.n_empty,
                              "n_boxes": result.n_boxes,
                              "class_counts": result.class_counts})
    except OSError as err:
        where = f" ({err.filename})" if err.filename and Path(err.filename) != out else ""
        raise ArtifactError(f"cannot write OUT {out}: {err.strerror or err}{where}"
                            ) from None
    return result


def make_room(out: Path, exist_ok: bool) -> None:
    """Make ``out`` ready for a new dataset: nothing is written into a folder of other
    files, and a previous synthetic dataset is replaced (its images removed, so none
    of a larger one is left behind) only with ``exist_ok``. Dotfiles (``.gitkeep``,
    ``.DS_Store``) do not count as files and are kept.

    Raises:
        UsageError: ``out`` holds files but no synth manifest, or a synthetic dataset and
            ``exist_ok`` is not given.
    """
    from detkit.artifacts import manifest_path, read_manifest
    from detkit.data.synth import DATASET_FILES, IMAGES_DIR

    if not out.is_dir() or all(p.name.startswith(".") for p in out.iterdir()):
        return
    manifest = manifest_path(out / MANIFEST_NAME)
    if not manifest.is_file() or read_manifest(out / MANIFEST_NAME).get("command") != COMMAND:
        raise UsageError(f"{out} is a folder of other files (it has no {manifest.name} of "
                         f"synth), which the dataset would overwrite; choose a new or "
                         f"empty folder")
    if not exist_ok:
        raise UsageError(f"{out} already holds a synthetic dataset: pass --exist-ok to "
                         f"replace it, or choose another folder")
    shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
    for name in DATASET_FILES:
        (out / name).unlink(missing_ok=True)
    manifest.unlink()
