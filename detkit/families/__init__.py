"""The detector families: one registry entry per ``--model`` name.

A :class:`Family` names everything a command needs to handle a model without branching on
its name: the model builder, the label assigner (encoder), the loss, the output decoder
and the anchor layout (anchors per scale, strides). Commands and stages call
:func:`get_family` and use the entry; a new detector is one new entry here plus its
pieces in ``models/``, the encoders, ``losses`` and ``decode``.

Pieces are named as ``"module:attribute"`` and imported on first use, so listing the
families (``detkit --help``) does not import Keras.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detkit.anchors import ANCHORS_DIR, load_anchors
from detkit.choices import BACKBONES
from detkit.errors import ArtifactMismatchError, UsageError, lookup


def _load(reference: str) -> Any:
    """``"package.module:name"`` -> the object it names."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclasses.dataclass(frozen=True)
class Family:
    """One detector family (see the module docstring).

    Attributes:
        name: the ``--model`` name.
        strides: output strides, coarsest first (one output per stride).
        anchors_per_scale: anchors predicted in each cell of each output.
        default_anchors: file name under ``detkit/anchor_files`` used without ``--anchors``.
        builder: ``"module:function"`` of ``build(num_classes, width, input_size,
            weight_decay) -> keras.Model`` (``heads(body(image))``).
        assigner: ``"module:class"`` of the label encoder ``(anchors, input_size,
            num_classes=C)`` whose call maps padded boxes and classes to targets.
        loss: ``"module:class"`` of the ``keras.losses.Loss`` over raw outputs.
        decoder: ``"module:function"`` of ``decode(outputs, anchors, input_size) ->
            (boxes (B, N, 4), scores (B, N, C))`` in input pixels.
        backbones: the ``--backbone`` names the builder accepts (as its ``backbone``
            keyword), the default first; empty: the family takes no ``--backbone``.
        label_scheme: what ``encode-labels`` stores for it (:mod:`detkit.labels`):
            ``"yolov3"`` (assigned target slots) or ``"boxes"`` (the letterboxed boxes,
            assigned when a batch is made).
        distill_layout: families with the same (non-empty) layout can distill into
            each other (``None``: no distillation).
        nms_iou: the NMS IoU threshold of predict, eval-map, ``export --nms`` and the
            validation mAP of training, unless ``--iou`` is given (rpn: 0.7, the
            proposal NMS of Faster R-CNN).
        max_dets: COCO's three detection limits of eval-map (AR@1, AR@10, AR@100;
            rpn: AR@1, AR@100, AR@1000), unless ``--max-dets`` is given; the last is
            also the detections kept per image (:attr:`max_det`).
        class_agnostic: the outputs score objects, not classes: eval-map pools the
            categories (COCO's ``useCats = 0``).
    """

    name: str
    strides: tuple[int, ...]
    anchors_per_scale: int
    default_anchors: str
    builder: str
    assigner: str
    loss: str
    decoder: str
    backbones: tuple[str, ...] = ()
    label_scheme: str = "boxes"
    distill_layout: str | None = None
    nms_iou: float = 0.45
    max_dets: tuple[int, int, int] = (1, 10, 100)
    class_agnostic: bool = False

    @property
    def max_det(self) -> int:
        """Detections kept per image unless ``--max-det`` is given."""
        return self.max_dets[-1]

    @property
    def num_anchors(self) -> int:
        """Anchors the family expects in an anchors file."""
        return self.anchors_per_scale * len(self.strides)

    @property
    def max_stride(self) -> int:
        """The coarsest stride: input sides must be multiples of it."""
        return max(self.strides)

    def build(self, num_classes: int, width: float, input_size: int | None,
              weight_decay: float, backbone: str | None = None) -> Any:
        """The untrained ``keras.Model`` (see :func:`detkit.models.build_model`)."""
        backbone = self.resolve_backbone(backbone)
        if backbone is None:
            return _load(self.builder)(num_classes, width, input_size, weight_decay)
        return _load(self.builder)(num_classes, width, input_size, weight_decay,
                                   backbone=backbone)

    def resolve_backbone(self, backbone: str | None) -> str | None:
        """``backbone``, or the family's default one when ``None``.

        Raises:
            UsageError: a backbone the family does not take (naming those it takes).
        """
        if backbone is None:
            return self.backbones[0] if self.backbones else None
        if backbone not in self.backbones:
            takes = (f"choose one of: {', '.join(self.backbones)}" if self.backbones
                     else "it takes no --backbone")
            raise UsageError(f"--backbone {backbone} does not apply to --model "
                             f"{self.name}; {takes}")
        return backbone

    def assigner_class(self) -> type:
        """The label encoder class."""
        return _load(self.assigner)

    def loss_class(self) -> type:
        """The loss class."""
        return _load(self.loss)

    def option_names(self) -> tuple[str, ...]:
        """The training options (``detkit train`` field names) the family's loss and
        assigner read (their ``OPTIONS``)."""
        names = (*self.loss_class().OPTIONS, *self.assigner_class().OPTIONS)
        return tuple(dict.fromkeys(names))

    def read_when(self, name: str) -> tuple[str, str] | None:
        """``(option, value)`` with which the family's loss reads option ``name`` at all
        (its ``READ_WHEN``), or ``None`` when it reads it whenever it reads it."""
        return getattr(self.loss_class(), "READ_WHEN", {}).get(name)

    def make_assigner(self, anchors: np.ndarray, input_size: int, num_classes: int,
                      **options: Any) -> Any:
        """The label assigner for a run: ``(boxes, classes) -> y_true`` of the loss.

        ``options`` holds the assigner's ``OPTIONS`` (``None`` values: its defaults).
        """
        cls = self.assigner_class()
        given = {k: v for k, v in options.items() if k in cls.OPTIONS and v is not None}
        return cls(anchors, input_size, num_classes, strides=self.strides, **given)

    def make_loss(self, anchors: np.ndarray, num_classes: int, input_size: int,
                  **options: Any) -> Any:
        """The loss for a run; ``options`` as :meth:`make_assigner` (the loss's)."""
        cls = self.loss_class()
        given = {k: v for k, v in options.items() if k in cls.OPTIONS and v is not None}
        return cls(anchors, num_classes, input_size, **given)

    def nms(self, iou: float | None, max_det: int | None) -> tuple[float, int]:
        """``(iou, max_det)`` of NMS: the values given, the family's for ``None``."""
        return (self.nms_iou if iou is None else float(iou),
                self.max_det if max_det is None else int(max_det))

    def decode(self, outputs, anchors: np.ndarray, input_size: int):
        """Raw outputs -> ``boxes (B, N, 4)`` and ``scores (B, N, C)`` in input pixels."""
        return _load(self.decoder)(outputs, anchors, input_size)

    def default_anchors_path(self) -> Path:
        """The packaged COCO anchors of this family."""
        return ANCHORS_DIR / self.default_anchors

    def default_anchors_input(self) -> Optional[int]:
        """The input side the default anchors were fitted at (COCO's, ``None`` for anchors
        generated per level, which fit any input)."""
        return COCO_ANCHORS_INPUT if self.default_anchors.endswith("_coco.txt") else None

    def default_anchors_note(self, path: Path, input_size: int) -> Optional[str]:
        """A note when ``path`` (the resolved anchors) is this family's default, fitted
        at another input side than ``input_size``; ``None`` otherwise."""
        fitted = self.default_anchors_input()
        if path != self.default_anchors_path() or fitted is None or fitted == input_size:
            return None
        return (f"the default anchors ({path.name}) are COCO's at input {fitted}, this "
                f"runs at {input_size}: fit anchors to the boxes with kmeans-anchors "
                f"--input-size {input_size} --k {self.num_anchors}")

    def resolve_anchors(self, path: str | os.PathLike | None) -> tuple[np.ndarray, Path]:
        """Load ``path`` (or the family's default anchors) and check the count.

        Returns:
            ``(anchors (K, 2) float32 input pixels, the path read)``.

        Raises:
            DataError: an unreadable anchors file (naming it and the line).
            ArtifactMismatchError: a count other than :attr:`num_anchors` (naming the
                file), exit code 1 wherever it happens.
        """
        source = Path(path) if path is not None else self.default_anchors_path()
        anchors = load_anchors(source)
        if len(anchors) != self.num_anchors:
            raise ArtifactMismatchError(
                f"{self.name} needs {self.num_anchors} anchors, the anchors file has "
                f"{len(anchors)} ({self.anchors_per_scale} per scale at strides "
                f"{', '.join(map(str, self.strides))})", path=source)
        return anchors, source


