"""Evaluation inputs as flat arrays: ground truth and detections, in file order.

Boxes are COCO ``[x, y, width, height]`` float64 pixels, exactly as the json gives them,
so IoUs match pycocotools to the last bit. Images and categories are referred to by their
index into the sorted unique ids (``GroundTruth.image_ids`` / ``category_ids``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from detkit.artifacts import read_manifest
from detkit.data.dataset import load_dataset
from detkit.data.readers.common import read_json
from detkit.data.readers.dataset_file import read_dataset_file
from detkit.errors import ArtifactError, DataError

#: Keys of a COCO ground-truth file.
COCO_KEYS = ("images", "annotations", "categories")
#: Keys every entry of a COCO results (detections) list has.
DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


@dataclasses.dataclass
class GroundTruth:
    """Ground-truth boxes of a dataset, one row per box in file order.

    Attributes:
        image_ids: ``(I,)`` int64 sorted unique image ids (images without boxes included).
        category_ids: ``(K,)`` int64 sorted unique category ids.
        class_names: ``K`` names, aligned with ``category_ids``.
        image: ``(N,)`` int64 index into ``image_ids``.
        category: ``(N,)`` int64 index into ``category_ids``.
        boxes: ``(N, 4)`` float64 ``[x, y, w, h]`` pixels.
        area: ``(N,)`` float64 region area in pixels (COCO ``area`` field, else ``w * h``).
        iscrowd: ``(N,)`` bool crowd regions.
        difficult: ``(N,)`` bool VOC ``difficult`` flags.
        source: where it was read from (for messages).
        file_names: ``I`` image file names (no folder), aligned with ``image_ids``
            (``None``: not known).
        files: the files it was read from that its path does not name (a dataset's
            images, annotation and class names files; a dataset file's COCO json).
        format: the dataset format it was read as (``coco`` for a COCO json).
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    class_names: list[str]
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray
    source: str = "<ground truth>"
    file_names: Optional[list[str]] = None
    files: list[str] = dataclasses.field(default_factory=list)
    format: str = "coco"

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image)


