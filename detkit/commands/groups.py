"""Option groups shared by several commands, each declared once.

A command's ``Options`` inherits the groups it takes (dataclass inheritance flattens
them into one set of flags) and adds its own fields.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from detkit.anchors import fitted_input_size
from detkit.artifacts import DetkitWarning, Note, check_spares_files
from detkit.choices import BACKBONE_WEIGHTS_WORDS, BACKBONES
from detkit.errors import DetkitError
from detkit.families import MODEL_NAMES
from detkit.options import argument, given_field, is_given, option

if TYPE_CHECKING:
    from detkit.data.dataset import Dataset

#: The dataset layouts DATA may name (help text).
DATA_LAYOUTS = ("keras-yolo3 lines file, COCO json, CSV box table, VOC folder (or its "
                "ImageSets/Main/ split list, or one .xml), YOLO txt folder (or its "
                "images/NAME split, or an Ultralytics image list), or an Ultralytics "
                "data.yaml")
#: Help of the DATA argument of every command that reads a dataset to train or fit on.
DATA_HELP = f"Dataset: {DATA_LAYOUTS} (its train split)."
#: Help of the DATA argument of a command that reads ground truth (eval-map).
GROUND_TRUTH_HELP = f"Ground truth: {DATA_LAYOUTS} (its val split)."
#: Network input side every command defaults to (pixels).
DEFAULT_INPUT_SIZE = 416


@dataclasses.dataclass(kw_only=True)
class DatasetOptions:
    """A dataset and how to read it."""

    data: Path = argument(DATA_HELP, role="input")
    format: Optional[str] = option(
        None, "Dataset format: auto (from its shape on disk, the default), yolo3 (a "
              "keras-yolo3 lines file), coco, csv, voc or yolo (a YOLO/Ultralytics txt "
              "labels folder, split or image list).")
    classes: Optional[Path] = option(
        None, "classes.txt, one name a line (default: from the dataset; where labels are "
              "class indices, YOLO and keras-yolo3 lines, it must agree with the names the "
              "dataset gives them).", role="input")


def load_data(opts: Any, *, crowds: bool = False, **options: Any) -> Dataset:
    """``opts.data`` read as :func:`~detkit.data.dataset.load_dataset` reads it (``options``:
    its keyword arguments beyond format and classes), as training sees it: without COCO
    crowd regions (a note says how many), unless ``crowds``.

    Raises:
        UsageError: an output of ``opts`` is one of the dataset's images, annotation or
            class names files (exit 2, before any work).
        DataError, UsageError: see :func:`~detkit.data.dataset.load_dataset`.
    """
    from detkit.data.dataset import load_dataset

    dataset = load_dataset(opts.data, format=opts.format, classes=opts.classes, **options)
    check_spares_files(opts, dataset.files(), f"a file of the dataset DATA {opts.data}")
    if crowds:
        return dataset
    dataset, note = dataset.for_training()
    if note is not None:
        warnings.warn(Note(note), DetkitWarning, stacklevel=2)
    return dataset


#: --input-size of a command without --weights (doctor, encode-labels).
INPUT_SIZE_OF_ANCHORS_HELP = ("Network input side in pixels, a multiple of 32. Not given: "
                              "the size --anchors was fitted at (its kmeans-anchors "
                              "manifest); else 416.")
#: --anchors of a command without --weights (doctor, encode-labels).
OWN_ANCHORS_HELP = ("Anchors file 'w,h, w,h, ...' in input pixels. Not given: the model's "
                    "own (COCO's for the YOLOs, generated per level for retinanet and rpn).")


@dataclasses.dataclass(kw_only=True)
class InputOptions:
    """The network input side."""

    input_size: int = option(DEFAULT_INPUT_SIZE,
                             "Network input side in pixels, a multiple of 32. Not "
                             "given: the size recorded with --weights (stage 2, predict, "
                             "eval-map, export; not a stage-1 or cache-bottlenecks start), "
                             "a resumed train or distill run's, or distill's teacher's with "
                             "its anchors; else the size --anchors was fitted at (its "
                             "kmeans-anchors manifest); else 416.",
                             integer=True, low=32, multiple=32)
    #: The options set on the command line or in --config (see detkit.options.is_given).
    given: Optional[frozenset[str]] = given_field()


@dataclasses.dataclass(kw_only=True)
class AnchorOptions:
    """An anchors file."""

    anchors: Optional[Path] = option(
        None, "Anchors file 'w,h, w,h, ...' in input pixels. Not given: those recorded "
              "with --weights (stage 2, predict, eval-map, export; not a stage-1 or "
              "cache-bottlenecks start), a resumed train or distill run's, or distill's "
              "teacher's when the student's model takes as many; else the model's own "
              "(COCO's for the YOLOs, generated per level for retinanet and rpn).",
        role="input")


@dataclasses.dataclass(kw_only=True)
class ModelOptions(AnchorOptions, InputOptions):
    """A detector: family, width, anchors and input size."""

    model: str = option("yolov3", f"Architecture: {', '.join(MODEL_NAMES)}. Not given: "
                                  f"the one recorded with --weights (their manifest) or "
                                  f"by a resumed train or distill run, else yolov3.",
                        choices=MODEL_NAMES)
    width: float = option(1.0, "Channel width multiplier. Not given: the one recorded with "
                               "--weights or by a resumed run (as --model), else 1.0.",
                          above=0)
    backbone: Optional[str] = option(
        None, f"Body under the heads: {', '.join(BACKBONES)}. Not given: the one recorded "
              f"with --weights or by a resumed run (as --model), else the model's own: "
              f"darknet53 for yolov3, darknet-tiny for yolov3-tiny, darknet-small for "
              f"retinanet and rpn (yolov2 and yolov2-tiny take none). --width scales the "
              f"Darknet bodies, is mobilenetv2's alpha, and scales only the neck and heads "
              f"of efficientnetb0 and resnet50.", choices=BACKBONES)


@dataclasses.dataclass(kw_only=True)
class BackboneWeightsOptions:
    """Where a new model's body starts (train, distill's student, cache-bottlenecks)."""

    backbone_weights: Optional[str] = option(
        None, "Initial body weights when no --weights are given: imagenet (the "
              "keras.applications download; needs a network), none (random, the "
              "default) or FILE (a .weights.h5 of the backbone, of a detkit body or "
              "model, or the .h5 keras.applications downloads).")

    @property
    def backbone_weights_file(self) -> Optional[Path]:
        """``--backbone-weights`` when it names a file (recorded among the inputs)."""
        value = self.backbone_weights
        return None if value is None or value in BACKBONE_WEIGHTS_WORDS else Path(value)


@dataclasses.dataclass(kw_only=True)
class SeedOptions:
    """The random seed."""

    seed: int = option(0, "Random seed.", integer=True, low=0)


@dataclasses.dataclass(kw_only=True)
class InferenceOptions:
    """Running trained weights over images (predict, eval-map --model)."""

    weights: Optional[Path] = option(None, "Trained model weights (.weights.h5).",
                                     role="input")
    conf: float = option(0.001, "Score threshold (objectness x class probability); keep it "
                         "low for mAP, which needs the whole PR curve.", low=0, high=1)
    batch_size: int = option(8, "Images per forward pass.", integer=True, low=1)


def input_size_of_anchors(opts: Any) -> Any:
    """``opts`` at the input size its ``--anchors`` file was fitted at.

    Anchors are in input pixels, so a file fitted by ``kmeans-anchors --input-size 128``
    only fits a network at 128. When ``--input-size`` is not given it follows the file
    (with a warning saying so); when given at another size, a warning says that the
    anchors do not fit it. Options without both fields pass unchanged, and so do runs
    whose input size is recorded elsewhere (:func:`_size_is_recorded`).
    """
    anchors = getattr(opts, "anchors", None)
    if anchors is None or not hasattr(opts, "input_size"):
        return opts
    if _size_is_recorded(opts):
        return opts          # the size recorded with the weights or the run decides
    fitted = fitted_input_size(anchors)
    if fitted is None or fitted == opts.input_size:
        return opts
    if not is_given(opts, "input_size"):
        warnings.warn(Note(f"input {fitted}: the size {anchors} was fitted at (its "
                           f"manifest); give --input-size to run at another"),
                      DetkitWarning, stacklevel=2)
        return dataclasses.replace(opts, input_size=fitted)
    warnings.warn(f"{anchors} was fitted at input {fitted} (its manifest), this runs at "
                  f"{opts.input_size}: anchors are in input pixels, so refit them with "
                  f"kmeans-anchors --input-size {opts.input_size}", DetkitWarning,
                  stacklevel=2)
    return opts


def _size_is_recorded(opts: Any) -> bool:
    """Whether a record sets the run's input size: a resumed training run's state, or
    ``--weights`` whose manifest the command takes the size from (a trained model's; not
    a stage-1 or cache-bottlenecks start, of which only the architecture is taken)."""
    if getattr(opts, "resume", False) and hasattr(opts, "with_run_options"):
        return True                        # (cache-bottlenecks' resume restores no size)
    recorded_start = getattr(opts, "recorded_start", None)
    if callable(recorded_start):
        try:
            start = recorded_start()
        except DetkitError:                # reported where the command reads it
            return False
        return start is not None and "input_size" in start.values
    return getattr(opts, "weights", None) is not None and not getattr(
        opts, "WEIGHTS_ARE_A_START", False)