#: The input side of the packaged COCO anchors (keras-yolo3's and YAD2K's, at 416).
COCO_ANCHORS_INPUT = 416


def _backbones(default: str) -> tuple[str, ...]:
    """Every ``--backbone``, the family's own body (``default``) first."""
    return (default, *(name for name in BACKBONES if name != default))


_YOLOV3_PIECES = {"assigner": "detkit.assign.yolov3:Yolov3Assigner",
                  "loss": "detkit.losses:YoloV3Loss",
                  "decoder": "detkit.postprocess:decode_outputs",
                  "label_scheme": "yolov3", "distill_layout": "yolov3"}
_YOLOV2_PIECES = {"assigner": "detkit.assign.yolov2:Yolov2Assigner",
                  "loss": "detkit.losses:YoloV2Loss",
                  "decoder": "detkit.decode:decode_yolov2", "distill_layout": "yolov2"}

#: Every family, by ``--model`` name.
FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family(name="yolov3", strides=(32, 16, 8), anchors_per_scale=3,
           default_anchors="yolov3_coco.txt",
           builder="detkit.models.yolov3:build_yolov3", **_YOLOV3_PIECES,
           backbones=_backbones("darknet53")),
    Family(name="yolov3-tiny", strides=(32, 16), anchors_per_scale=3,
           default_anchors="yolov3-tiny_coco.txt",
           builder="detkit.models.yolov3_tiny:build_yolov3_tiny", **_YOLOV3_PIECES,
           backbones=_backbones("darknet-tiny")),
    Family(name="yolov2", strides=(32,), anchors_per_scale=5,
           default_anchors="yolov2_coco.txt",
           builder="detkit.models.yolov2:build_yolov2", **_YOLOV2_PIECES),
    Family(name="yolov2-tiny", strides=(32,), anchors_per_scale=5,
           default_anchors="yolov2_coco.txt",
           builder="detkit.models.yolov2_tiny:build_yolov2_tiny", **_YOLOV2_PIECES),
    Family(name="retinanet", strides=(32, 16, 8), anchors_per_scale=9,
           default_anchors="retinanet_generated.txt",
           builder="detkit.models.retinanet:build_retinanet",
           assigner="detkit.assign.matching:AnchorMatchingAssigner",
           loss="detkit.losses:RetinaNetLoss", decoder="detkit.decode:decode_anchor_outputs",
           distill_layout="retinanet", backbones=_backbones("darknet-small")),
    Family(name="rpn", strides=(32, 16, 8), anchors_per_scale=3,
           default_anchors="rpn_generated.txt", builder="detkit.models.rpn:build_rpn",
           assigner="detkit.assign.matching:RpnAssigner", loss="detkit.losses:RpnLoss",
           decoder="detkit.decode:decode_anchor_outputs", backbones=_backbones("darknet-small"),
           distill_layout="rpn", nms_iou=0.7, max_dets=(1, 100, 1000), class_agnostic=True),
)}
#: The ``--model`` choices.
MODEL_NAMES = tuple(FAMILIES)


def get_family(name: str) -> Family:
    """The registry entry of ``name``.

    Raises:
        UsageError: an unknown name (listing the known ones).
    """
    return lookup(FAMILIES, name, "model")
