"""PR curves and F1-confidence curves as PNG (matplotlib, an optional extra: ``[plots]``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detkit.artifacts import atomic_path
from detkit.errors import UsageError
from detkit.evaluate.curves import ScoredMatches, cumulative, f1_at

#: File names written into the plots folder.
PR_FILE = "pr_curve.png"
F1_FILE = "f1_curve.png"
#: Confidence grid of the F1 curves.
CONFIDENCE_GRID = np.linspace(0.0, 1.0, 1001)
#: Classes drawn with their own line (beyond that, only the mean / pooled curve).
MAX_LABELED_CLASSES = 20
#: Figure size in inches and resolution.
FIGSIZE, DPI = (7, 5), 120


def require_pyplot():
    """matplotlib's pyplot on the Agg backend, or a UsageError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plots needs matplotlib, which is not installed: "
                         "pip install 'detkit[plots]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write a figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


def write_plots(matches: ScoredMatches, class_names: list[str],
                out_dir: str | os.PathLike, title: str = "") -> list[Path]:
    """Write ``pr_curve.png`` and ``f1_curve.png`` into ``out_dir``.

    Args:
        matches: scored TP/FP per class at one IoU threshold.
        class_names: ``K`` names.
        out_dir: folder (created).
        title: prefix of the figure titles (e.g. the metric).

    Returns:
        The written paths.
    """
    plt = require_pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labeled = len(class_names) <= MAX_LABELED_CLASSES
    line = {"linewidth": 1.0, "alpha": 0.8}

    fig, ax = plt.subplots(figsize=FIGSIZE)
    for k, name in enumerate(class_names):
        scores, tp = matches.of_class(k)
        if matches.num_gt[k] == 0:
            continue
        _, _, _, precision, recall = cumulative(scores, tp, int(matches.num_gt[k]))
        ax.plot(np.r_[0, recall], np.r_[1, precision], label=name if labeled else None, **line)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{title} precision-recall at IoU {matches.iou:g}".strip())
    if labeled:
        ax.legend(fontsize="small", loc="lower left")
    paths = [save_figure(fig, out_dir / PR_FILE)]
    plt.close(fig)

    fig, ax = plt.subplots(figsize=FIGSIZE)
    for k, name in enumerate(class_names):
        scores, tp = matches.of_class(k)
        ax.plot(CONFIDENCE_GRID, f1_at(scores, tp, int(matches.num_gt[k]), CONFIDENCE_GRID),
                label=name if labeled else None, **line)
    scores, tp, num_gt = matches.pooled()
    pooled = f1_at(scores, tp, num_gt, CONFIDENCE_GRID)
    best = int(np.argmax(pooled))
    ax.plot(CONFIDENCE_GRID, pooled, color="black", linewidth=2.5,
            label=f"all classes: F1 {pooled[best]:.2f} at {CONFIDENCE_GRID[best]:.3f}")
    ax.set(xlabel="confidence", ylabel="F1", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{title} F1-confidence at IoU {matches.iou:g}".strip())
    ax.legend(fontsize="small", loc="lower left")
    paths.append(save_figure(fig, out_dir / F1_FILE))
    plt.close(fig)
    return paths
