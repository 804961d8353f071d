""":func:`diagnose`: every figure of a dataset health report, and what they mean."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Sequence

import numpy as np

from detkit.data.dataset import Dataset
from detkit.doctor.anchor_fit import anchor_fit
from detkit.doctor.boxes import (box_table, class_statistics, image_size_statistics,
                                 letterbox_table, rounded, size_statistics,
                                 unit_range_boxes)
from detkit.doctor.findings import FATAL, Finding, Thresholds, findings
from detkit.doctor.images import check_images
from detkit.kmeans import DEFAULT_ANCHOR_T
from detkit.progress import SILENT, Progress

#: Layout version of ``report.json``.
REPORT_VERSION = 1
#: Formats whose readers take image sizes from the image headers.
SIZES_FROM_HEADERS = ("yolo3", "yolo")


@dataclasses.dataclass
class Diagnosis:
    """A dataset's health report.

    Attributes:
        report: every figure, as written to ``report.json``.
        findings: what the figures mean, fatal ones first.
        wh: ``(N, 2)`` float32 input-pixel sizes of the boxes training keeps.
        classes: ``(N,)`` int64 their class ids.
    """

    report: dict[str, Any]
    findings: list[Finding]
    wh: np.ndarray
    classes: np.ndarray

    @property
    def fatal(self) -> list[Finding]:
        """The fatal findings (the dataset is not fit for training)."""
        return [f for f in self.findings if f.level == FATAL]


def _balance(classes: list[dict[str, Any]]) -> dict[str, Any]:
    present = [row for row in classes if row["boxes"] > 0]
    if len(present) < 2:
        return {"imbalance": None, "most": None, "least": None}
    most = max(present, key=lambda row: row["boxes"])
    least = min(present, key=lambda row: row["boxes"])
    return {"imbalance": round(most["boxes"] / least["boxes"], 2), "most": most["name"],
            "least": least["name"]}


def diagnose(dataset: Dataset, *, input_size: int, anchors: np.ndarray,
             strides: Sequence[int], check: str = "header",
             limits: Thresholds = Thresholds(), anchor_t: float = DEFAULT_ANCHOR_T,
             seed: int = 0, suggest: bool = True,
             settings: Mapping[str, Any] | None = None,
             progress: Progress = SILENT) -> Diagnosis:
    """Measure a loaded dataset as training would see it.

    Args:
        dataset: the dataset (its ``fixes`` hold the reader's repairs).
        input_size: network input side (boxes are letterboxed to it).
        anchors: ``(K, 2)`` anchors in input pixels; strides: the family's strides.
        check: how deep to check the image files (:data:`detkit.doctor.images.
            CHECK_MODES`).
        limits: thresholds of the findings.
        anchor_t: side-ratio threshold of BPR; seed: seed of the k-means suggestion.
        suggest: compute the k-means suggestion.
        settings: more settings to record in the report (model, anchors file).
        progress: reports the image pass.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 4)
        clock = now

    records = dataset.records
    table = box_table(records)
    boxed = letterbox_table(table, input_size)
    kept = boxed.kept & ~table.crowd     # as training sees them (no crowd regions)
    wh = boxed.wh[kept]
    lap("boxes")
    files = check_images([r.image_path for r in records], table.widths, table.heights,
                         check, sizes_from_headers=dataset.format in SIZES_FROM_HEADERS,
                         progress=progress)
    lap("images")
    fixes = dataset.fixes
    classes = class_statistics(table, boxed, kept, dataset.class_names)
    with_boxes = int((table.counts > 0).sum())
    report: dict[str, Any] = {
        "format_version": REPORT_VERSION,
        "dataset": {"path": str(dataset.path), "format": dataset.format,
                    "num_classes": len(dataset.class_names),
                    "class_names": list(dataset.class_names)},
        "settings": {"input_size": input_size, "check_images": check,
                     "anchor_t": anchor_t, "seed": seed,
                     **dataclasses.asdict(limits), **(settings or {})},
        "images": {
            "records": table.num_images, "with_boxes": with_boxes,
            "without_boxes": table.num_images - with_boxes,
            "repeated_entries": table.num_images - len(files.paths),
            **files.summary(),
            "sizes": image_size_statistics(table),
        },
        "boxes": {
            "annotated": table.num_boxes + fixes.dropped,
            "after_reader": table.num_boxes,
            "kept": int(kept.sum()),
            "reader": {"dropped_degenerate": fixes.dropped_degenerate,
                       "dropped_outside": fixes.dropped_outside,
                       "clipped": fixes.clipped, "examples": list(fixes.examples)},
            "letterbox": {"clipped": int(boxed.clipped.sum()),
                          "dropped": int((~boxed.kept).sum())},
            "crowd": int(table.crowd.sum()), "difficult": int(table.difficult.sum()),
            "unit_range": unit_range_boxes(table),
            "per_image": {"mean": rounded(table.num_boxes / max(table.num_images, 1)),
                          "max": int(table.counts.max(initial=0))},
        },
        "sizes": size_statistics(wh, input_size),
        "classes": classes,
        "balance": _balance(classes),
    }
    lap("statistics")
    report["anchors"] = anchor_fit(wh, anchors, strides=strides, anchor_t=anchor_t,
                                   seed=seed, suggest=suggest)
    lap("anchors")
    found = findings(report, limits)
    report["findings"] = [f.as_dict() for f in found]
    report["fatal"] = any(f.level == FATAL for f in found)
    report["timings_s"] = timings
    return Diagnosis(report=report, findings=found, wh=wh, classes=table.classes[kept])
