"""The doctor's figures as PNG (matplotlib, an optional extra: ``pip install 'detkit[plots]'``).

``box_sizes.png`` (width against height at the input, log-log, with the anchors),
``box_side_hist.png`` (sqrt(area) with the strides), ``aspect_hist.png`` (w / h) and
``class_counts.png`` (boxes per class). Without matplotlib nothing is drawn and
:func:`write_plots` says so in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from detkit.artifacts import atomic_path
from detkit.doctor.boxes import side_edges

#: File names written into the output folder.
SIZES_FILE, SIDE_FILE, ASPECT_FILE, CLASSES_FILE = (
    "box_sizes.png", "box_side_hist.png", "aspect_hist.png", "class_counts.png")
PLOT_FILES = (SIZES_FILE, SIDE_FILE, ASPECT_FILE, CLASSES_FILE)
#: The scatter draws at most this many boxes (a seeded sample).
SCATTER_POINTS = 20_000
#: Figure size in inches and resolution.
FIGSIZE, DPI = (7, 5), 100
#: What :func:`write_plots` says when matplotlib is missing.
NO_MATPLOTLIB = ("plots skipped: matplotlib is not installed "
                 "(pip install 'detkit[plots]' or pip install matplotlib)")


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or ``None`` when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return path


def write_plots(wh: np.ndarray, class_counts: Sequence[int], class_names: Sequence[str],
                anchors: np.ndarray, suggested: np.ndarray | None, strides: Sequence[int],
                input_size: int, out_dir: str | os.PathLike,
                seed: int = 0) -> tuple[list[Path], str | None]:
    """Draw the figures into ``out_dir``.

    Args:
        wh: ``(N, 2)`` input-pixel box sizes; class_counts: boxes per class.
        anchors, suggested: ``(K, 2)`` anchors to mark (``suggested`` may be ``None``).
        strides: drawn on the side histogram; input_size: the axis limit (or the
            largest anchor's side, when larger).
        seed: the scatter's sample.

    Returns:
        ``(written paths, a note or None)``; without matplotlib ``([], note)``.
    """
    plt = _pyplot()
    if plt is None:
        return [], NO_MATPLOTLIB
    out_dir = Path(out_dir)
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    written = [_sizes(plt, wh, anchors, suggested, input_size, out_dir / SIZES_FILE, seed),
               _side(plt, wh, strides, input_size, out_dir / SIDE_FILE),
               _aspect(plt, wh, out_dir / ASPECT_FILE),
               _classes(plt, class_counts, class_names, out_dir / CLASSES_FILE)]
    return written, None


def _sizes(plt, wh: np.ndarray, anchors: np.ndarray, suggested: np.ndarray | None,
           input_size: int, path: Path, seed: int) -> Path:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    shown = wh
    if len(wh) > SCATTER_POINTS:
        pick = np.random.default_rng(seed).choice(len(wh), SCATTER_POINTS, replace=False)
        shown = wh[np.sort(pick)]
    ax.scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.3, linewidths=0, label="boxes")
    ax.scatter(anchors[:, 0], anchors[:, 1], marker="x", s=60, color="red", label="anchors")
    if suggested is not None:
        ax.scatter(suggested[:, 0], suggested[:, 1], marker="+", s=80, color="green",
                   label="k-means suggestion")
    # The input side bounds the boxes, not the anchors (COCO's at a small input): the
    # axes reach the largest anchor too, so that every anchor is drawn.
    marked = anchors if suggested is None else np.concatenate([anchors, suggested])
    top = max(float(input_size), float(np.max(marked, initial=0.0))) * 1.1
    ax.set(xscale="log", yscale="log", xlim=(0.8, top), ylim=(0.8, top),
           xlabel="width (input px)",
           ylabel="height (input px)",
           title=f"box sizes at input {input_size} ({len(wh)} boxes"
                 + (f", {len(shown)} drawn)" if len(shown) < len(wh) else ")"))
    ax.legend(loc="upper left")
    ax.grid(True, which="major", alpha=0.3)
    return _save(plt, fig, path)


def _side(plt, wh: np.ndarray, strides: Sequence[int], input_size: int,
          path: Path) -> Path:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    side = np.sqrt(wh[:, 0] * wh[:, 1])
    edges = np.geomspace(1.0, side_edges(input_size)[-1], 41)
    ax.hist(side, bins=edges)
    for stride in strides:
        ax.axvline(stride, color="red", linestyle="--", alpha=0.6)
        ax.text(stride, ax.get_ylim()[1] * 0.95, f" stride {stride}", color="red",
                va="top", fontsize=8)
    ax.set(xscale="log", xlabel="sqrt(w x h) (input px)", ylabel="boxes",
           title=f"box size at input {input_size}")
    return _save(plt, fig, path)


def _aspect(plt, wh: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    log_aspect = np.log2(wh[:, 0] / wh[:, 1]) if len(wh) else np.zeros(0)
    ax.hist(np.clip(log_aspect, -4, 4), bins=np.linspace(-4, 4, 33))  # outliers at the ends
    ticks = np.arange(-4, 5)
    ax.set_xticks(ticks, [f"{2.0 ** t:g}" for t in ticks])
    ax.set(xlabel="aspect w / h (log scale)", ylabel="boxes", title="box aspect ratios")
    return _save(plt, fig, path)


def _classes(plt, counts: Sequence[int], names: Sequence[str], path: Path) -> Path:
    height = max(FIGSIZE[1], 0.18 * len(names) + 1)
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], height))
    # A margin for the longest name (tight_layout would cost a second on 80 classes).
    longest = max((len(str(n)) for n in names), default=1)
    fig.subplots_adjust(left=min(0.45, 0.04 + 0.075 * longest / FIGSIZE[0]), right=0.97,
                        top=1 - 0.5 / height, bottom=0.6 / height)
    positions = np.arange(len(names))
    ax.barh(positions, counts)
    ax.set_yticks(positions, [str(n) for n in names], fontsize=8)
    ax.margins(y=0.5 / max(len(names), 1))
    ax.invert_yaxis()
    ax.set(xlabel="boxes", title="boxes per class")
    return _save(plt, fig, path)


def plot_inputs(report: dict[str, Any]) -> tuple[list[int], list[str]]:
    """Boxes per class and class names from a report's ``classes`` section."""
    return ([row["boxes"] for row in report["classes"]],
            [row["name"] for row in report["classes"]])
