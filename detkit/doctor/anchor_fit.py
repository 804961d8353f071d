"""How well anchors fit a dataset's boxes, and the k-means anchors it would suggest.

The boxes are the letterboxed input-pixel sizes training keeps; like ``kmeans-anchors``,
anchor quality is measured on those with both sides at least :data:`detkit.kmeans.
MIN_BOX_SIZE` pixels. The suggestion is :func:`detkit.kmeans.iou_kmeans` with fewer
restarts than ``kmeans-anchors`` on a sample of at most :data:`SUGGEST_SAMPLE` boxes (a
quick look; run that command for the file to train with), rounded to whole pixels as an
anchors file stores them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from detkit import kmeans
from detkit.anchors import format_anchors, parse_anchors, sort_by_area
from detkit.doctor.boxes import rounded

#: k-means restarts of the suggestion (``kmeans-anchors`` runs 10).
SUGGEST_RESTARTS = 3
#: The suggestion clusters a seeded sample of at most this many boxes (its quality is
#: measured on all of them).
SUGGEST_SAMPLE = 10_000


def _quality(quality: kmeans.AnchorQuality) -> dict[str, Any]:
    return {key: (rounded(value) if isinstance(value, float) else value)
            for key, value in quality.as_dict().items()}


def unfit_kinds(wh: np.ndarray, anchors: np.ndarray, anchor_t: float) -> dict[str, int]:
    """Boxes no anchor fits (a side ratio above ``anchor_t`` with every anchor), by why.

    ``too_small``: smaller in area than the smallest anchor; ``too_large``: larger than
    the largest; ``aspect``: in between, so their shape is what no anchor has.
    """
    wh64 = np.asarray(wh, np.float64).reshape(-1, 2)
    fits = np.zeros(len(wh64), bool)
    for anchor in np.asarray(anchors, np.float64).reshape(-1, 2):
        # kmeans.ratio_metric's arithmetic, one anchor at a time (no (N, K, 2) array).
        ratio = wh64 / anchor
        fits |= np.minimum(ratio, 1 / ratio).min(axis=1) > 1.0 / anchor_t
    unfit = ~fits
    area = wh64.prod(axis=1)
    anchor_area = np.asarray(anchors, np.float64).prod(axis=1)
    small = unfit & (area < anchor_area.min())
    large = unfit & (area > anchor_area.max())
    return {"too_small": int(small.sum()), "too_large": int(large.sum()),
            "aspect": int((unfit & ~small & ~large).sum())}


def anchor_fit(wh: np.ndarray, anchors: np.ndarray, *, strides: Sequence[int],
               anchor_t: float = kmeans.DEFAULT_ANCHOR_T, seed: int = 0,
               suggest: bool = True) -> dict[str, Any]:
    """The ``anchors`` section of the report.

    Args:
        wh: ``(N, 2)`` input-pixel sizes of the boxes training keeps.
        anchors: ``(K, 2)`` anchors in input pixels.
        strides: the family's output strides (the finest is the smallest).
        anchor_t: side-ratio threshold of BPR and fitness.
        seed: seed of the k-means suggestion.
        suggest: run the k-means suggestion.

    Returns:
        ``n_measured`` (boxes measured), ``n_under_min_size`` (boxes not measured),
        ``under_finest_stride`` (boxes with both sides under the finest stride: smaller
        than one cell of the finest output), ``quality`` (avg_iou, bpr,
        anchors_per_target, fitness), ``per_anchor`` (boxes whose best IoU is with each
        anchor), ``unfit`` (:func:`unfit_kinds`), ``suggested`` (anchors and quality, or
        ``None`` with ``suggested_note`` saying why).
    """
    wh = np.asarray(wh, np.float32).reshape(-1, 2)
    anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
    finest = min(strides)
    measured, n_small = kmeans.drop_tiny(wh, kmeans.MIN_BOX_SIZE)
    section: dict[str, Any] = {
        "anchors": anchors.tolist(), "k": len(anchors), "strides": list(strides),
        "anchor_t": anchor_t, "n_measured": int(len(measured)),
        "n_under_min_size": n_small, "min_size": kmeans.MIN_BOX_SIZE,
        "under_finest_stride": int((wh.max(axis=1, initial=0.0) < finest).sum()),
        "quality": None, "per_anchor": None, "unfit": None,
        "suggested": None, "suggested_note": None,
    }
    if not len(measured):
        section["suggested_note"] = "no boxes to measure"
        return section
    section["quality"] = _quality(kmeans.anchor_quality(measured, anchors, anchor_t))
    labels, _ = kmeans.best_iou(measured, anchors)
    section["per_anchor"] = np.bincount(labels, minlength=len(anchors)).tolist()
    section["unfit"] = unfit_kinds(measured, anchors, anchor_t)
    if not suggest:
        section["suggested_note"] = "not computed"
        return section
    sample = measured
    if len(measured) > SUGGEST_SAMPLE:
        rows = np.random.default_rng(seed).choice(len(measured), SUGGEST_SAMPLE,
                                                  replace=False)
        sample = measured[np.sort(rows)]
    distinct = len(kmeans.unique_sizes(sample)[0])
    if distinct < len(anchors):
        section["suggested_note"] = (f"the {len(anchors)} anchors are more than the boxes "
                                     f"have distinct sizes ({distinct} among "
                                     f"{len(sample)} boxes)")
        return section
    result = kmeans.iou_kmeans(sample, len(anchors), seed=seed, restarts=SUGGEST_RESTARTS)
    suggested = sort_by_area(parse_anchors(format_anchors(result.anchors)))
    section["suggested"] = {
        "anchors": suggested.tolist(), "seed": seed, "restarts": SUGGEST_RESTARTS,
        "sample": int(len(sample)),
        "quality": _quality(kmeans.anchor_quality(measured, suggested, anchor_t))}
    return section