@dataclasses.dataclass
class Detections:
    """Detections, one row per box in file order.

    Attributes:
        image: ``(D,)`` int64 index into the ground truth's ``image_ids``.
        category: ``(D,)`` int64 index into the ground truth's ``category_ids``.
        boxes: ``(D, 4)`` float64 ``[x, y, w, h]`` pixels.
        scores: ``(D,)`` float64 confidences.
        source: where they were read from (for messages).
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    source: str = "<detections>"

    def __len__(self) -> int:
        return len(self.image)


def is_coco_dataset(obj: Any) -> bool:
    """True for a json object with ``images``, ``annotations`` and ``categories``."""
    return isinstance(obj, dict) and all(key in obj for key in COCO_KEYS)


def _integers(values: list, what: str, source: str) -> np.ndarray:
    """``values`` as int64, or a DataError naming the first entry that is not an integer."""
    try:
        array = np.array(values, dtype=np.float64)
        if array.shape == (len(values),) and np.all(array == np.round(array)):
            return array.astype(np.int64)
    except (TypeError, ValueError):
        pass
    for number, value in enumerate(values, start=1):
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or value != int(value)):
            raise DataError(f"{what} {number}: expected an integer, got {value!r}",
                            path=source)
    raise DataError(f"{what}: expected integers", path=source)


def _boxes(values: list, what: str, source: str) -> np.ndarray:
    """``values`` (lists ``[x, y, w, h]``) as ``(N, 4)`` float64, checked finite."""
    try:
        array = np.array(values, dtype=np.float64)
        ok = array.shape == (len(values), 4) and bool(np.all(np.isfinite(array)))
    except (TypeError, ValueError):
        ok = False
    if ok:
        return array
    for number, box in enumerate(values, start=1):
        good = isinstance(box, (list, tuple)) and len(box) == 4
        if good:
            try:
                good = bool(np.all(np.isfinite(np.array(box, dtype=np.float64))))
            except (TypeError, ValueError):
                good = False
        if not good:
            raise DataError(f"{what} {number}: 'bbox' must be four finite numbers "
                            f"[x, y, width, height], got {box!r}", path=source)
    return np.zeros((0, 4))


def _floats(values: list, what: str, key: str, source: str) -> np.ndarray:
    try:
        array = np.array(values, dtype=np.float64)
        if array.shape == (len(values),) and np.all(np.isfinite(array)):
            return array
    except (TypeError, ValueError):
        pass
    for number, value in enumerate(values, start=1):
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not np.isfinite(value)):
            raise DataError(f"{what} {number}: {key!r} must be a finite number, "
                            f"got {value!r}", path=source)
    raise DataError(f"{what}: {key!r} must be finite numbers", path=source)


def _field(entries: list, key: str, what: str, source: str, default: Any = None) -> list:
    """Column ``key`` of a list of dicts; a DataError names the first entry lacking it."""
    try:
        if default is None:
            return [entry[key] for entry in entries]
        return [entry.get(key, default) for entry in entries]
    except (KeyError, TypeError, AttributeError):
        for number, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict):
                raise DataError(f"{what} {number}: expected a json object, got "
                                f"{type(entry).__name__}", path=source) from None
            if key not in entry:
                raise DataError(f"{what} {number}: missing {key!r}", path=source) from None
        raise


def _index_of(ids: np.ndarray, known: np.ndarray, what: str, kind: str,
              source: str) -> np.ndarray:
    """Index of every id in the sorted ``known`` ids; a DataError names an unknown one."""
    index = np.searchsorted(known, ids)
    found = index < len(known)
    found[found] = known[index[found]] == ids[found]
    if not np.all(found):
        first = int(np.flatnonzero(~found)[0])
        count = int(np.count_nonzero(~found))
        raise DataError(f"{what} {first + 1} refers to unknown {kind} {int(ids[first])} "
                        f"({count} entries do; the ground truth has {len(known)} "
                        f"{kind}s)", path=source)
    return index.astype(np.int64)


def ground_truth_from_coco(data: Any, source: str = "<ground truth>") -> GroundTruth:
    """Ground truth from a parsed COCO dataset (``images``, ``annotations``, ``categories``).

    Areas are the annotations' own ``area`` field (as pycocotools uses it), ``w * h`` where
    the field is absent; ``iscrowd`` defaults to 0.

    Raises:
        DataError: not a COCO dataset, duplicate ids, unknown image or category ids,
            malformed boxes or areas.
    """
    if not is_coco_dataset(data):
        hint = " (a detections list is not ground truth)" if isinstance(data, list) else ""
        raise DataError("not a COCO dataset: expected a json object with "
                        f"{', '.join(COCO_KEYS)}{hint}", path=source)
    for key in COCO_KEYS:
        if not isinstance(data[key], list):
            raise DataError(f"not a COCO dataset: {key!r} must be a list", path=source)
    images, annotations, categories = (data[key] for key in COCO_KEYS)
    image_ids = _integers(_field(images, "id", "image", source), "image", source)
    cat_ids = _integers(_field(categories, "id", "category", source), "category", source)
    for ids, kind in ((image_ids, "image"), (cat_ids, "category")):
        unique, counts = np.unique(ids, return_counts=True)
        if np.any(counts > 1):
            raise DataError(f"{kind} id {int(unique[counts > 1][0])} is given twice",
                            path=source)
    if len(image_ids) == 0:
        raise DataError("the ground truth has no images", path=source)
    names_by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    order = np.argsort(cat_ids)
    category_ids = cat_ids[order]
    what = "annotation"
    ann_images = _integers(_field(annotations, "image_id", what, source), what, source)
    ann_cats = _integers(_field(annotations, "category_id", what, source), what, source)
    boxes = _boxes(_field(annotations, "bbox", what, source), what, source).reshape(-1, 4)
    areas = [a.get("area") for a in annotations]
    if any(area is None for area in areas):
        areas = [box[2] * box[3] if area is None else area for area, box in zip(areas, boxes)]
    area = _floats(areas, what, "area", source)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
    sorted_images = np.sort(image_ids)
    names_by_image = {int(i): _base_name(image.get("file_name"))
                      for i, image in zip(image_ids, images)}
    return GroundTruth(
        image_ids=sorted_images, category_ids=category_ids,
        class_names=[names_by_id[int(i)] for i in category_ids],
        image=_index_of(ann_images, sorted_images, what, "image id", source),
        category=_index_of(ann_cats, category_ids, what, "category id", source),
        boxes=boxes, area=area, iscrowd=crowd.reshape(-1),
        difficult=np.zeros(len(annotations), bool), source=source,
        file_names=[names_by_image[int(i)] for i in sorted_images])


def ground_truth_from_dataset(dataset: Any) -> GroundTruth:
    """Ground truth from a :class:`detkit.data.dataset.Dataset` (any format detkit reads).

    Category ids are the dataset's COCO category ids when it has them, else class index
    + 1 (as in detections written by ``detkit predict``); areas are box areas.
    """
    records = dataset.records
    source = str(getattr(dataset, "path", "<dataset>"))
    if not records:
        raise DataError("the ground truth has no images", path=source)
    names = list(dataset.class_names)
    given = getattr(dataset, "category_ids", None)
    per_class = np.asarray(given if given is not None else np.arange(1, len(names) + 1),
                           dtype=np.int64)
    order = np.argsort(per_class, kind="stable")
    category_ids = per_class[order]
    index_of_class = np.empty(len(names), np.int64)
    index_of_class[order] = np.arange(len(names))
    image_ids = np.array([r.image_id for r in records], dtype=np.int64)
    unique, counts = np.unique(image_ids, return_counts=True)
    if np.any(counts > 1):
        raise DataError(f"image id {int(unique[counts > 1][0])} is given twice", path=source)
    names_by_image = {int(r.image_id): _base_name(r.image_path) for r in records}
    counts = np.array([r.num_boxes for r in records], dtype=np.int64)
    xyxy = (np.concatenate([r.boxes for r in records]).astype(np.float64)
            if counts.sum() else np.zeros((0, 4)))
    boxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    classes = (np.concatenate([r.classes for r in records]).astype(np.int64)
               if counts.sum() else np.zeros(0, np.int64))

    def flags(name: str) -> np.ndarray:
        return (np.concatenate([getattr(r, name) for r in records]).astype(bool)
                if counts.sum() else np.zeros(0, bool))

    return GroundTruth(
        image_ids=unique, category_ids=category_ids,
        class_names=[names[i] for i in order],
        image=np.searchsorted(unique, np.repeat(image_ids, counts)).astype(np.int64),
        category=index_of_class[classes], boxes=boxes, area=boxes[:, 2] * boxes[:, 3],
        iscrowd=flags("iscrowd"), difficult=flags("difficult"), source=source,
        file_names=[names_by_image[int(i)] for i in unique])


def load_ground_truth(path: str | os.PathLike, format: str | None = None,
                      classes: str | os.PathLike | Sequence[str] | None = None) -> GroundTruth:
    """Ground truth from a COCO json (read directly, keeping ``area`` and ``iscrowd``; also
    when it is an Ultralytics dataset file's ``val`` split) or from any dataset
    :func:`detkit.data.dataset.load_dataset` reads (of a dataset file, its ``val`` split)."""
    path = Path(path)
    fmt = (format or "auto").lower()
    described = read_dataset_file(path) if path.is_file() else None
    files = described.split("val") if described is not None else [path]
    if (len(files) == 1 and fmt in ("auto", "coco") and files[0].suffix.lower() == ".json"
            and files[0].is_file()):
        data = read_json(files[0], "json file")
        if is_coco_dataset(data) or fmt == "coco":
            return dataclasses.replace(ground_truth_from_coco(data, source=str(files[0])),
                                       files=[str(files[0])])
    dataset = load_dataset(path, format=format, classes=classes, split="val")
    return dataclasses.replace(ground_truth_from_dataset(dataset), files=dataset.files(),
                               format=dataset.format)


def _category_index(values: list, gt: GroundTruth, source: str) -> np.ndarray:
    """Category column -> index; ids, or class names (strings) of the ground truth."""
    if values and any(isinstance(v, str) for v in values):
        by_name = {name: int(i) for name, i in zip(gt.class_names, gt.category_ids)}
        for number, value in enumerate(values, start=1):
            if isinstance(value, str) and value not in by_name:
                raise DataError(f"detection {number} refers to unknown class name "
                                f"{value!r}; known: {', '.join(gt.class_names)}", path=source)
        values = [by_name[v] if isinstance(v, str) else v for v in values]
    ids = _integers(values, "detection", source)
    return _index_of(ids, gt.category_ids, "detection", "category id", source)


def detections_from_list(entries: Any, gt: GroundTruth,
                         source: str = "<detections>") -> Detections:
    """Detections from a parsed COCO results list ``[{image_id, category_id, bbox, score}]``.

    ``category_id`` may also be a class name of the ground truth.

    Raises:
        DataError: not a list, an entry lacking a key, a malformed box or score, an
            image id or category id the ground truth does not have.
    """
    if is_coco_dataset(entries):
        raise DataError("expected a COCO results list [{image_id, category_id, bbox, "
                        "score}, ...], got a COCO dataset (ground truth?)", path=source)
    if not isinstance(entries, list):
        raise DataError("expected a COCO results list [{image_id, category_id, bbox, "
                        f"score}}, ...], got a json {type(entries).__name__}", path=source)
    what = "detection"
    columns = {key: _field(entries, key, what, source) for key in DETECTION_KEYS}
    images = _integers(columns["image_id"], what, source)
    return Detections(
        image=_index_of(images, gt.image_ids, what, "image id", source),
        category=_category_index(columns["category_id"], gt, source),
        boxes=_boxes(columns["bbox"], what, source).reshape(-1, 4),
        scores=_floats(columns["score"], what, "score", source), source=source)


def _base_name(path: Any) -> str:
    """The file name of an image path as written (any separator), "" when none."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1] if path else ""


def check_detections(path: str | os.PathLike, gt: GroundTruth, *,
                     classes: bool = True) -> None:
    """Refuse detections that ``predict`` made on other images or classes than ``gt``'s,
    as their manifest records them (:func:`_check_same_images`, and with ``classes``
    :func:`_check_same_classes`). Without a manifest (detections from elsewhere) nothing
    is checked.

    Raises:
        DataError: naming the first image or category id that differs.
    """
    try:
        manifest = read_manifest(path)
    except ArtifactError:
        return
    if not isinstance(manifest, dict):
        return
    _check_same_images(path, manifest, gt)
    if classes:
        _check_same_classes(path, manifest, gt)


def detections_model(path: str | os.PathLike) -> str | None:
    """The ``--model`` that made the detections ``path``, as ``predict`` records it in
    their manifest (``None``: no manifest, or none recorded)."""
    try:
        config = read_manifest(path).get("config")
    except ArtifactError:
        return None
    model = config.get("model") if isinstance(config, dict) else None
    return model if isinstance(model, str) else None


def _check_same_images(path: str | os.PathLike, manifest: dict, gt: GroundTruth) -> None:
    """Refuse detections made on other images than ``gt``'s under the same ids.

    ``predict`` records in the detections' manifest the file of every image id; detections
    of a folder (ids by position) scored against a dataset (ids of its own) would silently
    pair one image's detections with another's boxes.

    Raises:
        DataError: naming the first id whose files differ, and how many do.
    """
    images = manifest.get("images")
    if gt.file_names is None or not isinstance(images, list):
        return
    known = dict(zip(gt.image_ids.tolist(), gt.file_names))
    differ = [(entry["id"], _base_name(entry["file_name"]), known[entry["id"]])
              for entry in images
              if isinstance(entry, dict) and isinstance(entry.get("id"), int)
              and isinstance(entry.get("file_name"), str) and known.get(entry["id"])
              and _base_name(entry["file_name"]) != known[entry["id"]]]
    if differ:
        image_id, theirs, ours = differ[0]
        raise DataError(f"the detections are of other images: image id {image_id} is "
                        f"{theirs} in its manifest, {ours} in the ground truth {gt.source} "
                        f"({len(differ)} of {len(images)} ids differ); run predict on the "
                        f"ground truth itself (or eval-map with --weights)", path=path)


def _check_same_classes(path: str | os.PathLike, manifest: dict, gt: GroundTruth) -> None:
    """Refuse detections whose category ids name other classes than ``gt``'s.

    ``predict`` records the class name of every category id it wrote in the detections'
    manifest; scored against ground truth whose ids name other classes (the same names
    in another order), each class would be scored on another's boxes. Ids the ground
    truth lacks are not checked.

    Raises:
        DataError: naming the first id whose names differ.
    """
    names, ids = manifest.get("class_names"), manifest.get("category_ids")
    if not (isinstance(names, list) and isinstance(ids, list) and len(names) == len(ids)):
        return
    known = dict(zip(gt.category_ids.tolist(), gt.class_names))
    differ = [(cid, str(name), known[cid]) for cid, name in zip(ids, names)
              if isinstance(cid, int) and cid in known and str(name) != known[cid]]
    if differ:
        cid, theirs, ours = differ[0]
        raise DataError(f"the detections are of other classes: category id {cid} is "
                        f"{theirs!r} in its manifest, {ours!r} in the ground truth "
                        f"{gt.source} ({len(differ)} of {len(ids)} ids differ); give "
                        f"predict the ground truth's class names (--classes) or run "
                        f"eval-map with --weights", path=path)


def load_detections(path: str | os.PathLike, gt: GroundTruth) -> Detections:
    """Read a COCO results json and check it against ``gt`` (see
    :func:`detections_from_list`)."""
    return detections_from_list(read_json(path, "json file"), gt, source=str(path))
