"""What the figures of a doctor report mean: fatal problems, warnings and notes.

Fatal problems (``doctor`` exits with code 1; training on the dataset would fail or learn
nothing):

- ``no_images``: the image files were checked and not one is readable.
- ``missing_images``: more than ``max_missing`` of the images (records) are missing or
  unreadable (default 0: training stops at the first one it cannot read).
- ``size_mismatch``: an image whose size differs from the size its annotation records
  (training stops at it: boxes are in the annotated image's pixels).
- ``no_boxes``: no box is left for training: the dataset has none, or every box was
  dropped (zero area, outside its image, or under one pixel after letterboxing).

Everything else is a warning (printed, exit code 0) or a note.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from detkit.data.fixes import FixReport
from detkit.tables import agree, plural

#: Finding levels, most severe first.
FATAL, WARNING, NOTE = "fatal", "warning", "note"
LEVELS = (FATAL, WARNING, NOTE)

#: A class is rare below this share of the boxes (``--rare-fraction``) ...
DEFAULT_RARE_FRACTION = 0.01
#: ... or below this many boxes (``--rare-count``).
DEFAULT_RARE_COUNT = 10
#: Boxes of the most frequent class per box of the least frequent (``--max-imbalance``).
DEFAULT_MAX_IMBALANCE = 20.0
#: Share of images allowed to be missing or unreadable (``--max-missing``).
DEFAULT_MAX_MISSING = 0.0
#: Files named at most in a finding's line (the report keeps more).
MAX_CITED = 3
#: Warn when the anchors' best possible recall is below this (YOLOv5's autoanchor rule).
MIN_BPR = 0.98
#: Warn when more than this share of the kept boxes is under the finest stride.
MAX_UNDER_STRIDE = 0.05
#: Warn when more than this share of the images has no box.
MAX_NEGATIVES = 0.5
#: Note the suggested anchors when their mean IoU is this much higher.
SUGGEST_GAIN = 0.05
#: Warn that coordinates look normalized when this share of boxes lies in [0, 1].
UNIT_RANGE_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Finding:
    """One conclusion: ``level`` (fatal, warning, note), a stable ``code``, a message."""

    level: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The limits the findings apply (see the module constants)."""

    rare_fraction: float = DEFAULT_RARE_FRACTION
    rare_count: int = DEFAULT_RARE_COUNT
    max_imbalance: float = DEFAULT_MAX_IMBALANCE
    max_missing: float = DEFAULT_MAX_MISSING


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "0%"


def rare_classes(classes: list[dict[str, Any]], limits: Thresholds) -> list[dict[str, Any]]:
    """The classes with boxes, but fewer than ``rare_count`` or, when other classes have
    boxes too, under ``rare_fraction`` of them (the only class with boxes is judged by its
    count alone)."""
    boxed = [row for row in classes if row["boxes"] > 0]
    fraction = limits.rare_fraction if len(boxed) > 1 else 0.0
    return [row for row in boxed
            if row["boxes"] < limits.rare_count or row["share"] < fraction]


def cite(names: Sequence[str], total: int) -> str:
    """`` (a, b)`` naming the files of a problem, `` (first: a, b, c, ...)`` past
    :data:`MAX_CITED` (or past the examples the report keeps); empty without names."""
    shown = list(names[:MAX_CITED])
    if not shown:
        return ""
    if total <= len(shown):
        return f" ({', '.join(shown)})"
    return f" (first: {', '.join(shown)}, ...)"


def bad_files(images: dict[str, Any]) -> list[str]:
    """The report's example files that are missing, then those unreadable (without the
    reason that follows the path in ``examples.unreadable``)."""
    examples = images["examples"]
    return examples["missing"] + [entry.partition(": ")[0]
                                  for entry in examples["unreadable"]]


