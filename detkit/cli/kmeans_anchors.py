"""``detkit kmeans-anchors DATA``: anchors by seeded IoU k-means, with their quality."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from detkit.cli.app import app, console, err_console, handle_errors
from detkit.cli.options import Classes, Config, Data, Format, InputSize, Seed
# The NumPy core (no Keras) for its defaults.
from detkit.kmeans import (DEFAULT_ANCHOR_T, DEFAULT_MAX_ITER, DEFAULT_REFINE,
                           DEFAULT_RESTARTS, MIN_BOX_SIZE)


@app.command("kmeans-anchors")
def kmeans_anchors(
    data: Data,
    k: Annotated[int, typer.Option("--k", help="Number of anchors (9: yolov3, "
                                               "6: yolov3-tiny).")] = 9,
    input_size: InputSize = 416,
    seed: Seed = 0,
    out: Annotated[Path, typer.Option(
        "--out", help="Anchors file to write ('w,h, w,h, ...'); a .json report with the "
                      "same stem goes beside it.")] = Path("anchors.txt"),
    resize: Annotated[str, typer.Option(
        "--resize", help="How boxes reach the input: letterbox (as training) or "
                         "stretch.")] = "letterbox",
    center: Annotated[str, typer.Option(
        "--center", help="Cluster center: median (robust) or mean.")] = "median",
    restarts: Annotated[int, typer.Option(
        "--restarts", help="k-means++ seeded runs; the best mean IoU wins.")
    ] = DEFAULT_RESTARTS,
    max_iter: Annotated[int, typer.Option(
        "--max-iter", help="Lloyd iterations at most per run.")] = DEFAULT_MAX_ITER,
    refine: Annotated[int, typer.Option(
        "--refine", help="Sweeps that move each center to its boxes' IoU-maximizing size "
                         "(0: plain median/mean centers).")] = DEFAULT_REFINE,
    evolve: Annotated[int, typer.Option(
        "--evolve", help="Generations of YOLOv5-style evolution of the ratio fitness "
                         "(0: none).")] = 0,
    anchor_t: Annotated[float, typer.Option(
        "--anchor-t", help="Side-ratio threshold of BPR and fitness.")] = DEFAULT_ANCHOR_T,
    min_size: Annotated[float, typer.Option(
        "--min-size", help="Drop boxes with a side under this many input pixels.")
    ] = MIN_BOX_SIZE,
    decimals: Annotated[int, typer.Option(
        "--decimals", help="Digits written per value (0: integers, as keras-yolo3).")] = 0,
    compare: Annotated[Optional[Path], typer.Option(
        "--compare", help="An existing anchors file (e.g. the COCO defaults) to measure "
                          "side by side.")] = None,
    format: Format = None,
    classes: Classes = None,
    config: Config = None,
) -> None:
    """Cluster the dataset's box sizes (as scaled to the input) into anchors."""
    from detkit.api.kmeans_anchors import kmeans_anchors as run

    settings = {"data": str(data), "k": k, "input_size": input_size, "seed": seed,
                "out": str(out), "resize": resize, "center": center, "restarts": restarts,
                "max_iter": max_iter, "refine": refine, "evolve": evolve,
                "anchor_t": anchor_t, "min_size": min_size, "decimals": decimals,
                "compare": None if compare is None else str(compare),
                "format": format, "classes": None if classes is None else str(classes)}
    with handle_errors():
        result = run(data, k=k, input_size=input_size, seed=seed, out=out, resize=resize,
                     center=center, restarts=restarts, max_iter=max_iter, refine=refine,
                     evolve=evolve, anchor_t=anchor_t, min_size=min_size,
                     decimals=decimals, compare=compare, format=format, classes=classes,
                     config=settings)
    _render(result)


def _scales(k: int) -> dict[int, int]:
    """Anchor index -> the stride it serves (empty when ``k`` is not 3 per scale)."""
    from detkit.anchors import anchor_masks, strides

    if k % 3 or k < 3 or k > 15:
        return {}
    return {index: stride for mask, stride in zip(anchor_masks(k), strides(k))
            for index in mask}


def _render(result) -> None:
    from rich.table import Table

    if result.fixes:
        err_console.print(f"[yellow]warning:[/] {result.fixes}", highlight=False)
    if result.n_tiny:
        err_console.print(f"[yellow]warning:[/] dropped {result.n_tiny} boxes with a side "
                          f"under {result.settings['min_size']:g} px at input "
                          f"{result.settings['input_size']}", highlight=False)
    scales = _scales(len(result.anchors))
    table = Table(title=f"{len(result.anchors)} anchors for {result.n_boxes} boxes at input "
                        f"{result.settings['input_size']}", title_justify="left")
    for column in ("#", "w", "h", "area", "stride"):
        table.add_column(column, justify="right")
    for index, (w, h) in enumerate(result.anchors):
        stride = scales.get(index)
        table.add_row(str(index), f"{w:g}", f"{h:g}", f"{w * h:g}",
                      "-" if stride is None else str(stride))
    console.print(table)

    quality = Table(title="quality", title_justify="left")
    quality.add_column("metric")
    quality.add_column("these anchors", justify="right")
    if result.compare_quality is not None:
        quality.add_column(result.compare_path.name, justify="right")
    for name in ("avg_iou", "bpr", "anchors_per_target", "fitness"):
        row = [name, f"{getattr(result.quality, name):.4f}"]
        if result.compare_quality is not None:
            row.append(f"{getattr(result.compare_quality, name):.4f}")
        quality.add_row(*row)
    console.print(quality)
    if result.evolve is not None:
        console.print(f"evolution: {result.evolve.accepted} of {result.evolve.generations} "
                      f"mutations kept, fitness {result.evolve.start_fitness:.4f} -> "
                      f"{result.evolve.fitness:.4f}", highlight=False)
    console.print(f"wrote {result.out} and {result.json_path} ({result.elapsed_s:.2f} s)",
                  highlight=False, soft_wrap=True)
