"""``kmeans-anchors``: anchors for a dataset by IoU k-means, written with their quality.

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
from detkit.anchors import format_anchors, load_anchors, parse_anchors, sort_by_area
from detkit.artifacts import write_json, write_manifest, write_text
from detkit.errors import DataError, UsageError

COMMAND = "kmeans-anchors"


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


def json_path_for(out: str | os.PathLike) -> Path:
    """The JSON report beside an anchors file: ``anchors/mine.txt`` -> ``anchors/mine.json``."""
    out = Path(out)
    return out.with_suffix(".json") if out.suffix != ".json" else out.with_name(
        out.name + ".report.json")


def _check(k: int, input_size: int, anchor_t: float, min_size: float, decimals: int) -> None:
    if input_size <= 0:
        raise UsageError(f"--input-size must be positive, got {input_size}")
    if k < 1:
        raise UsageError(f"--k must be at least 1, got {k}")
    if anchor_t <= 1:
        raise UsageError(f"--anchor-t must be greater than 1, got {anchor_t}")
    if min_size < 0:
        raise UsageError(f"--min-size must be 0 or more pixels, got {min_size}")
    if not 0 <= decimals <= 6:
        raise UsageError(f"--decimals must be between 0 and 6, got {decimals}")


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


def kmeans_anchors(data: str | os.PathLike, *, k: int = 9, input_size: int = 416,
                   seed: int = 0, out: str | os.PathLike = "anchors.txt",
                   resize: str = "letterbox", center: str = "median",
                   restarts: int = kmeans.DEFAULT_RESTARTS,
                   max_iter: int = kmeans.DEFAULT_MAX_ITER,
                   refine: int = kmeans.DEFAULT_REFINE, evolve: int = 0,
                   anchor_t: float = kmeans.DEFAULT_ANCHOR_T,
                   min_size: float = kmeans.MIN_BOX_SIZE, decimals: int = 0,
                   compare: str | os.PathLike | None = None, format: Optional[str] = None,
                   classes: str | os.PathLike | None = None,
                   config: Optional[dict[str, Any]] = None) -> KMeansAnchorsResult:
    """Cluster a dataset's box sizes (as the network input sees them) into anchors.

    Args:
        data: the dataset (any format :func:`detkit.data.dataset.load_dataset` reads).
        k: number of anchors (9 for yolov3, 6 for yolov3-tiny).
        input_size: network input side in pixels.
        seed: random seed (same seed, same anchors, byte for byte).
        out: the anchors file to write.
        resize: ``letterbox`` (as training) or ``stretch``.
        center, restarts, max_iter, refine: see :func:`detkit.kmeans.iou_kmeans`.
        evolve: generations of YOLOv5-style evolution (0: none).
        anchor_t: side-ratio threshold of BPR and fitness.
        min_size: boxes with a side under this many input pixels are dropped (counted).
        decimals: digits written per value (0: integers, as keras-yolo3).
        compare: an existing anchors file whose quality is reported alongside.
        format, classes: passed to the dataset reader.
        config: the resolved options, recorded in the manifest.

    Raises:
        DataError: unreadable dataset, no boxes, bad box sizes, bad compare file.
        UsageError: bad option values, ``k`` above the number of distinct sizes.
    """
    from detkit.data.dataset import load_dataset

    _check(k, input_size, anchor_t, min_size, decimals)
    if resize not in kmeans.RESIZE_MODES:
        raise UsageError(f"--resize must be one of {', '.join(kmeans.RESIZE_MODES)}, "
                         f"got {resize!r}")
    compare_anchors = load_anchors(compare) if compare is not None else None
    dataset = load_dataset(data, format=format, classes=classes)
    wh = kmeans.input_box_sizes(dataset.records, input_size, resize)
    if not len(wh):
        raise DataError("the dataset has no boxes to cluster", path=data)

    start = time.perf_counter()
    anchors, kept, n_tiny, evolved = cluster_sizes(
        wh, k=k, seed=seed, restarts=restarts, center=center, max_iter=max_iter,
        refine=refine, evolve=evolve, anchor_t=anchor_t, min_size=min_size,
        decimals=decimals)
    elapsed = time.perf_counter() - start
    quality = kmeans.anchor_quality(kept, anchors, anchor_t)
    compare_quality = (kmeans.anchor_quality(kept, compare_anchors, anchor_t)
                       if compare_anchors is not None else None)

    settings = {"k": k, "input_size": input_size, "seed": seed, "resize": resize,
                "center": center, "restarts": restarts, "max_iter": max_iter,
                "refine": refine, "evolve": evolve, "anchor_t": anchor_t,
                "min_size": min_size}
    out = Path(out)
    json_path = json_path_for(out)
    report = {"anchors": anchors.tolist(), **quality.as_dict(), "n_tiny": n_tiny,
              **settings, "elapsed_s": round(elapsed, 4)}
    if evolved is not None:
        report["evolve_accepted"] = evolved.accepted
    if compare_quality is not None:
        report["compare"] = {"path": str(compare), "anchors": compare_anchors.tolist(),
                             **compare_quality.as_dict()}
    write_json(json_path, report)
    inputs = [data] + ([compare] if compare is not None else [])
    manifest = write_manifest(out, command=COMMAND, config=config or {
        "data": str(data), **settings, "out": str(out)}, inputs=inputs, seed=seed,
        extra={"anchors": anchors.tolist(), "input_size": input_size,
               "quality": quality.as_dict(), "report": json_path.name})
    # The anchors file last: it is the make target, so it must be the newest file.
    write_text(out, format_anchors(anchors, decimals) + "\n")
    fixes = getattr(dataset, "fixes", None)
    summary = fixes.summary() if fixes is not None and hasattr(fixes, "summary") else None
    return KMeansAnchorsResult(
        anchors=anchors, quality=quality, n_boxes=len(kept), n_tiny=n_tiny,
        settings=settings, elapsed_s=elapsed, out=out, json_path=json_path,
        manifest_path=manifest, fixes=summary, evolve=evolved,
        compare_path=Path(compare) if compare is not None else None,
        compare_anchors=compare_anchors, compare_quality=compare_quality)
