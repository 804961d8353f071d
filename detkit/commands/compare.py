"""``detkit compare REPORT...``: eval-map reports side by side (accuracy, size, speed).

Reads the headline figures of each ``eval-map`` report.json; with ``--out`` writes them as
a plain-text table (for a Makefile target) and its sidecar manifest. Reports of
``eval-map --weights EXPORT`` carry the export's format and quantization, so a Keras
model and its SavedModel, TF Lite and ONNX exports compare row by row: AP, the change
of AP against the first report (``dAP``), size on disk and ms/image.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from detkit.artifacts import read_manifest, write_manifest, write_text
from detkit.data.readers.common import read_json
from detkit.errors import ArtifactError, DataError, UsageError
from detkit.options import argument, as_config, option
from detkit.progress import SILENT, Progress

COMMAND = "compare"
#: Column titles of :func:`row_cells`.
COLUMNS = ("run", "model", "width", "format", "AP", "dAP", "AP50", "AR100", "params",
           "MB", "ms/img")
#: Leading columns aligned left in tables.
TEXT_COLUMNS = 4


@dataclasses.dataclass
class ReportRow:
    """One report's headline figures (``None`` where the report lacks them)."""

    name: str
    metric: str
    ap: Optional[float]
    ap50: Optional[float]
    model: Optional[str]
    width: Optional[float]
    params: Optional[int]
    weights_mb: Optional[float]
    ms_per_image: Optional[float]
    format: Optional[str] = None
    quantize: Optional[str] = None
    #: An export with decoding and NMS inside (``export --nms``).
    nms: bool = False
    delta_ap: Optional[float] = None
    #: What the report was scored on: the file's sha256, else its path (``None``: unknown).
    ground_truth: Optional[str] = None
    ground_truth_given: Optional[str] = None
    #: Scored class-agnostically (an rpn's proposals, or ``--class-agnostic``).
    class_agnostic: bool = False
    #: COCO's recall with 100 detections per image (an rpn's headline figure).
    ar100: Optional[float] = None

    @property
    def kind(self) -> str:
        """``keras``, ``tflite int8``, ``onnx nms``...: the format with its quantization
        and in-graph NMS ("-" unknown)."""
        if self.format is None:
            return "-"
        return (self.format + (f" {self.quantize}" if self.quantize else "")
                + (" nms" if self.nms else ""))


@dataclasses.dataclass
class CompareResult:
    """The rows read, their text table, the table file written (or None), and warnings
    about figures that do not compare (other ground truths or metrics)."""

    rows: list[ReportRow]
    table: str
    out: Optional[Path]
    notes: list[str] = dataclasses.field(default_factory=list)


def read_report_row(path: str | Path) -> ReportRow:
    """Read the headline figures of one ``eval-map`` report.json.

    COCO reports give ``AP`` (0.50:0.95), ``AP50`` and ``AR100``; VOC reports give
    ``mAP`` as AP50.
    The ``model`` block (written in ``--model`` mode) gives size and speed.

    Raises:
        DataError: a missing or invalid file, or JSON that is not an eval-map report.
    """
    path = Path(path)
    report = read_json(path, "report")
    if isinstance(report, list):
        raise DataError("detections (a COCO results list), not an eval-map report",
                        path=path)
    if not isinstance(report, dict) or not ("AP50" in report or "mAP" in report):
        raise DataError("not an eval-map report (no AP50 or mAP)", path=path)
    model = report.get("model") or {}
    return ReportRow(
        name=path.stem.removesuffix("_report"),
        metric=str(report.get("metric", "coco")),
        ap=report.get("AP"),
        ap50=report.get("AP50", report.get("mAP")),
        model=model.get("name"),
        width=model.get("width"),
        params=model.get("params"),
        weights_mb=model.get("weights_mb"),
        ms_per_image=model.get("ms_per_image"),
        format=model.get("format", "keras" if model else None),
        quantize=model.get("quantize"),
        nms=bool(model.get("nms", False)),
        ground_truth=_ground_truth(report, path),
        ground_truth_given=_ground_truth_given(report),
        class_agnostic=bool((report.get("params") or {}).get("class_agnostic", False)),
        ar100=report.get("AR100"),
    )


def _ground_truth_given(report: dict) -> Optional[str]:
    """The ground truth as the report records it (the path typed), ``None``: unknown."""
    inputs = report.get("inputs")
    value = inputs.get("ground_truth") if isinstance(inputs, dict) else None
    return value if isinstance(value, str) and value else None


def _ground_truth(report: dict, path: Path) -> Optional[str]:
    """The ground truth a report was scored on: its file's sha256 as the report's manifest
    records it, else (a folder) its full path there, else its path as given (normalized);
    ``None``: unknown."""
    value = _ground_truth_given(report)
    if value is None:
        return None
    try:
        manifest = read_manifest(path)
    except ArtifactError:
        manifest = {}
    digests, full = manifest.get("inputs"), manifest.get("input_paths")
    digest = digests.get(value) if isinstance(digests, dict) else None
    if isinstance(digest, str):
        return f"sha256:{digest}"
    resolved = full.get(value) if isinstance(full, dict) else None
    return resolved if isinstance(resolved, str) else os.path.normpath(value)


