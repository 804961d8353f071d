"""``detkit doctor DATA``: a dataset's health report before training.

Reads the dataset as training does (the readers' repairs, letterboxing to
``--input-size``), checks the image files (``--check-images``), measures the anchors of
``--model`` (or ``--anchors``) with a k-means suggestion, and writes ``OUT/report.json``
(every figure; :mod:`detkit.doctor`), its manifest ``OUT/report.json.manifest.json`` and,
with matplotlib installed, ``OUT/*.png``.

Fatal problems (the result's ``fatal``; the CLI exits with code 1 after the report):
no image file readable; more than ``--max-missing`` of the images missing or unreadable
(default 0: any one is fatal, since training stops at the first); no box left for training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detkit import kmeans
from detkit.artifacts import manifest_path, write_json, write_manifest
from detkit.commands.groups import (INPUT_SIZE_OF_ANCHORS_HELP, OWN_ANCHORS_HELP,
                                    AnchorOptions, DatasetOptions, InputOptions,
                                    ModelOptions, SeedOptions, load_data)
from detkit.doctor import Thresholds, diagnose
from detkit.doctor.findings import (DEFAULT_MAX_IMBALANCE, DEFAULT_MAX_MISSING,
                                    DEFAULT_RARE_COUNT, DEFAULT_RARE_FRACTION,
                                    FATAL, NOTE, WARNING, Finding)
from detkit.doctor.images import CHECK_MODES
from detkit.doctor.plots import plot_inputs, write_plots
from detkit.errors import DataError, UsageError
from detkit.families import MODEL_NAMES, get_family
from detkit.options import as_config, flag_of, option, retold
from detkit.progress import SILENT, Progress

COMMAND = "doctor"
#: The report's file name inside ``--out``.
REPORT_FILE = "report.json"


@dataclasses.dataclass
class DoctorResult:
    """What ``doctor`` measured and wrote.

    Attributes:
        report: every figure (the content of ``report.json``).
        findings: fatal problems, warnings and notes, most severe first.
        out: the output folder; report_path, manifest_path: the files written.
        plots: the PNG files written; plots_note: why none were (or None).
    """

    report: dict[str, Any]
    findings: list[Finding]
    out: Path
    report_path: Path
    manifest_path: Path
    plots: list[Path]
    plots_note: Optional[str]

    @property
    def fatal(self) -> list[Finding]:
        """The fatal findings: the dataset is not fit for training (exit code 1)."""
        return [f for f in self.findings if f.level == FATAL]


@dataclasses.dataclass(kw_only=True)
class Options(DatasetOptions, AnchorOptions, InputOptions, SeedOptions):
    """The options of ``doctor``."""

    # the family without --width: the doctor builds no network
    model: str = retold(ModelOptions, "model", f"Architecture whose anchors and strides "
                                               f"the report checks: {', '.join(MODEL_NAMES)}.")
    input_size: int = retold(InputOptions, "input_size", INPUT_SIZE_OF_ANCHORS_HELP)
    anchors: Optional[Path] = retold(AnchorOptions, "anchors", OWN_ANCHORS_HELP)
    out: Path = option(Path("doctor"), f"Folder for {REPORT_FILE} (+ its manifest) and "
                       "the PNG plots.", role="output", folder=True,
                       writes=lambda out: [out / REPORT_FILE,
                                           manifest_path(out / REPORT_FILE)])
    check_images: str = option(
        "header", "How deep to check image files: none; stat (missing, empty); header "
        "(also unreadable headers, sizes that differ from the annotation, truncated "
        "JPEGs); decode (also corrupt image data, a few ms per image). Exact duplicates "
        "are found in all but none.", choices=CHECK_MODES)
    plots: bool = option(True, "Draw PNG plots (needs matplotlib; without it a note, not "
                         "an error).", toggle=True)
    suggest: bool = option(True, "Run a quick k-means for suggested anchors.", toggle=True)
    anchor_t: float = option(kmeans.DEFAULT_ANCHOR_T,
                             "Side-ratio threshold of BPR and fitness.", above=1)
    rare_fraction: float = option(DEFAULT_RARE_FRACTION, "Warn about classes with a "
                                  "smaller share of the boxes.", low=0, high=1)
    rare_count: int = option(DEFAULT_RARE_COUNT, "Warn about classes with fewer boxes.",
                             integer=True, low=0)
    max_imbalance: float = option(DEFAULT_MAX_IMBALANCE, "Warn when the most frequent "
                                  "class has more than this many times the boxes of the "
                                  "least frequent.", low=1)
    max_missing: float = option(DEFAULT_MAX_MISSING, "Share of images that may be missing "
                                "or unreadable before it is fatal (exit 1); the default 0 "
                                "makes any one fatal, since training stops at the first.",
                                low=0, high=1)


def _check_out(opts: Options, inputs: list[Path]) -> Path:
    """The report path; refuses an ``--out`` that is a file or a report that is an input."""
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag_of(opts, 'out')} must be a folder, got the file {out}")
    report = out / REPORT_FILE
    for item in inputs:
        if report.resolve() == Path(item).resolve():
            raise UsageError(f"{flag_of(opts, 'out')} would overwrite the input {item}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the output folder: {err.strerror or err}",
                        path=out) from None
    return report


def run(opts: Options, progress: Progress = SILENT) -> DoctorResult:
    """Diagnose ``opts.data``; write ``report.json``, its manifest and the plots.

    Raises:
        UsageError: an input size that is not a multiple of the coarsest stride, an
            ``--out`` that is a file or would overwrite an input.
        DataError: an unreadable dataset (the readers' errors) or anchors file.
        ArtifactMismatchError: an anchors file with the wrong count for ``--model``.
    """
    family = get_family(opts.model)
    if opts.input_size % family.max_stride:
        raise UsageError(f"{flag_of(opts, 'input_size')} must be a multiple of "
                         f"{family.max_stride}, got {opts.input_size}")
    anchors, anchors_path = family.resolve_anchors(opts.anchors)
    inputs = [Path(opts.data), anchors_path] + ([Path(opts.classes)] if opts.classes else [])
    report_path = _check_out(opts, inputs)
    dataset = load_data(opts, crowds=True, check_units=False)   # both are findings
    limits = Thresholds(rare_fraction=opts.rare_fraction, rare_count=opts.rare_count,
                        max_imbalance=opts.max_imbalance, max_missing=opts.max_missing)
    diagnosis = diagnose(dataset, input_size=opts.input_size, anchors=anchors,
                         strides=family.strides, check=opts.check_images, limits=limits,
                         anchor_t=opts.anchor_t, seed=opts.seed, suggest=opts.suggest,
                         settings={"model": opts.model, "anchors": str(anchors_path)},
                         progress=progress)
    report = diagnosis.report
    if Path(opts.data) != Path(dataset.path):  # a dataset file: the split read
        report["dataset"].update(path=str(opts.data), read=str(dataset.path))
    default_note = family.default_anchors_note(anchors_path, opts.input_size)
    if default_note:     # the last warning: findings stay most severe first
        found = Finding(WARNING, "default_anchors_size", default_note)
        at = sum(finding.level != NOTE for finding in diagnosis.findings)
        diagnosis.findings.insert(at, found)
        report["findings"].insert(at, found.as_dict())
    plots: list[Path] = []
    note = None
    if opts.plots:
        suggested = report["anchors"]["suggested"]
        counts, names = plot_inputs(report)
        plots, note = write_plots(
            diagnosis.wh, counts, names, anchors,
            None if suggested is None else np.asarray(suggested["anchors"]),
            family.strides, opts.input_size, report_path.parent, seed=opts.seed)
    report["plots"] = [path.name for path in plots]
    manifest = write_manifest(
        report_path, command=COMMAND, config=as_config(opts), inputs=inputs, seed=opts.seed,
        extra={"settings": {"anchors": anchors, "input_size": opts.input_size,
                            "class_names": dataset.class_names},
               "fatal": report["fatal"], "plots": report["plots"]})
    # The report last: it is the make target, so it must be the newest file.
    write_json(report_path, report)
    return DoctorResult(report=report, findings=diagnosis.findings, out=report_path.parent,
                        report_path=report_path, manifest_path=manifest, plots=plots,
                        plots_note=note)
