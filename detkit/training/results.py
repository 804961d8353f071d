"""End-of-run pictures: ``results.png`` and the PR / F1 curves of ``best.weights.h5``.

``results.png``: one panel per loss term (training solid, validation dashed), the
learning rate, and with ``--eval-every`` the mAP figures, against the 1-based epoch.
With ``--val``, ``best.weights.h5`` is evaluated once more on the validation images and
:func:`detkit.evaluate.plots.write_plots` draws ``pr_curve.png`` and ``f1_curve.png``
(IoU 0.5), as ``eval-map --plots`` does. matplotlib is an optional extra: without it the
run gets one note and no pictures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from detkit.errors import UsageError
from detkit.evaluate.plots import F1_FILE, PR_FILE, require_pyplot, save_figure, write_plots
from detkit.models import build_model
from detkit.training.monitor import MAP_KEYS

if TYPE_CHECKING:
    from detkit.training.run import RunContext

#: The results figure.
RESULTS_FILE = "results.png"
#: Every picture a run may write into its directory.
PLOT_FILES = (RESULTS_FILE, PR_FILE, F1_FILE)
#: Panels per row of results.png; inches per panel; resolution.
COLUMNS, PANEL_INCHES, DPI = 4, 3.0, 100
#: Message when matplotlib is missing.
NO_MATPLOTLIB = ("no results.png or PR/F1 curves: matplotlib is not installed "
                 "(pip install 'detkit[plots]', or pass --no-plots)")


def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, values)`` of a column, blank (NaN) cells left out."""
    points = [(row["epoch"], row.get(key, math.nan)) for row in rows]
    points = [(e, v) for e, v in points if v is not None and math.isfinite(v)]
    if not points:
        return np.zeros(0), np.zeros(0)
    epochs, values = zip(*points)
    return np.asarray(epochs), np.asarray(values)


def panels(columns: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``(title, [columns])`` of each panel: loss terms (with their ``val_``), lr, mAP."""
    terms = [c for c in columns if c not in ("epoch", "lr") and not c.startswith("val_")]
    out = [(term, [term] + ([f"val_{term}"] if f"val_{term}" in columns else []))
           for term in terms]
    out += [(c, [c]) for c in columns if c.startswith("val_") and c not in MAP_KEYS
            and c[len("val_"):] not in terms]
    out.append(("lr", ["lr"]))
    if any(key in columns for key in MAP_KEYS):
        out.append(("mAP", [key for key in MAP_KEYS if key in columns]))
    return out


def write_results_plot(rows: Sequence[dict], path: Path) -> Path:
    """Draw ``results.png`` from history rows (dicts of floats, ``epoch`` 1-based).

    Raises:
        UsageError: matplotlib is not installed.
    """
    plt = require_pyplot()
    columns = list(rows[0]) if rows else ["epoch", "lr"]
    layout = panels(columns)
    nrows = max(1, math.ceil(len(layout) / COLUMNS))
    ncols = min(COLUMNS, len(layout))
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(PANEL_INCHES * ncols, PANEL_INCHES * nrows * 0.85))
    for ax, (title, keys) in zip(axes.flat, layout):
        for key in keys:
            epochs, values = _series(rows, key)
            style = "--" if key.startswith("val_") and title != "mAP" else "-"
            ax.plot(epochs, values, style, marker="." if len(epochs) < 30 else None,
                    label=key, linewidth=1.5)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch", fontsize="small")
        ax.tick_params(labelsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(keys) > 1:
            ax.legend(fontsize="x-small")
    for ax in list(axes.flat)[len(layout):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def best_weights_curves(ctx: "RunContext") -> tuple[list[Path], Optional[dict]]:
    """Evaluate ``best.weights.h5`` (else ``last``) on ``--val``; draw its PR/F1 curves.

    Returns:
        ``(the curve files, the COCO figures by name)``; ``([], None)`` without ``--val``
        or weights.
    """
    from detkit.training.callbacks import BEST_WEIGHTS, LAST_WEIGHTS
    from detkit.training.evaluation import MapEvaluator

    opts = ctx.opts
    weights = next((ctx.run_dir / name for name in (BEST_WEIGHTS, LAST_WEIGHTS)
                    if (ctx.run_dir / name).is_file()), None)
    if ctx.val_dataset is None or weights is None:
        return [], None
    network = build_model(opts.model, len(ctx.class_names), opts.width, opts.input_size,
                          backbone=opts.backbone)
    network.load_weights(weights)
    result, _ = MapEvaluator(network, ctx.family, ctx.anchors, opts.input_size,
                             ctx.val_dataset, opts.batch_size).evaluate()
    paths = write_plots(result.matches, result.class_names, ctx.run_dir,
                        title=weights.name)
    return paths, result.stats_dict


def write_run_plots(ctx: "RunContext", rows: Sequence[dict]
                    ) -> tuple[list[Path], Optional[dict]]:
    """``results.png`` and (with ``--val``) the curves of the best weights.

    Returns:
        ``(files written, COCO figures of the best weights or None)``; without
        matplotlib ``([], None)`` and a note in ``ctx.notes``.
    """
    try:
        require_pyplot()
    except UsageError:
        ctx.notes.append(NO_MATPLOTLIB)
        return [], None
    paths = [write_results_plot(rows, ctx.run_dir / RESULTS_FILE)] if rows else []
    curves, figures = best_weights_curves(ctx)
    return paths + curves, figures
