"""``detkit import-darknet CFG WEIGHTS``: Darknet cfg + weights -> detkit files.

Writes ``NAME.weights.h5`` (loadable by ``model.load_weights`` of
``build_model(model, C, 1.0)``, and by name by ``train --weights``/``predict``), the
cfg's anchors as ``NAME.anchors.txt`` beside it (detkit's anchors format), and the
sidecar manifests. A weights file that stops early (``darknet53.conv.74``) fills what it
holds; the rest stays at detkit's initialization and is reported.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detkit.anchors import save_anchors
from detkit.artifacts import atomic_path, check_outputs, manifest_path, write_manifest
from detkit.darknet.cfg import read_cfg
from detkit.darknet.weights import read_weights
from detkit.data.readers.common import read_class_names
from detkit.errors import ArtifactMismatchError, UsageError
from detkit.models import MAX_STRIDE, build_model
from detkit.options import argument, as_config, option
from detkit.progress import SILENT, Progress
from detkit.tables import TextTable

COMMAND = "import-darknet"
#: Required suffix of ``--out`` (Keras 3 weights files).
WEIGHTS_SUFFIX = ".weights.h5"
#: Suffix of the anchors file written beside the weights.
ANCHORS_SUFFIX = ".anchors.txt"
#: Classes of the (untrained) heads of a backbone-only import without ``--classes``.
DEFAULT_BACKBONE_CLASSES = 80


#: Layers listed by name when some stay at their initialization (the rest counted).
MAX_LISTED = 12


@dataclasses.dataclass
class ImportDarknetResult:
    """What :func:`run` read and wrote.

    Attributes:
        out, manifest_path: the weights file and its manifest.
        anchors_path: the anchors file (None for a cfg without ``[yolo]`` layers).
        layout: ``yolov3``, ``yolov3-tiny`` or ``darknet53``; model: the detkit model.
        num_classes, class_names: classes of the written model (names ``None``
            without ``--classes``: placeholder names are not recorded, so predict and
            eval-map take the dataset's).
        anchors: ``(K, 2)`` anchors as written (input pixels) or None.
        input_size: the input side recorded (``--input-size`` or ``[net] width``).
        version: the weights format ``major.minor.revision``; seen: images seen.
        convs_in_cfg, convs_read: convs the cfg has and the file held.
        loaded: detkit layers filled; left_at_init: detkit layers left as initialized;
        not_imported: Darknet convs read but without a detkit layer (classifier).
        notes: remarks for the user; seconds: wall time.
    """

    out: Path
    manifest_path: Path
    anchors_path: Path | None
    layout: str
    model: str
    num_classes: int
    class_names: list[str] | None
    anchors: np.ndarray | None
    input_size: int | None
    version: str
    seen: int
    convs_in_cfg: int
    convs_read: int
    loaded: list[str]
    left_at_init: list[str]
    not_imported: list[str]
    notes: list[str]
    seconds: float

    def warnings(self) -> list[str]:
        """The notes, then the layers left at initialization or read but not imported."""
        lines = list(self.notes)
        if self.left_at_init:
            shown = ", ".join(self.left_at_init[:MAX_LISTED])
            more = len(self.left_at_init) - MAX_LISTED
            lines.append(f"left at initialization ({len(self.left_at_init)} layers): {shown}"
                         + (f" and {more} more" if more > 0 else ""))
        if self.not_imported:
            lines.append("read but not imported (no detkit layer): "
                         + ", ".join(self.not_imported))
        return lines

    def table(self) -> TextTable:
        """What was read and what the detkit model received."""
        anchors = ("-" if self.anchors is None else
                   ", ".join(f"{w:g},{h:g}" for w, h in self.anchors))
        return TextTable(f"Darknet {self.layout} -> detkit {self.model}", ("", "value"), [
            ("weights format", f"{self.version} (seen {self.seen:,} images)"),
            ("convs read", f"{self.convs_read} of {self.convs_in_cfg}"),
            ("detkit layers loaded", f"{len(self.loaded)} "
                                     f"({len(self.left_at_init)} left at initialization)"),
            ("classes", str(self.num_classes)),
            ("anchors", anchors),
            ("input size", "-" if self.input_size is None else str(self.input_size)),
        ])

    def summary_line(self) -> str:
        """The files written and the time taken."""
        written = [self.out, self.manifest_path] + (
            [self.anchors_path] if self.anchors_path is not None else [])
        return f"wrote {', '.join(map(str, written))} ({self.seconds:.1f} s)"


@dataclasses.dataclass(kw_only=True)
class Options:
    """The options of ``import-darknet``."""

    cfg: Path = argument("Darknet .cfg: the official yolov3, yolov3-tiny or darknet53 "
                         "layout (any classes and anchors).", role="input")
    weights: Path = argument("Darknet .weights: complete, or stopping after any conv "
                             "(darknet53.conv.74).", role="input")
    out: Optional[Path] = option(None, "NAME.weights.h5 to write; NAME.anchors.txt and the "
                                 "manifests go beside it (default: WEIGHTS' file name + "
                                 ".weights.h5 in the current folder).", role="output",
                                 writes=lambda out: written_files(out))
    classes: Optional[Path] = option(None, "Class names, one a line; their number must "
                                     "match the cfg's classes= (default: 0..C-1).",
                                     role="input")
    input_size: Optional[int] = option(None, "Input side recorded in the manifest, a "
                                       "multiple of 32 (default: the width in the cfg's "
                                       "net section).", integer=True, low=32)


def anchors_path_for(out: str | os.PathLike) -> Path:
    """``dir/NAME.anchors.txt`` for ``dir/NAME.weights.h5``."""
    out = Path(out)
    return out.with_name(out.name[:-len(WEIGHTS_SUFFIX)] + ANCHORS_SUFFIX)


def written_files(out: str | os.PathLike) -> list[Path]:
    """What ``--out`` writes besides itself: its manifest, the anchors file and its
    manifest."""
    anchors = anchors_path_for(out) if str(out).endswith(WEIGHTS_SUFFIX) else None
    return [manifest_path(out)] + ([anchors, manifest_path(anchors)] if anchors else [])


def _check_out(opts: "Options", out: Path) -> None:
    """``--out`` names a Keras weights file, none of the files it writes is an input, and
    it can be written (before the slow part)."""
    if not out.name.endswith(WEIGHTS_SUFFIX) or out.name == WEIGHTS_SUFFIX:
        raise UsageError(f"--out must be a NAME{WEIGHTS_SUFFIX} file (Keras 3 weights), "
                         f"got {str(out)!r}")
    check_outputs(dataclasses.replace(opts, out=out))


def default_out(weights: str | os.PathLike) -> Path:
    """``yolov3.weights`` -> ``yolov3.weights.h5`` (in the current folder)."""
    name = Path(weights).name
    stem = name[:-len(".weights")] if name.endswith(".weights") else name
    return Path(stem + WEIGHTS_SUFFIX)


def run(opts: Options, progress: Progress = SILENT) -> ImportDarknetResult:
    """Convert Darknet ``cfg`` + ``weights`` into detkit files at ``out``.

    Writes ``out`` (loadable by ``model.load_weights`` of ``build_model(model, C, 1.0)``),
    the anchors file beside it (:func:`anchors_path_for`, for cfgs with ``[yolo]``) and
    their manifests.

    Raises:
        UsageError: a bad ``--out`` or ``--input-size``.
        DataError: a cfg that is malformed or not an imported layout (file and line).
        ArtifactError: a truncated or mismatched weights file, an unwritable ``--out``.
        ArtifactMismatchError: ``--classes`` disagrees with the cfg.
    """
    from detkit.darknet.convert import fill_model
    from detkit.darknet.layout import recognize

    del progress  # reading and writing take seconds; building the model dominates
    started = time.perf_counter()
    cfg, weights, classes = opts.cfg, opts.weights, opts.classes
    input_size = opts.input_size
    if input_size is not None and input_size % MAX_STRIDE:
        raise UsageError(f"--input-size must be a multiple of {MAX_STRIDE}, "
                         f"got {input_size}")
    out = Path(opts.out) if opts.out is not None else default_out(weights)
    inputs = [cfg, weights] + ([Path(classes)] if classes is not None else [])
    _check_out(opts, out)
    layout = recognize(read_cfg(cfg))
    notes = list(layout.notes)
    names = read_class_names(classes) if classes is not None else None
    if layout.num_classes is not None:
        if names is not None and len(names) != layout.num_classes:
            yolo = layout.yolo_sections[0]
            raise ArtifactMismatchError(
                f"--classes lists {len(names)} names, the cfg's [yolo] layers "
                f"have classes={layout.num_classes} ({cfg}:{yolo.line})", path=classes)
        num_classes = layout.num_classes
        names = names or [str(i) for i in range(num_classes)]
    else:
        num_classes = len(names) if names else DEFAULT_BACKBONE_CLASSES
        notes.append(f"the cfg has no [yolo] layers: the {layout.model} heads "
                     f"({num_classes} classes) keep their initialization")
    if input_size is None:
        input_size = layout.input_size
        if input_size is None:
            notes.append("the cfg's [net] width/height are not one multiple of 32: no "
                         "input size recorded (give --input-size)")
    darknet = read_weights(weights, [conv.shape for conv in layout.convs])

    model = build_model(layout.model, num_classes, 1.0)
    report = fill_model(model, layout, darknet.convs)
    resolved = {**as_config(opts), "out": str(out), "input_size": input_size}
    version = f"{darknet.major}.{darknet.minor}.{darknet.revision}"
    settings: dict[str, Any] = {"model": layout.model, "width": 1.0,
                                "input_size": input_size, "num_classes": num_classes}
    if classes is not None:  # placeholder names "0".."C-1" are not recorded
        settings["class_names"] = names
    anchors_file = None
    if layout.anchors is not None:
        settings["anchors"] = layout.anchors.tolist()
        anchors_file = anchors_path_for(out)
    # The weights land last (renamed from a temporary file once everything else is
    # written): they are the make target, and they never appear without their manifest.
    with atomic_path(out) as tmp:
        model.save_weights(tmp)
        if anchors_file is not None:
            integral = bool(np.all(layout.anchors == np.round(layout.anchors)))
            write_manifest(anchors_file, command=COMMAND, config=resolved, inputs=[cfg],
                           extra={"anchors": settings["anchors"],
                                  "input_size": input_size, "model": layout.model})
            save_anchors(anchors_file, layout.anchors, decimals=0 if integral else 3)
        manifest = write_manifest(out, command=COMMAND, config=resolved, inputs=inputs,
                                  extra={**settings, "darknet": {
                                      "layout": layout.name, "version": version,
                                      "seen": darknet.seen,
                                      "convs_in_cfg": len(layout.convs),
                                      "convs_read": len(darknet.convs),
                                      "left_at_init": report.left_at_init,
                                      "not_imported": report.not_imported}})
    if len(darknet.convs) < len(layout.convs):
        notes.append(f"the weights stop after conv {len(darknet.convs)} of "
                     f"{len(layout.convs)}: {len(report.left_at_init)} detkit layers keep "
                     f"their initialization")
    return ImportDarknetResult(
        out=out, manifest_path=manifest, anchors_path=anchors_file, layout=layout.name,
        model=layout.model, num_classes=num_classes,
        class_names=settings.get("class_names"), anchors=layout.anchors,
        input_size=input_size, version=version, seen=darknet.seen,
        convs_in_cfg=len(layout.convs), convs_read=len(darknet.convs),
        loaded=report.loaded, left_at_init=report.left_at_init,
        not_imported=report.not_imported, notes=notes,
        seconds=time.perf_counter() - started)