def _missing_finding(images: dict[str, Any], limits: Thresholds) -> list[Finding]:
    """No readable image, or images missing or unreadable (fatal past ``max_missing``)."""
    records, bad = images["records"], images["records_missing_or_unreadable"]
    named = cite(bad_files(images), images["missing"] + images["unreadable"])
    if images["found"] == 0:
        return [Finding(FATAL, "no_images", f"none of the {images['files']} image files "
                        f"can be read{named}")]
    if bad and bad / records > limits.max_missing:
        return [Finding(FATAL, "missing_images",
                        f"{bad} of {records} images ({_pct(bad, records)}) are missing or "
                        f"unreadable{named}, above --max-missing {limits.max_missing:g}")]
    if bad:
        return [Finding(WARNING, "missing_images",
                        f"{bad} of {records} images are missing or unreadable{named}: "
                        "training stops at the first one")]
    return []


def _duplicate_groups(dup: dict[str, Any]) -> str:
    """`` (1 group: a = b)`` or `` (3 groups; first: a = b = c = ...)``."""
    first = dup["examples"][0] if dup["examples"] else []
    same = " = ".join(first[:MAX_CITED]) + (" = ..." if len(first) > MAX_CITED else "")
    groups = plural(dup["groups"], "group")
    if not same:
        return f" ({groups})"
    return f" ({groups}: {same})" if dup["groups"] == 1 else f" ({groups}; first: {same})"


def image_findings(report: dict[str, Any], limits: Thresholds) -> list[Finding]:
    images = report["images"]
    if images["checked"] == "none":
        return []
    found = _missing_finding(images, limits)
    examples = images["examples"]
    if images["size_mismatch"]:
        turned = images["size_transposed"]
        extra = (f", {turned} of them transposed (EXIF rotation?)" if turned else "")
        named = cite(examples["size_mismatch"], images["size_mismatch"])
        count = images["size_mismatch"]
        found.append(Finding(FATAL, "size_mismatch",
                             f"{plural(count, 'image')} {agree(count, 'differs', 'differ')} "
                             f"in size from {agree(count, 'its', 'their')} annotation"
                             f"{named}{extra}: training stops at the first one (fix the "
                             f"annotated width and height)"))
    if images["truncated_jpeg"]:
        count = images["truncated_jpeg"]
        named = cite(examples["truncated_jpeg"], count)
        found.append(Finding(WARNING, "truncated_jpeg",
                             f"{plural(count, 'JPEG file')} {agree(count, 'lacks', 'lack')} "
                             f"the end-of-image marker{named}: truncated? (OpenCV may "
                             f"refuse {agree(count, 'it', 'them')}; see --check-images "
                             "decode)"))
    dup = images["duplicates"]
    if dup["files"]:
        found.append(Finding(WARNING, "duplicate_images",
                             f"{plural(dup['files'], 'image file')} "
                             f"{agree(dup['files'], 'duplicates', 'duplicate')} another "
                             f"byte for byte{_duplicate_groups(dup)}"))
    return found


def box_findings(report: dict[str, Any], limits: Thresholds) -> list[Finding]:
    images, boxes = report["images"], report["boxes"]
    found: list[Finding] = []
    if images["repeated_entries"]:
        count = images["repeated_entries"]
        found.append(Finding(WARNING, "repeated_entries",
                             f"{plural(count, 'record')} {agree(count, 'names', 'name')} "
                             "an image file another record names too"))
    if boxes["kept"] == 0:
        why = ("the dataset has no boxes" if boxes["annotated"] == 0 else
               f"all {boxes['annotated']} boxes are dropped (zero area, outside the image "
               "or under 1 px after letterboxing)")
        found.append(Finding(FATAL, "no_boxes", f"no box left for training: {why}"))
    repaired = FixReport(**boxes["reader"]).summary()
    if repaired:       # the line every other command prints for the reader's repairs
        found.append(Finding(WARNING, "repaired_boxes", repaired))
    lb = boxes["letterbox"]
    if lb["dropped"]:
        found.append(Finding(WARNING, "tiny_boxes",
                             f"{plural(lb['dropped'], 'box')} under 1 px after "
                             f"letterboxing to {report['settings']['input_size']} "
                             f"{agree(lb['dropped'], 'is', 'are')} dropped by training"))
    if boxes["unit_range"] and boxes["unit_range"] >= UNIT_RANGE_SHARE * max(
            boxes["annotated"], 1) and report["dataset"]["format"] != "yolo":
        found.append(Finding(WARNING, "normalized_coordinates",
                             f"{boxes['unit_range']} of {boxes['annotated']} boxes lie in "
                             "[0, 1]: coordinates look normalized, but this format holds "
                             "pixels"))
    negatives = images["without_boxes"]
    if negatives and negatives > MAX_NEGATIVES * images["records"]:
        found.append(Finding(WARNING, "many_negatives",
                             f"{negatives} of {images['records']} images have no box"))
    elif negatives:
        found.append(Finding(NOTE, "negatives",
                             f"{plural(negatives, 'image')} without boxes (negatives)"))
    return found


