"""``detkit encode-labels DATA``: compact YOLOv3 targets of a dataset -> ``labels.npz``."""

from __future__ import annotations

from rich.table import Table

from detkit.cli.app import console, warn
from detkit.cli._command import register
from detkit.commands.encode_labels import EncodeLabelsResult, Options, run
from detkit.data.letterbox import MIN_BOX_PIXELS


def _render_boxes(result: EncodeLabelsResult) -> None:
    """A boxes-scheme labels file: the boxes stored and the assigner's counts."""
    counts = ", ".join(f"{name} {value}" for name, value in result.stats.to_dict().items()
                       if not isinstance(value, list))
    lines = [f"encode-labels: {result.num_images} images, input {result.input_size}: "
             f"stored {result.num_rows} letterboxed boxes; --model {result.model} assigns "
             f"them per batch when training",
             f"its assigner on these boxes: {counts}"]
    if result.letterbox.clipped:
        lines.append(f"clipped to the input after letterbox: {result.letterbox.clipped}")
    if result.letterbox.too_small:
        lines.append(f"dropped: {result.letterbox.too_small} smaller than "
                     f"{MIN_BOX_PIXELS:g} px after letterbox")
    lines.append(f"wrote {result.out} (+ {result.manifest.name})")
    for line in lines:
        console.print(line, highlight=False)


def _render(result: EncodeLabelsResult) -> None:
    warn(result.fixes_summary)
    if result.scheme != "yolov3":
        _render_boxes(result)
        return
    stats = result.stats
    table = Table(title=f"encode-labels: {result.num_images} images, "
                        f"input {result.input_size}", title_justify="left")
    for column in ("scale", "stride", "grid", "anchor", "size (px)", "boxes"):
        table.add_column(column, justify="right")
    for level, mask in enumerate(result.masks):
        for position, index in enumerate(mask):
            w, h = result.anchors[index]
            first = position == 0
            table.add_row(str(level) if first else "",
                          str(result.strides[level]) if first else "",
                          f"{result.grid_sizes[level]}x{result.grid_sizes[level]}"
                          if first else "",
                          str(index), f"{w:g}x{h:g}", str(int(stats.per_anchor[index])))
    console.print(table)
    per_scale = stats.per_scale(result.masks)
    lines = [f"boxes: {stats.boxes} encoded into {result.num_rows} target slots "
             f"({stats.assigned} boxes assigned)",
             "per scale: " + ", ".join(f"stride {s}: {n}"
                                       for s, n in zip(result.strides, per_scale)),
             f"collisions: {stats.collisions} (a larger-IoU box took the slot)"]
    if result.letterbox.clipped:
        lines.append(f"clipped to the input after letterbox: {result.letterbox.clipped}")
    dropped = dict(stats.dropped)
    if result.letterbox.too_small:
        dropped[f"smaller than {MIN_BOX_PIXELS:g} px after letterbox"] = result.letterbox.too_small
    if dropped:
        lines.append("dropped: " + ", ".join(f"{count} {why}" for why, count in dropped.items()))
    else:
        lines.append("dropped: none")
    lines.append(f"wrote {result.out} (+ {result.manifest.name})")
    for line in lines:
        console.print(line, highlight=False)


register("encode-labels", Options, run, _render,
         help="Encode every image's letterboxed boxes for --model (labels.npz): YOLOv3 "
              "target slots, or the boxes the other families assign per batch.")
