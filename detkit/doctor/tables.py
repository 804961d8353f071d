"""The doctor report as tables of text (:class:`detkit.tables.TextTable`):
:func:`report_tables`, and :func:`anchor_lines` printed under the anchor table. Nothing
here draws: the CLI renders them.
"""

from __future__ import annotations

from typing import Any, Optional

from detkit.doctor.findings import Thresholds, rare_classes
from detkit.tables import TextTable, fmt

#: Distribution columns of the size table.
PERCENTILES = ("min", "p5", "median", "p95", "max")
#: Classes listed in the terminal table (all are in report.json).
MAX_CLASS_ROWS = 100


def overview(report: dict[str, Any]) -> TextTable:
    """Images and boxes found, repaired and dropped."""
    images, boxes = report["images"], report["boxes"]
    rows = [("images (records)", images["records"]),
            ("  without boxes", images["without_boxes"]),
            ("  repeated entries", images["repeated_entries"])]
    if images["checked"] != "none":
        rows += [(f"image files (checked: {images['checked']})", images["files"]),
                 ("  found", images["found"]), ("  missing", images["missing"]),
                 ("  unreadable", images["unreadable"]),
                 ("  size differs from annotation", images["size_mismatch"]),
                 ("  truncated JPEG", images["truncated_jpeg"]),
                 ("  exact duplicates", images["duplicates"]["files"])]
    reader, lb = boxes["reader"], boxes["letterbox"]
    rows += [("boxes annotated", boxes["annotated"]),
             ("  dropped: zero area", reader["dropped_degenerate"]),
             ("  dropped: outside the image", reader["dropped_outside"]),
             ("  clipped to the image", reader["clipped"]),
             ("  dropped: under 1 px after letterbox", lb["dropped"]),
             ("  clipped to the input after letterbox", lb["clipped"]),
             ("  kept for training", boxes["kept"]),
             ("  crowd / difficult", f"{boxes['crowd']} / {boxes['difficult']}"),
             ("boxes per image (mean / max)",
              f"{fmt(boxes['per_image']['mean'])} / {boxes['per_image']['max']}")]
    return TextTable("dataset", ("figure", "count"),
                     [(name, fmt(value)) for name, value in rows])


def classes(report: dict[str, Any]) -> TextTable:
    """Boxes per class, flagged ``rare`` (``few`` for the only class with boxes) or
    ``absent``."""
    settings = report["settings"]
    limits = Thresholds(**{key: settings[key] for key in (
        "rare_fraction", "rare_count", "max_imbalance", "max_missing")})
    rare = {row["id"] for row in rare_classes(report["classes"], limits)}
    boxed = sum(row["boxes"] > 0 for row in report["classes"])
    rare_flag = "rare" if boxed > 1 else "few"
    table = TextTable("boxes per class", ("class", "boxes", "share", "images",
                                          "median w x h", "dropped", "flag"))
    for row in report["classes"][:MAX_CLASS_ROWS]:
        flag = "absent" if row["boxes"] == 0 else rare_flag if row["id"] in rare else ""
        size = ("-" if row["median_w"] is None
                else f"{row['median_w']:.1f} x {row['median_h']:.1f}")
        table.rows.append((f"{row['id']} {row['name']}", str(row["boxes"]),
                           f"{100 * row['share']:.2f}%", str(row["images"]), size,
                           str(row["dropped"]), flag))
    hidden = len(report["classes"]) - MAX_CLASS_ROWS
    if hidden > 0:
        table.caption = f"{hidden} more classes in report.json"
    return table


def sizes(report: dict[str, Any]) -> TextTable:
    """Box width, height, side and aspect percentiles at the input size."""
    section = report["sizes"]
    table = TextTable(f"box sizes at input {report['settings']['input_size']} "
                      "(letterboxed, kept boxes, px)", ("", *PERCENTILES, "mean"))
    for name in ("width", "height", "side", "aspect"):
        label = {"side": "sqrt(w x h)", "aspect": "aspect w/h"}.get(name, name)
        table.rows.append((label, *(fmt(section[name][key])
                                    for key in (*PERCENTILES, "mean"))))
    areas = section["area_classes"]
    table.caption = (f"small (< 32x32): {areas['small']}, medium: {areas['medium']}, "
                     f"large (>= 96x96): {areas['large']}")
    return table


def anchors(report: dict[str, Any]) -> Optional[TextTable]:
    """The anchor fit, beside the k-means suggestion (``None``: nothing measured)."""
    section = report["anchors"]
    if section["quality"] is None:
        return None
    suggested = section["suggested"]
    columns = ("metric", "anchors") + (("k-means suggestion",) if suggested else ())
    table = TextTable(f"anchor fit ({section['n_measured']} boxes >= "
                      f"{section['min_size']:g} px, anchor_t {section['anchor_t']:g})",
                      columns)
    for name in ("avg_iou", "bpr", "anchors_per_target", "fitness"):
        row = [name, f"{section['quality'][name]:.4f}"]
        if suggested:
            row.append(f"{suggested['quality'][name]:.4f}")
        table.rows.append(tuple(row))
    return table


def anchor_lines(report: dict[str, Any]) -> list[str]:
    """The lines under the anchor table: the anchors, the suggestion, unfit boxes."""
    section = report["anchors"]
    if section["quality"] is None:
        return []
    suggested = section["suggested"]

    def listed(pairs: list) -> str:
        return " ".join(f"{w:g},{h:g}" for w, h in pairs)

    lines = [f"anchors ({report['settings']['anchors']}): {listed(section['anchors'])}"]
    if suggested:
        lines.append(f"suggested: {listed(suggested['anchors'])}")
    elif section["suggested_note"]:
        lines.append(f"no suggestion: {section['suggested_note']}")
    lines.append(f"boxes under the finest stride ({min(section['strides'])} px): "
                 f"{section['under_finest_stride']}; no fitting anchor: "
                 + ", ".join(f"{k.replace('_', ' ')} {v}"
                             for k, v in section["unfit"].items()))
    return lines


def report_tables(report: dict[str, Any]) -> list[TextTable]:
    """Every table of the report, in the order they are shown."""
    tables = [overview(report), classes(report), sizes(report), anchors(report)]
    return [table for table in tables if table is not None]
