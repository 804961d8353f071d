"""``detkit train DATA``: one training stage of a detector -> a run directory.

Writes ``OUT/best.weights.h5``, ``OUT/last.weights.h5``, ``OUT/history.csv`` and
``OUT/manifest.json`` (see :func:`detkit.training.run.run_training`). :class:`Options`
declares every option once and imports no Keras, so building the command line stays
fast; ``distill``'s options extend it.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detkit import choices
from detkit.artifacts import (RUN_MANIFEST, DetkitWarning, Note, check_run_folder,
                              run_files)
from detkit.commands.groups import (BackboneWeightsOptions, DatasetOptions,
                                    ModelOptions, SeedOptions)
from detkit.data.augment_config import AugmentConfig, multi_scale_sides
from detkit.data.dataset import names_split
from detkit.data.records import DEFAULT_MAX_BOXES
from detkit.errors import ArtifactError, UsageError
from detkit.families import get_family
from detkit.models import check_input_size
from detkit.models.recorded import (RecordedSettings, read_recorded,
                                    resolve_options, start_architecture)
from detkit.options import (as_config, check, flag_of, is_given, option,
                            recorded_value, specs)
from detkit.progress import SILENT, Progress

__all__ = ["Options", "run"]

#: Options that only some families read (their loss's or assigner's ``OPTIONS``); one
#: set away from its default for a family that does not read it is refused.
FAMILY_OPTIONS = ("ignore_thresh", "box_loss", "obj_loss", "focal_alpha", "focal_gamma",
                  "label_smoothing", "huber_delta", "box_weight", "obj_weight",
                  "noobj_weight", "coord_weight", "scale_small_boxes", "pos_iou", "neg_iou",
                  "sample_anchors", "positive_fraction", "multi_scale")
#: Options a resumed run does not take from the run's recorded config: its own paths and
#: flags, and what the run's state holds (anchors, weights: the state's are used).
NEW_ON_RESUME = ("data", "out", "resume", "exist_ok", "anchors", "weights",
                 "backbone_weights")
#: Options a resumed run is given another value of without a note: how long and how it
#: runs, not what it learns (--epochs extends the schedule).
CHANGEABLE_ON_RESUME = ("epochs", "eval_every", "plots", "workers", "strategy", "jit",
                        "early_stopping")
#: An option not taken from a resumed run when another that sets it is given.
ALIASES = {"precision": ("mixed_precision",)}
#: Learning rate by stage when not given.
DEFAULT_LR = {1: 1e-3, 2: 1e-4}


def _typed(value: object) -> str:
    """An option's value as typed: ``0.01``, ``0.7 1.3``, ``none``."""
    if isinstance(value, (tuple, list)):
        return " ".join(map(_typed, value))
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass(kw_only=True)
class Options(SeedOptions, BackboneWeightsOptions, ModelOptions, DatasetOptions):
    """Every option of ``detkit train`` (``None``: the stage's default).

    Units are input pixels and epochs; see each field's help.
    """

    stage: int = option(1, "1: train the heads on a frozen pretrained body (lr 1e-3; "
                           "without a pretrained start, the whole model); 2: fine-tune "
                           "everything (lr 1e-4), continuing a stage-1 run's --weights. In "
                           "distill, the student's stage.", choices=(1, 2))
    epochs: int = option(50, "Epochs of the run (in total, counting a resumed run's).",
                         integer=True, low=0)
    batch_size: int = option(16, "Images per (global) batch.", integer=True, low=1)
    weights: Optional[Path] = option(
        None, "Initial weights (*.weights.h5; in distill, the student's), loaded by layer "
              "name. Their manifest's model, width and backbone fill the flags not given "
              "(contradicting ones are refused); in stage 2, which continues stage 1, its "
              "input size and anchors too, and other anchors or class names are refused.",
        role="input")
    val: Optional[Path] = option(None, "Validation dataset; best.weights.h5 then tracks "
                                       "--monitor (val_loss by default).", role="input")
    eval_every: int = option(0, "Every N epochs (and at the last) run the COCO evaluator on "
                                "--val: val_map (AP@[.5:.95]), val_map50, val_fitness in "
                                "history.csv and TensorBoard (0: off).", integer=True, low=0)
    monitor: Optional[str] = option(
        None, "What picks best.weights.h5: val_loss (lower is better), or map, map50, "
              "fitness (0.1 AP50 + 0.9 AP; higher is better, need --eval-every and --val). "
              "Default: fitness with --eval-every, else val_loss (loss without --val).",
        choices=choices.MONITORS)
    plots: bool = option(True, "At the end write results.png (losses, lr, mAP by epoch) "
                               "and, with --val, PR and F1 curves of best.weights.h5 "
                               "(needs matplotlib).", toggle=True)
    out: Path = option(Path("runs/train"), "Run directory.", role="output", folder=True,
                       writes=run_files)
    exist_ok: bool = option(False, "Train a new run into an --out that already holds one, "
                                   "replacing its files (without it, or --resume, an "
                                   "existing run is refused).", toggle=True)
    lr: Optional[float] = option(None, "Peak learning rate (default 1e-3 for stage 1, "
                                       "1e-4 for stage 2).", above=0)
    warmup_epochs: float = option(1.0, "Epochs of linear learning-rate warmup.", low=0)
    schedule: str = option("cosine", "After warmup: cosine decay, or plateau "
                                     "(ReduceLROnPlateau).", choices=choices.SCHEDULES)
    freeze: Optional[str] = option(
        None, "Frozen part: body, all-but-heads or none (default: body for a stage 1 "
              "that starts pretrained, from --weights, --backbone-weights or "
              "--bottlenecks; else none, a random body trains).",
        choices=choices.FREEZE_MODES)
    box_loss: str = option("mse", "Box loss: mse, huber or ciou.",
                           choices=choices.BOX_LOSSES)
    obj_loss: str = option("bce", "Objectness loss: bce or focal.", choices=choices.OBJ_LOSSES)
    ignore_thresh: float = option(0.5, "IoU with a ground-truth box above which a negative "
                                       "prediction's objectness is not penalized.",
                                  above=0, high=1)
    focal_alpha: float = option(0.25, "Focal loss alpha (retinanet classes, yolov3 with "
                                      "--obj-loss focal).", low=0, high=1)
    focal_gamma: float = option(2.0, "Focal loss gamma (retinanet classes, yolov3 with "
                                     "--obj-loss focal).", low=0)
    label_smoothing: float = option(0.0, "Class label smoothing s of retinanet and "
                                         "yolov3(-tiny) (class targets z (1 - s) + s / 2).",
                                    low=0, high=0.99)
    huber_delta: Optional[float] = option(
        None, "Huber delta of the box loss (default: 0.1 retinanet, 1/9 rpn, 1.0 yolov3 "
              "--box-loss huber).", above=0)
    box_weight: Optional[float] = option(
        None, "Weight of the box loss of anchor heads (default: 50 retinanet, 1 rpn).",
        low=0)
    obj_weight: Optional[float] = option(
        None, "Yolov2: weight of the objectness of assigned anchors (default 5, YAD2K).",
        low=0)
    noobj_weight: Optional[float] = option(
        None, "Yolov2: weight of the no-object term (default 1, YAD2K).", low=0)
    coord_weight: Optional[float] = option(
        None, "Yolov2: weight of the xy and wh terms (default 1, YAD2K).", low=0)
    scale_small_boxes: bool = option(
        True, "Yolov2: weigh the xy and wh terms of each box by 2 - w h (its size relative "
              "to the input), as Darknet's region layer does (off: YAD2K's port).",
        toggle=True)
    pos_iou: Optional[float] = option(
        None, "Anchor matching: IoU at or above which an anchor is positive (default: 0.5 "
              "retinanet, 0.7 rpn).", above=0, high=1)
    neg_iou: Optional[float] = option(
        None, "Anchor matching: IoU below which an anchor is negative; between the two it "
              "is ignored (default: 0.4 retinanet, 0.3 rpn).", low=0, high=1)
    sample_anchors: Optional[int] = option(
        None, "Rpn: anchors sampled per image for the loss (default 256).", integer=True,
        low=1)
    positive_fraction: Optional[float] = option(
        None, "Rpn: largest share of positives in the sample (default 0.5).", above=0,
        high=1)
    ema: bool = option(False, "Keep an exponential moving average of the weights "
                              "(checkpoints and validation use it).", toggle=True)
    precision: Optional[str] = option(
        None, "Compute precision: float32, mixed_float16 (loss scaling added) or "
              "mixed_bfloat16 (no loss scaling needed); default float32.",
        choices=choices.PRECISIONS)
    mixed_precision: bool = option(False, "Alias of --precision mixed_float16.",
                                   toggle=True)
    early_stopping: int = option(0, "Stop after this many epochs without improvement "
                                    "(0: off).", integer=True, low=0)
    resume: bool = option(False, "Continue from the run directory's last epoch.",
                          toggle=True)
    strategy: str = option("none", "none, mirrored (all local devices) or multi-worker "
                                   "(TF_CONFIG).",
                           choices=choices.STRATEGIES)
    workers: int = option(1, "Threads preparing batches.", integer=True, low=1)
    augment: bool = option(True, "Random training augmentation.", toggle=True)
    aug_scale: tuple[float, float] = option(
        AugmentConfig.scale, "Augmentation: the longer resized side is U(LOW, HIGH) times "
                             "the input size (keras-yolo3 used 0.25 2.0).")
    aug_jitter: float = option(AugmentConfig.jitter, "Augmentation: aspect-ratio jitter, "
                                                     "in [0, 1) (keras-yolo3: 0.3).")
    mosaic: float = option(0.0, "Augmentation: probability that a training sample is a "
                                "2x2 mosaic of 4 images (ultralytics uses 1.0; 0: off).",
                           low=0, high=1)
    close_mosaic: int = option(0, "Augmentation: no mosaics in the last N epochs, which "
                                  "train on whole images (ultralytics' close_mosaic: 10; "
                                  "0: mosaics to the end). Needs --mosaic.",
                               integer=True, low=0)
    mixup: float = option(0.0, "Augmentation: probability that a training sample is "
                               "blended with another one, ratio ~ Beta(32, 32), boxes of "
                               "both kept (ultralytics: 0 to 0.15; 0: off).",
                          low=0, high=1)
    multi_scale: float = option(
        0.0, "Multi-scale training: each batch's input side is drawn from the multiples "
             "of 32 in [S (1 - F), S (1 + F)], S the --input-size (ultralytics: 0.5; 0: "
             "off). Validation, mAP and the saved model keep --input-size. Yolov3 and "
             "yolov3-tiny; not with --bottlenecks, --strategy or distill.", low=0, high=1)
    steps_per_epoch: Optional[int] = option(
        None, "Use only the first N batches of each epoch (tests, demos).", integer=True,
        low=1)
    max_boxes: int = option(DEFAULT_MAX_BOXES, "Most boxes kept per image.", integer=True, low=1)
    jit: bool = option(False, "XLA-compile the train step (slow to start, faster after); "
                              "always on with the JAX backend.", toggle=True)
    bottlenecks: Optional[Path] = option(
        None, "Stage 1: a cache-bottlenecks file; the heads first train on its features "
              "for --bottleneck-epochs (needs --labels).", role="input")
    labels: Optional[Path] = option(None, "labels.npz (encode-labels) of the cached images, "
                                          "read by the --bottlenecks phase (training on "
                                          "images encodes its targets per batch).",
                                    role="input")
    bottleneck_epochs: int = option(0, "Epochs on cached features before --epochs on "
                                       "images.", integer=True, low=0)

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole run: the cached-feature phase (if any), then ``epochs``."""
        return (self.bottleneck_epochs if self.bottlenecks is not None else 0) + self.epochs

    def augment_config(self) -> AugmentConfig:
        """The augmentation of ``--aug-scale``, ``--aug-jitter``, ``--mosaic`` and
        ``--mixup``.

        Raises:
            UsageError: a range that is not one; mosaic or mixup with ``--no-augment``.
        """
        scale = tuple(float(v) for v in self.aug_scale)
        if len(scale) != 2:
            raise UsageError(f"--aug-scale takes two numbers (low high), got "
                             f"{self.aug_scale!r}")
        for name in ("mosaic", "mixup"):
            value = getattr(self, name)
            if value and not self.augment:
                raise UsageError(f"--{name} {value:g} is a training augmentation; it "
                                 f"contradicts --no-augment")
        if self.close_mosaic and not self.mosaic:
            raise UsageError(f"--close-mosaic {self.close_mosaic} needs --mosaic (a "
                             f"probability above 0)")
        try:
            return AugmentConfig(scale=scale, jitter=float(self.aug_jitter),
                                 mosaic=float(self.mosaic), mixup=float(self.mixup))
        except UsageError as error:
            raise UsageError(f"{error} (--aug-scale {scale[0]:g} {scale[1]:g}, "
                             f"--aug-jitter {self.aug_jitter:g})") from None

    def mosaic_until(self) -> Optional[int]:
        """The first epoch (0-based, of the whole run) without mosaics (``None``: none
        closed)."""
        return self.total_epochs - self.close_mosaic if self.close_mosaic else None

    def multi_scale_sides(self) -> Optional[tuple[int, ...]]:
        """The input sides of ``--multi-scale`` (``None``: off).

        Raises:
            UsageError: a fraction that allows fewer than two sides, or ``--multi-scale``
                with ``--bottlenecks`` (cached features have one size) or a distribution
                strategy (its batches have one shape).
        """
        if not self.multi_scale:
            return None

        flag = f"--multi-scale {self.multi_scale:g}"
        if self.bottlenecks is not None:
            raise UsageError(f"{flag} trains on images of varying sides; it cannot train "
                             f"on --bottlenecks (features cached at one --input-size)")
        if self.strategy != "none":
            raise UsageError(f"{flag} is not supported with --strategy {self.strategy} "
                             f"(its batches must keep one shape); use --strategy none")
        return multi_scale_sides(self.input_size, self.multi_scale)

    def resolved_monitor(self) -> str:
        """``--monitor``, or its default; checked against ``--eval-every`` and ``--val``.

        Raises:
            UsageError: a mAP monitor without ``--eval-every`` and ``--val``, or
                ``--eval-every`` without ``--val`` (a dataset file's val split counts).
        """
        validates = self.val is not None or names_split(self.data, "val")
        if self.eval_every and not validates:
            raise UsageError(f"--eval-every {self.eval_every} needs --val (the images to "
                             f"compute mAP on)")
        if self.monitor is None:
            return "fitness" if self.eval_every else "val_loss"
        if self.monitor != "val_loss" and (not self.eval_every or not validates):
            whose = ("the run's " if self.resume and not is_given(self, "monitor")
                     else "")
            raise UsageError(f"{whose}--monitor {self.monitor} needs --eval-every N (N >= 1) "
                             f"and --val (mAP is computed on --val every N epochs)")
        return self.monitor

    def family_options(self) -> dict:
        """The :data:`FAMILY_OPTIONS` values (``None``: the family's default)."""
        return {name: getattr(self, name) for name in FAMILY_OPTIONS}

    def check_family_options(self) -> None:
        """Refuse a family option set for a model whose loss and assigner ignore it.

        Raises:
            UsageError: naming the flag, the model and the options it does read.
        """
        family = get_family(self.model)
        if not family.backbones and getattr(self, "backbone_weights", None) not in (None,
                                                                                   "none"):
            raise UsageError(f"--backbone-weights does not apply to --model {self.model} "
                             f"(it takes no --backbone)")
        reads = family.option_names()
        for name in filter(lambda name: is_given(self, name), FAMILY_OPTIONS):
            if name not in reads:
                known = ", ".join(flag_of(self, n) for n in FAMILY_OPTIONS if n in reads)
                raise UsageError(f"{flag_of(self, name)} does not apply to --model "
                                 f"{self.model} (it reads {known or 'none of them'})")
            condition = family.read_when(name)
            if condition is not None and getattr(self, condition[0]) != condition[1]:
                raise UsageError(f"{flag_of(self, name)} applies with "
                                 f"{flag_of(self, condition[0])} {condition[1]} only (this "
                                 f"run's is {getattr(self, condition[0])})")
        assigner = family.assigner_class()
        pos = self.pos_iou if self.pos_iou is not None else getattr(assigner,
                                                                    "DEFAULT_POS_IOU", None)
        neg = self.neg_iou if self.neg_iou is not None else getattr(assigner,
                                                                    "DEFAULT_NEG_IOU", None)
        if pos is not None and neg is not None and neg > pos:
            raise UsageError(f"--neg-iou {neg:g} must not exceed --pos-iou {pos:g} (an "
                             f"anchor cannot be both negative and positive)")

    def recorded_start(self) -> Optional[RecordedSettings]:
        """What ``--weights`` record that this run takes for the flags not given:
        stage 2 continues stage 1, so everything stage 1 was trained with; stage 1
        starts from weights that may be of another dataset, so only their architecture
        (:func:`~detkit.models.recorded.start_architecture`). With ``--resume``, the
        run's own state instead (its model, width, backbone, input size and anchors).
        ``None``: no weights or nothing recorded."""
        resumed = self.resumed_settings()
        if resumed is not None:
            return resumed
        if self.stage == 1:
            return start_architecture(self.weights)
        if self.weights is None or not Path(self.weights).is_file():
            return None
        return read_recorded(Path(self.weights))

    def resumed_settings(self) -> Optional[RecordedSettings]:
        """What ``--out``'s resume state records (``None``: no ``--resume`` or no state):
        ``--resume`` alone continues a run as it was started."""
        if not self.resume:
            return None
        from detkit.training.callbacks import STATE_JSON, read_state

        try:
            state = read_state(self.out)
        except ArtifactError:               # reported by the run's own resume
            return None
        if not isinstance(state, dict):
            return None
        values = {key: state[key] for key in ("model", "width", "backbone", "input_size")
                  if state.get(key) is not None}
        anchors = state.get("anchors")
        return RecordedSettings(
            Path(self.out) / STATE_JSON, values,
            None if anchors is None else np.asarray(anchors, np.float32).reshape(-1, 2), None,
            what="the run's state")

    def start_notes(self) -> list[str]:
        """What the run should say about its recorded start (stage 2 at another input
        size than stage 1's: ``running at input 416; the weights were trained at 160``)."""
        opts = self.with_run_options()
        return resolve_options(opts, opts.recorded_start())[1]

    def with_run_options(self) -> "Options":
        """With ``--resume``: every option not given takes the value the run was started
        with (its ``manifest.json`` config: learning rate, schedule, freezing, stage,
        validation...), so that ``--resume`` alone continues the run as it was."""
        if not self.resume:
            return self
        try:
            config = json.loads((Path(self.out) / RUN_MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return self                     # the run's own resume reports what is wrong
        config = config.get("config") if isinstance(config, dict) else None
        if not isinstance(config, dict):
            return self
        found = {field.name: (field, spec) for field, spec in specs(self)}
        changes = {}
        for name, value in config.items():
            if name not in found or name in NEW_ON_RESUME:
                continue
            field, spec = found[name]
            if is_given(self, name):
                self._tell_change(field, spec, value)
                continue
            if any(is_given(self, alias) for alias in ALIASES.get(name, ())):
                continue
            if spec.role == "input" and value is not None and not Path(value).exists():
                raise UsageError(f"--resume: the run was started with {spec.flag} {value}, "
                                 f"which is not found from here (the run records it as "
                                 f"given where it started); give {spec.flag}")
            changes[name] = recorded_value(field, value)
        return dataclasses.replace(self, **changes)

    def _tell_change(self, field: dataclasses.Field, spec: Any, recorded: Any) -> None:
        """Say when a resumed run is given another value than it was started with (its
        manifest keeps both): the given one applies from the next epoch on."""
        if field.name in CHANGEABLE_ON_RESUME or spec.role == "input":
            return
        given, before = getattr(self, field.name), recorded_value(field, recorded)
        if given != before:
            warnings.warn(Note(f"--resume: {spec.flag} {_typed(given)} replaces the run's "
                               f"{_typed(before)} from its next epoch (its manifest.json "
                               f"records the change)"), DetkitWarning, stacklevel=3)

    def resolved(self) -> "Options":
        """A copy with a resumed run's options (:meth:`with_run_options`), stage 2's
        recorded start (:meth:`recorded_start`) and the stage defaults filled in, and every
        value checked.

        Raises:
            UsageError: naming the option and the value received.
            ArtifactMismatchError: stage 2's ``--model``, ``--width`` or ``--backbone``
                contradicting the manifest of its ``--weights``.
        """
        opts = self.with_run_options()
        return resolve_options(opts, opts.recorded_start())[0].checked()

    def default_freeze(self) -> str:
        """``--freeze`` when not given: stage 1 freezes the body only when it starts
        pretrained (``--weights``, ``--backbone-weights`` other than none, or the frozen
        body of a ``--bottlenecks`` cache), as keras-yolo3 freezes only loaded layers; a
        random body trains with the heads. Stage 2 freezes nothing."""
        pretrained = (self.weights is not None or self.bottlenecks is not None
                      or self.backbone_weights not in (None, "none"))
        return "body" if self.stage == 1 and pretrained else "none"

    def checked(self) -> "Options":
        """A copy with the stage defaults filled in and every value checked.

        Raises:
            UsageError: naming the option and the value received.
        """
        check(self)
        check_input_size(self.input_size)
        lr = DEFAULT_LR[self.stage] if self.lr is None else self.lr
        freeze = self.default_freeze() if self.freeze is None else self.freeze
        if self.bottlenecks is not None:
            if self.stage != 1:
                raise UsageError(f"--bottlenecks trains the heads of stage 1, "
                                 f"not stage {self.stage}")
            if self.labels is None:
                raise UsageError("--bottlenecks needs --labels (the labels.npz of the same "
                                 "images, from encode-labels)")
        elif self.bottleneck_epochs:
            raise UsageError("--bottleneck-epochs needs --bottlenecks (a cache-bottlenecks "
                             "file)")
        elif self.labels is not None and not self.resume:
            warnings.warn(f"--labels {self.labels} is read by the --bottlenecks phase only: "
                          f"this run trains on images, whose targets are encoded per batch "
                          f"after augmentation", DetkitWarning, stacklevel=2)
        if self.bottlenecks is None and self.epochs < 1:
            raise UsageError(f"--epochs must be an integer >= 1, got {self.epochs!r}")
        if self.total_epochs < 1:
            raise UsageError("nothing to train: --epochs and --bottleneck-epochs are 0")
        self.check_family_options()
        if self.mixed_precision and self.precision not in (None, "mixed_float16"):
            raise UsageError(f"--mixed-precision means --precision mixed_float16; it "
                             f"contradicts --precision {self.precision}")
        precision = self.precision or ("mixed_float16" if self.mixed_precision
                                       else "float32")
        config = self.augment_config()
        self.multi_scale_sides()
        return dataclasses.replace(self, lr=float(lr), freeze=freeze, precision=precision,
                                   monitor=self.resolved_monitor(),
                                   aug_scale=config.scale, aug_jitter=config.jitter,
                                   data=Path(self.data), out=Path(self.out))


def run(opts: Options, progress: Progress = SILENT):
    """Train one stage.

    Returns:
        :class:`detkit.training.run.TrainResult`.

    Raises:
        UsageError, DataError, ArtifactError, TrainingError: see
            :func:`detkit.training.run.run_training`.
    """
    opts = opts.with_run_options()
    if opts.strategy != "multi-worker":   # before Keras loads: a refused --out exits at once
        check_run_folder(opts.out, resume=opts.resume, exist_ok=opts.exist_ok)
    from detkit.training.progress import ProgressCallback
    from detkit.training.run import run_training

    return run_training(opts, callbacks=[ProgressCallback(progress, opts.total_epochs)],
                        config=as_config(opts))