def comparable(row: ReportRow, base: ReportRow) -> bool:
    """Whether ``row``'s figures compare with ``base``'s: the same metric, both per class
    or both class-agnostic, and the same ground truth where both reports record it."""
    return row.metric == base.metric and row.class_agnostic == base.class_agnostic and (
        row.ground_truth is None or base.ground_truth is None
        or row.ground_truth == base.ground_truth)


def comparison_notes(rows: list[ReportRow]) -> list[str]:
    """Warnings for the rows that do not compare with the first (their ``dAP`` is left
    out)."""
    if not rows:
        return []
    base, notes = rows[0], []
    for row in rows[1:]:
        if row.metric != base.metric:
            notes.append(f"{row.name} is scored with --metric {row.metric}, {base.name} with "
                         f"{base.metric}: their AP50 columns are different figures (no dAP)")
        elif row.class_agnostic != base.class_agnostic:
            agnostic, classed = (row, base) if row.class_agnostic else (base, row)
            notes.append(f"{agnostic.name} is scored class-agnostically (proposals: judge "
                         f"an rpn by its AR), {classed.name} per class: no dAP")
        elif not comparable(row, base):
            notes.append(f"{row.name} is scored on other ground truth than {base.name} "
                         f"({row.ground_truth_given} and {base.ground_truth_given}): no dAP")
    return notes


def with_deltas(rows: list[ReportRow]) -> list[ReportRow]:
    """Set each row's ``delta_ap``: its AP minus the first row's (when both are known and
    the rows compare: :func:`comparable`)."""
    base = rows[0] if rows else None
    for row in rows:
        row.delta_ap = (None if base is None or base.ap is None or row.ap is None
                        or not comparable(row, base) else row.ap - base.ap)
    return rows


def row_cells(row: ReportRow) -> list[str]:
    """The row as display strings, one per column of :data:`COLUMNS` ("-" if unknown)."""
    def cell(value, spec):
        return "-" if value is None else format(value, spec)

    return [row.name, row.model or "-", cell(row.width, ".3g"), row.kind,
            cell(row.ap, ".3f"), cell(row.delta_ap, "+.3f"), cell(row.ap50, ".3f"),
            cell(row.ar100, ".3f"), cell(row.params, ","), cell(row.weights_mb, ".2f"),
            cell(row.ms_per_image, ".1f")]


def format_table(rows: list[ReportRow]) -> str:
    """Plain-text table of ``rows`` (for a Makefile target's output file)."""
    cells = [list(COLUMNS)] + [row_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(w) if i < TEXT_COLUMNS else text.rjust(w)
                       for i, (text, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(kw_only=True)
class Options:
    """The options of ``compare``."""

    reports: list[Path] = argument("eval-map report.json files.", role="input")
    out: Optional[Path] = option(None, "Also write the table here (with its manifest).",
                                 role="output")


def run(opts: Options, progress: Progress = SILENT) -> CompareResult:
    """Read each report's headline figures; with ``opts.out`` write the table there.

    Raises:
        UsageError: no reports.
        DataError: a report that is missing, invalid or not from eval-map.
    """
    del progress  # a few small JSON files
    if not opts.reports:
        raise UsageError("give at least one report.json")
    # eval-map --weights writes NAME.detections.json beside NAME.json: `compare ev/*.json`
    # names them too, and is read as the reports it names
    reports = [path for path in opts.reports if not _detections_beside_report(Path(path))]
    skipped = [path for path in opts.reports if path not in reports]
    if not reports:
        raise UsageError("no report.json among the files given (only the detections "
                         "eval-map writes beside its reports)")
    rows = [read_report_row(path) for path in reports]
    for row, name in zip(rows, distinct_names([Path(path) for path in reports])):
        row.name = name
    rows = with_deltas(rows)
    table = format_table(rows)
    out = Path(opts.out) if opts.out is not None else None
    if out is not None:
        write_text(out, table)
        write_manifest(out, command=COMMAND, config=as_config(opts), inputs=reports,
                       extra={"rows": [dataclasses.asdict(row) for row in rows]})
    notes = [f"skipped {path}: the detections of the report beside it" for path in skipped]
    return CompareResult(rows=rows, table=table, out=out,
                         notes=notes + comparison_notes(rows))


def distinct_names(paths: list[Path]) -> list[str]:
    """Row names: each report's stem (``teacher_report.json`` -> ``teacher``), with as many
    of its folders as tell apart reports of the same name (``yolov2/eval``, ``rpn/eval``)."""
    stems = [path.stem.removesuffix("_report") for path in paths]
    names = list(stems)
    deepest = max((len(path.parent.parts) for path in paths), default=0)
    for depth in range(1, deepest + 1):
        clashing = {name for name in names if names.count(name) > 1}
        if not clashing:
            break
        names = ["/".join([*path.parent.parts[-depth:], stem]) if name in clashing else name
                 for name, path, stem in zip(names, paths, stems)]
    return names


def _detections_beside_report(path: Path) -> bool:
    """Whether ``path`` is ``NAME.detections.json`` that eval-map wrote beside ``NAME.json``."""
    suffix = ".detections.json"
    return (path.name.endswith(suffix)
            and path.with_name(path.name[:-len(suffix)] + ".json").is_file())