def class_findings(report: dict[str, Any], limits: Thresholds) -> list[Finding]:
    classes = report["classes"]
    found: list[Finding] = []
    absent = [row["name"] for row in classes if row["boxes"] == 0]
    if absent and report["boxes"]["annotated"]:
        found.append(Finding(WARNING, "absent_classes",
                             f"{plural(len(absent), 'class')} without boxes: "
                             f"{', '.join(absent[:10])}" + (" ..." if len(absent) > 10 else "")))
    rare = rare_classes(classes, limits)
    if rare and len(classes) - len(absent) == 1:
        row = rare[0]
        only = "the only class" if len(classes) == 1 else "the only class with boxes"
        found.append(Finding(WARNING, "few_boxes",
                             f"few boxes: {row['name']}, {only}, has {row['boxes']} "
                             f"(under --rare-count {limits.rare_count})"))
    elif rare:
        listed = ", ".join(f"{row['name']} ({row['boxes']})" for row in rare[:10])
        found.append(Finding(WARNING, "rare_classes",
                             f"{plural(len(rare), 'rare class')} (under "
                             f"{limits.rare_count} boxes or "
                             f"{100 * limits.rare_fraction:g}% of them): {listed}"
                             + (" ..." if len(rare) > 10 else "")))
    imbalance = report["balance"]["imbalance"]
    if imbalance is not None and imbalance > limits.max_imbalance:
        found.append(Finding(WARNING, "class_imbalance",
                             f"class imbalance {imbalance:g}: {report['balance']['most']} has "
                             f"{imbalance:g}x the boxes of {report['balance']['least']} "
                             f"(above --max-imbalance {limits.max_imbalance:g})"))
    return found


def anchor_findings(report: dict[str, Any]) -> list[Finding]:
    anchors, kept = report["anchors"], report["boxes"]["kept"]
    found: list[Finding] = []
    quality = anchors["quality"]
    if quality is None:
        return found
    under = anchors["under_finest_stride"]
    finest = min(anchors["strides"])
    if under and under > MAX_UNDER_STRIDE * kept:
        found.append(Finding(WARNING, "small_boxes",
                             f"{under} of {kept} boxes ({_pct(under, kept)}) are smaller "
                             f"than the finest stride ({finest} px) at input "
                             f"{report['settings']['input_size']}: consider a larger "
                             "--input-size"))
    if quality["bpr"] < MIN_BPR:
        unfit = anchors["unfit"]
        found.append(Finding(WARNING, "anchor_fit",
                             f"anchors fit {100 * quality['bpr']:.1f}% of the boxes (BPR "
                             f"< {MIN_BPR:g}): {unfit['too_small']} too small, "
                             f"{unfit['too_large']} too large, {unfit['aspect']} of an odd "
                             "aspect for every anchor"))
    suggested = anchors["suggested"]
    if suggested and suggested["quality"]["avg_iou"] >= quality["avg_iou"] + SUGGEST_GAIN:
        found.append(Finding(NOTE, "better_anchors",
                             f"k-means anchors raise the mean IoU from {quality['avg_iou']:.3f}"
                             f" to {suggested['quality']['avg_iou']:.3f}: run "
                             "kmeans-anchors"))
    return found


def findings(report: dict[str, Any], limits: Thresholds) -> list[Finding]:
    """Every finding of ``report``, fatal ones first."""
    found = (image_findings(report, limits) + box_findings(report, limits)
             + class_findings(report, limits) + anchor_findings(report))
    return sorted(found, key=lambda f: LEVELS.index(f.level))
