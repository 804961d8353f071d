"""``detkit kmeans-anchors DATA``: anchors for a dataset by IoU k-means, written with their quality.

Writes three files: ``OUT`` (``w,h, w,h, ...`` in input pixels, sorted by area, the
keras-yolo3 format), ``OUT`` with the suffix ``.json`` (e.g. ``anchors/mine.json`` beside
``anchors/mine.txt``: anchors, avg_iou, bpr, anchors_per_target, fitness, n_boxes, k,
input_size, seed, elapsed_s and the other settings), and the sidecar
``OUT.manifest.json``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detkit import kmeans
from detkit.anchors import (anchor_masks, format_anchors, load_anchors, parse_anchors,
                            sort_by_area, strides)
from detkit.artifacts import (atomic_path, check_side_file, json_text, manifest_path,
                              write_manifest)
from detkit.commands.groups import DatasetOptions, InputOptions, SeedOptions, load_data
from detkit.errors import DataError
from detkit.options import as_config, option, retold
from detkit.progress import SILENT, Progress
from detkit.tables import TextTable

COMMAND = "kmeans-anchors"
#: The manifest's key naming the JSON report written beside the anchors file.
REPORT_KEY = "report"
#: The options recorded in the JSON report (beside the quality figures).
REPORT_SETTINGS = ("k", "input_size", "seed", "resize", "center", "restarts", "max_iter",
                   "refine", "evolve", "anchor_t", "min_size")


@dataclasses.dataclass
class KMeansAnchorsResult:
    """What :func:`kmeans_anchors` computed and wrote.

    Attributes:
        anchors: ``(k, 2)`` float32 anchors as written (input pixels, sorted by area).
        quality: their quality on the clustered boxes.
        compare_anchors, compare_quality: the ``--compare`` file's anchors and quality.
        n_boxes: boxes clustered (after dropping tiny ones).
        n_tiny: boxes dropped for a side under ``min_size`` input pixels.
        fixes: the dataset reader's summary of repaired boxes (or None).
        settings: the resolved options (k, input_size, seed, ...).
        evolve: the evolution outcome, when ``evolve > 0``.
        elapsed_s: seconds spent clustering and evolving.
        out, json_path, manifest_path: the files written.
    """

    anchors: np.ndarray
    quality: kmeans.AnchorQuality
    n_boxes: int
    n_tiny: int
    settings: dict[str, Any]
    elapsed_s: float
    out: Path
    json_path: Path
    manifest_path: Path
    fixes: Optional[str] = None
    evolve: Optional[kmeans.EvolveResult] = None
    compare_path: Optional[Path] = None
    compare_anchors: Optional[np.ndarray] = None
    compare_quality: Optional[kmeans.AnchorQuality] = None

    def warnings(self) -> list[str]:
        """Repaired and dropped boxes, one line each."""
        lines = [self.fixes] if self.fixes else []
        if self.n_tiny:
            lines.append(f"dropped {self.n_tiny} boxes with a side under "
                         f"{self.settings['min_size']:g} px at input "
                         f"{self.settings['input_size']}")
        return lines

    def tables(self) -> list[TextTable]:
        """The anchors (size, area, the stride each serves) and their quality (beside the
        ``--compare`` file's)."""
        scales = _scales(len(self.anchors))
        anchors = TextTable(f"{len(self.anchors)} anchors for {self.n_boxes} boxes at input "
                            f"{self.settings['input_size']}", ("#", "w", "h", "area", "stride"))
        for index, (w, h) in enumerate(self.anchors):
            anchors.rows.append((str(index), f"{w:g}", f"{h:g}", f"{w * h:g}",
                                 str(scales.get(index, "-"))))
        compared = self.compare_quality is not None
        quality = TextTable("quality", ("metric", "these anchors")
                            + ((self.compare_path.name,) if compared else ()))
        for name in ("avg_iou", "bpr", "anchors_per_target", "fitness"):
            values = (self.quality,) + ((self.compare_quality,) if compared else ())
            quality.rows.append((name, *(f"{getattr(q, name):.4f}" for q in values)))
        return [anchors, quality]

    def summary_lines(self) -> list[str]:
        """The evolution's outcome (when run) and the files written."""
        lines = []
        if self.evolve is not None:
            lines.append(f"evolution: {self.evolve.accepted} of {self.evolve.generations} "
                         f"mutations kept, fitness {self.evolve.start_fitness:.4f} -> "
                         f"{self.evolve.fitness:.4f}")
        lines.append(f"wrote {self.out} and {self.json_path} ({self.elapsed_s:.2f} s)")
        return lines


def _scales(k: int) -> dict[int, int]:
    """Anchor index -> the stride it serves (empty when ``k`` is not 3 per scale)."""
    if k % 3 or k < 3 or k > 15:
        return {}
    return {index: stride for mask, stride in zip(anchor_masks(k), strides(k))
            for index in mask}


def json_path_for(out: str | os.PathLike) -> Path:
    """The JSON report beside an anchors file: ``anchors/mine.txt`` -> ``anchors/mine.json``."""
    out = Path(out)
    return out.with_suffix(".json") if out.suffix != ".json" else out.with_name(
        out.name + ".report.json")


def cluster_sizes(wh: np.ndarray, *, k: int = 9, seed: int = 0,
                  restarts: int = kmeans.DEFAULT_RESTARTS, center: str = "median",
                  max_iter: int = kmeans.DEFAULT_MAX_ITER, refine: int = kmeans.DEFAULT_REFINE,
                  evolve: int = 0, anchor_t: float = kmeans.DEFAULT_ANCHOR_T,
                  min_size: float = kmeans.MIN_BOX_SIZE, decimals: int = 0,
                  ) -> tuple[np.ndarray, np.ndarray, int, Optional[kmeans.EvolveResult]]:
    """Anchors for ``(N, 2)`` input-pixel sizes, rounded as they will be written.

    Returns:
        ``(anchors (k, 2) float32, kept sizes (M, 2), number of tiny boxes, evolution)``.
    """
    wh = kmeans.check_sizes(np.asarray(wh, dtype=np.float32).reshape(-1, 2))
    if not len(wh):
        raise DataError("the dataset has no boxes to cluster")
    kept, n_tiny = kmeans.drop_tiny(wh, min_size)
    if not len(kept):
        raise DataError(f"all {len(wh)} boxes are smaller than --min-size {min_size:g} px "
                        f"at this input size")
    result = kmeans.iou_kmeans(kept, k, seed=seed, restarts=restarts, center=center,
                               max_iter=max_iter, refine=refine)
    anchors, evolved = result.anchors, None
    if evolve:
        evolved = kmeans.evolve_anchors(kept, anchors, evolve, seed=seed, anchor_t=anchor_t,
                                        min_size=max(min_size, 1e-3))
        anchors = evolved.anchors
    # Round as the file will store them, then sort again (rounding can swap areas).
    written = parse_anchors(format_anchors(anchors, decimals))
    return sort_by_area(written), kept, n_tiny, evolved


@dataclasses.dataclass(kw_only=True)
class Options(DatasetOptions, InputOptions, SeedOptions):
    """The options of ``kmeans-anchors``."""

    input_size: int = retold(InputOptions, "input_size", "Network input side in pixels, a "
                             "multiple of 32: the box sizes are clustered as they reach it.")
    k: int = option(9, "Number of anchors (9: yolov3, 6: yolov3-tiny, 5: yolov2, 27: "
                       "retinanet, 9: rpn).", integer=True, low=1)
    out: Path = option(Path("anchors.txt"), "Anchors file to write ('w,h, w,h, ...'); a "
                       ".json report with the same stem goes beside it.", role="output",
                       writes=lambda out: [json_path_for(out), manifest_path(out)])
    resize: str = option("letterbox", "How boxes reach the input: letterbox (as training) "
                         "or stretch.", choices=kmeans.RESIZE_MODES)
    center: str = option("median", "Cluster center: median (robust) or mean.",
                         choices=kmeans.CENTERS)
    restarts: int = option(kmeans.DEFAULT_RESTARTS,
                           "k-means++ seeded runs; the best mean IoU wins.",
                           integer=True, low=1)
    max_iter: int = option(kmeans.DEFAULT_MAX_ITER, "Lloyd iterations at most per run.",
                           integer=True, low=1)
    refine: int = option(kmeans.DEFAULT_REFINE, "Sweeps that move each center to its "
                         "boxes' IoU-maximizing size (0: plain median/mean centers).",
                         integer=True, low=0)
    evolve: int = option(0, "Generations of YOLOv5-style evolution of the ratio fitness "
                         "(0: none).", integer=True, low=0)
    anchor_t: float = option(kmeans.DEFAULT_ANCHOR_T,
                             "Side-ratio threshold of BPR and fitness.", above=1)
    min_size: float = option(kmeans.MIN_BOX_SIZE,
                             "Drop boxes with a side under this many input pixels.", low=0)
    decimals: int = option(0, "Digits written per value (0: integers, as keras-yolo3).",
                           integer=True, low=0, high=6)
    compare: Optional[Path] = option(None, "An existing anchors file (e.g. the COCO "
                                     "defaults) to measure side by side.", role="input")


def run(opts: Options, progress: Progress = SILENT) -> KMeansAnchorsResult:
    """Cluster a dataset's box sizes (as the network input sees them) into anchors.

    Writes ``opts.out``, its JSON report (:func:`json_path_for`) and its manifest.

    Raises:
        DataError: unreadable dataset, no boxes, bad box sizes, bad compare file.
        UsageError: ``k`` above the number of distinct sizes.
    """
    del progress  # clustering takes well under a second per 100k boxes
    data, compare = opts.data, opts.compare
    out = Path(opts.out)
    json_path = json_path_for(out)
    check_side_file("--out", out, json_path, key=REPORT_KEY)
    compare_anchors = load_anchors(compare) if compare is not None else None
    dataset = load_data(opts)
    wh = kmeans.input_box_sizes(dataset.records, opts.input_size, opts.resize)
    if not len(wh):
        raise DataError("the dataset has no boxes to cluster", path=data)

    start = time.perf_counter()
    anchors, kept, n_tiny, evolved = cluster_sizes(
        wh, k=opts.k, seed=opts.seed, restarts=opts.restarts, center=opts.center,
        max_iter=opts.max_iter, refine=opts.refine, evolve=opts.evolve,
        anchor_t=opts.anchor_t, min_size=opts.min_size, decimals=opts.decimals)
    elapsed = time.perf_counter() - start
    quality = kmeans.anchor_quality(kept, anchors, opts.anchor_t)
    compare_quality = (kmeans.anchor_quality(kept, compare_anchors, opts.anchor_t)
                       if compare_anchors is not None else None)

    settings = {key: getattr(opts, key) for key in REPORT_SETTINGS}
    report = {"anchors": anchors.tolist(), **quality.as_dict(), "n_tiny": n_tiny,
              **settings, "elapsed_s": round(elapsed, 4)}
    if evolved is not None:
        report["evolve_accepted"] = evolved.accepted
    if compare_quality is not None:
        report["compare"] = {"path": str(compare), "anchors": compare_anchors.tolist(),
                             **compare_quality.as_dict()}
    inputs = [data] + ([compare] if compare is not None else [])
    # The manifest first, then the report, then the anchors file (the make target): a
    # failure on the way (a full disk) leaves the previous three files as they were.
    with atomic_path(out) as tmp, atomic_path(json_path) as tmp_json:
        tmp_json.write_text(json_text(report), encoding="utf-8")
        tmp.write_text(format_anchors(anchors, opts.decimals) + "\n", encoding="utf-8")
        manifest = write_manifest(out, command=COMMAND, config=as_config(opts),
                                  inputs=inputs, seed=opts.seed, data=tmp,
                                  extra={"anchors": anchors.tolist(),
                                         "input_size": opts.input_size,
                                         "quality": quality.as_dict(),
                                         REPORT_KEY: json_path.name})
    fixes = getattr(dataset, "fixes", None)
    summary = fixes.summary() if fixes is not None and hasattr(fixes, "summary") else None
    return KMeansAnchorsResult(
        anchors=anchors, quality=quality, n_boxes=len(kept), n_tiny=n_tiny,
        settings=settings, elapsed_s=elapsed, out=out, json_path=json_path,
        manifest_path=manifest, fixes=summary, evolve=evolved,
        compare_path=Path(compare) if compare is not None else None,
        compare_anchors=compare_anchors, compare_quality=compare_quality)
