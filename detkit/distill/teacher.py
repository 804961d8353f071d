"""The teacher: its architecture (flags or manifest) and its frozen, fully loaded model."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Iterator

import numpy as np

from detkit.anchors import load_anchors
from detkit.artifacts import read_manifest, settings_agree
from detkit.errors import ArtifactError, ArtifactMismatchError, UsageError
from detkit.families import FAMILIES, get_family
from detkit.models import MODEL_NAMES, build_model, num_anchors

#: Weights a run directory given as ``--teacher`` provides, in order of preference.
RUN_WEIGHTS = ("best.weights.h5", "last.weights.h5")
RUN_MANIFEST = "manifest.json"


@dataclasses.dataclass
class TeacherSpec:
    """What the teacher is.

    Attributes:
        weights: its ``*.weights.h5``.
        model: architecture (``yolov3``, ``yolov3-tiny``).
        width: channel width multiplier.
        anchors: ``(K, 2)`` its anchors, input pixels.
        class_names: its classes when its manifest names them, else ``None``.
        anchors_source: where the anchors came from, in words.
        backbone: its body (``--backbone``; ``None``: the model's own).
    """

    weights: Path
    model: str
    width: float
    anchors: np.ndarray
    class_names: list[str] | None = None
    anchors_source: str = ""
    backbone: str | None = None

    def describe(self) -> str:
        body = f" --backbone {self.backbone}" if self.backbone else ""
        return f"{self.model} --width {self.width:g}{body} from {self.weights}"


def teacher_weights_and_manifest(teacher: str | os.PathLike) -> tuple[Path, dict]:
    """``--teacher`` (a weights file or a run directory) -> weights file and manifest.

    A run directory gives its ``best.weights.h5`` (else ``last.weights.h5``) and its
    ``manifest.json``; a weights file gives its sidecar manifest (``{}`` if none).

    Raises:
        ArtifactError: no such file or directory, no weights in the run directory, or an
            unreadable manifest.
    """
    path = Path(teacher)
    if path.is_dir():
        found = [path / name for name in RUN_WEIGHTS if (path / name).is_file()]
        if not found:
            raise ArtifactError(f"no {' or '.join(RUN_WEIGHTS)} in the teacher's run "
                                f"directory", path=path)
        manifest_file = path / RUN_MANIFEST
        if not manifest_file.is_file():
            return found[0], read_manifest(found[0])
        try:
            return found[0], json.loads(manifest_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ArtifactError(f"corrupt manifest: {err.msg}", path=manifest_file,
                                line=err.lineno) from None
    if not path.is_file():
        raise ArtifactError("teacher not found (give a *.weights.h5 file or a run "
                            "directory)", path=path)
    return path, read_manifest(path)


def resolve_teacher(teacher: str | os.PathLike, *, model: str | None = None,
                    width: float | None = None,
                    anchors: str | os.PathLike | None = None,
                    student_anchors: np.ndarray | None = None,
                    student_model: str | None = None,
                    backbone: str | None = None) -> TeacherSpec:
    """The teacher's architecture: flags, else its manifest; the flags must agree with it.

    Anchors: ``anchors`` (``--teacher-anchors``), else the manifest's, else the
    student's when their count fits the teacher's model, else its default anchors.

    Raises:
        UsageError: no ``--teacher-model`` and no manifest naming one; bad values.
        ArtifactError: see :func:`teacher_weights_and_manifest`.
        ArtifactMismatchError: a flag that contradicts the manifest, or anchors whose
            count does not fit the teacher's model.
    """
    weights, manifest = teacher_weights_and_manifest(teacher)
    recorded_model, recorded_width = manifest.get("model"), manifest.get("width")
    if model is not None and recorded_model is not None and model != recorded_model:
        raise ArtifactMismatchError(f"--teacher-model {model} but the teacher's manifest "
                                    f"says {recorded_model}", path=weights)
    if (width is not None and recorded_width is not None
            and not settings_agree(float(width), float(recorded_width))):
        raise ArtifactMismatchError(f"--teacher-width {width:g} but the teacher's manifest "
                                    f"says {float(recorded_width):g}", path=weights)
    model = model if model is not None else recorded_model
    if model is None:
        raise UsageError(f"--teacher-model is required: {weights} has no manifest naming "
                         f"the teacher's architecture")
    if model not in MODEL_NAMES:
        raise UsageError(f"--teacher-model must be one of {', '.join(MODEL_NAMES)}, "
                         f"got {model!r}")
    if student_model is not None:
        check_distill_pair(model, student_model)
    width = float(width if width is not None else
                  recorded_width if recorded_width is not None else 1.0)
    if not width > 0:
        raise UsageError(f"--teacher-width must be positive, got {width!r}")
    needed = num_anchors(model)
    if anchors is not None:
        values, source = load_anchors(anchors), str(anchors)
    elif manifest.get("anchors") is not None:
        values, source = np.asarray(manifest["anchors"], np.float32), "the teacher's manifest"
    elif student_anchors is not None and len(student_anchors) == needed:
        values, source = np.asarray(student_anchors, np.float32), "the student's anchors"
    else:
        default = get_family(model).default_anchors_path()
        values, source = load_anchors(default), str(default)
    values = np.asarray(values, np.float32).reshape(-1, 2)
    if len(values) != needed:
        raise ArtifactMismatchError(f"the teacher ({model}) needs {needed} anchors, "
                                    f"{source} has {len(values)}")
    names = manifest.get("class_names")
    recorded_backbone = manifest.get("backbone")
    if backbone is not None and recorded_backbone is not None and backbone != recorded_backbone:
        raise ArtifactMismatchError(f"--teacher-backbone {backbone} but the teacher's "
                                    f"manifest says {recorded_backbone}", path=weights)

    backbone = get_family(model).resolve_backbone(backbone if backbone is not None
                                                  else recorded_backbone)
    return TeacherSpec(weights, model, width, values,
                       None if names is None else [str(n) for n in names], source,
                       backbone=backbone)


def check_distill_pair(teacher_model: str, student_model: str) -> None:
    """Refuse a teacher and student whose outputs cannot be distilled into each other.

    Distillation compares raw outputs stride by stride, so both families must share an
    output layout (``Family.distill_layout``: YOLOv3 <-> YOLOv3-tiny, YOLOv2 <->
    YOLOv2-tiny, RetinaNet <-> RetinaNet, RPN <-> RPN).

    Raises:
        UsageError: naming both models and the pairs that work.
    """
    teacher, student = get_family(teacher_model), get_family(student_model)
    if teacher.distill_layout is None or teacher.distill_layout != student.distill_layout:
        groups: dict[str, list[str]] = {}
        for family in FAMILIES.values():
            if family.distill_layout is not None:
                groups.setdefault(family.distill_layout, []).append(family.name)
        works = "; ".join(" <-> ".join(names if len(names) > 1 else names * 2)
                          for names in groups.values())
        raise UsageError(f"cannot distill the teacher {teacher.name} into the student "
                         f"{student.name}: distillation works between models with the "
                         f"same output layout ({works})")


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restore Python's and NumPy's global random states on exit.

    Keras draws the seeds of unseeded initializers from Python's ``random`` (and
    ``fit(shuffle=True)`` orders batches with it), so building a model inside this block
    leaves every later draw as it would have been without it.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def build_teacher(spec: TeacherSpec, num_classes: int, input_size: int | None = None):
    """Build the teacher and load every layer of its weights; frozen.

    Returns:
        ``(model, report)``: the frozen ``keras.Model`` and the
        :class:`detkit.models.weights.LoadReport`.

    Raises:
        ArtifactMismatchError: some layer of the teacher is missing from the weights or
            has other shapes (another architecture, ``--teacher-width`` or class count).
    """
    from detkit.models.weights import load_weights_by_name

    teacher = build_model(spec.model, num_classes, spec.width, input_size,
                          backbone=spec.backbone)
    try:
        report = load_weights_by_name(teacher, spec.weights, strict=True)
    except ArtifactMismatchError as err:
        raise ArtifactMismatchError(f"the teacher ({spec.model} --teacher-backbone "
                                    f"{spec.backbone} --teacher-width {spec.width:g}, "
                                    f"{num_classes} classes) does not match "
                                    f"its weights: {err.message}", path=err.path) from None
    teacher.trainable = False
    return teacher, report
