"""``labels.npz``: sparse YOLOv3 targets of a whole dataset, densified one batch on demand.

Layout (``kind="labels"``, ``format_version=1``), one row per filled target slot, rows
sorted by image then scale, row, col, anchor:

============== ============ ==========================================================
key            shape/dtype  meaning
============== ============ ==========================================================
``image``      (R,) int32   index into ``image_paths``
``scale``      (R,) int32   output scale, 0 = coarsest stride (``anchor_masks`` order)
``row``        (R,) int32   grid row (y)
``col``        (R,) int32   grid column (x)
``anchor``     (R,) int32   global anchor index ``0..K-1`` (its mask gives the slot)
``xywh``       (R,4) f32    box center and size normalized to the input
``cls``        (R,) int32   class index
``anchors``    (K,2) f32    anchors in input pixels
``input_size`` () int32     input side in pixels
``class_names`` (C,) str    class names
``scheme``     () str       target scheme (``"yolov3"``)
``image_paths`` (N,) str    the dataset's images, in dataset order
``stats_json`` () str       the encoder's counts (:class:`~detkit.encode.EncodeStats`)
============== ============ ==========================================================

Images are letterboxed (no augmentation) before encoding. :class:`LabelsFile` reads the
file once and builds the compact dense targets of any batch of images.

Families whose targets are not fixed slots (YOLOv2, RetinaNet, RPN: ``Family.label_scheme
== "boxes"``) store the letterboxed boxes instead (``scheme="boxes"``, same kind and
version), one row per box, sorted by image; their assigner makes the targets of each batch
(:class:`BoxLabelsFile`):

============== ============ ==========================================================
``image``      (R,) int32   index into ``image_paths``
``xyxy``       (R,4) f32    box corners in input pixels (letterboxed)
``cls``        (R,) int32   class index
``input_size`` () int32     input side in pixels
``class_names`` (C,) str    class names
``scheme``     () str       ``"boxes"``
``image_paths`` (N,) str    the dataset's images, in dataset order
``stats_json`` () str       counts (boxes, images, per class)
============== ============ ==========================================================

:func:`load_labels` opens either kind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from detkit.anchors import anchor_masks, strides
from detkit.artifacts import (check_agree, check_fresh, load_npz,
                              read_manifest, save_npz)
from detkit.data.records import same_image_paths
from detkit.encode import EncodeStats, densify_yolov3
from detkit.errors import ArtifactError, ArtifactMismatchError, UsageError

#: ``kind`` of a labels file.
LABELS_KIND = "labels"
#: Layout version of labels files this code writes and reads.
LABELS_FORMAT_VERSION = 1
#: The target scheme stored in labels files.
SCHEME_YOLOV3 = "yolov3"
#: The scheme of labels files that hold the letterboxed boxes.
SCHEME_BOXES = "boxes"
#: Keys every boxes-scheme labels file has.
BOX_REQUIRED_KEYS = ("image", "xyxy", "cls", "input_size", "class_names", "scheme",
                     "image_paths", "stats_json")
#: Integer row keys, in sort order after ``image``.
INDEX_KEYS = ("image", "scale", "row", "col", "anchor")
#: Keys every labels file has.
REQUIRED_KEYS = (*INDEX_KEYS, "xywh", "cls", "anchors", "input_size", "class_names",
                 "scheme", "image_paths", "stats_json")


def save_labels(path: str | os.PathLike, rows: Mapping[str, np.ndarray], *,
                anchors: np.ndarray, input_size: int, class_names: Sequence[str],
                image_paths: Sequence[str], stats: EncodeStats,
                scheme: str = SCHEME_YOLOV3,
                before_commit: Optional[Callable[[Path], Any]] = None) -> Path:
    """Atomically write ``labels.npz``.

    Args:
        path: output file.
        rows: ``image, scale, row, col, anchor`` ``(R,)`` ints, ``xywh`` ``(R, 4)`` and
            ``cls`` ``(R,)``, in any order (sorted here).
        anchors: ``(K, 2)`` input pixels; input_size: input side in pixels.
        class_names: the class names; image_paths: every image of the dataset.
        stats: the encoder's counts over the dataset.
        scheme: target scheme name.
        before_commit: called with the finished temporary file before it is renamed
            onto ``path`` (the manifest is written there, so the file appears with it).
    """
    arrays = {key: np.asarray(rows[key], np.int32).reshape(-1) for key in INDEX_KEYS}
    order = np.lexsort(tuple(arrays[key] for key in reversed(INDEX_KEYS)))
    arrays = {key: value[order] for key, value in arrays.items()}
    arrays["xywh"] = np.asarray(rows["xywh"], np.float32).reshape(-1, 4)[order]
    arrays["cls"] = np.asarray(rows["cls"], np.int32).reshape(-1)[order]
    arrays.update(
        anchors=np.asarray(anchors, np.float32).reshape(-1, 2),
        input_size=np.asarray(int(input_size), np.int32),
        class_names=np.asarray(list(class_names), dtype=str).reshape(-1),
        scheme=np.asarray(scheme),
        image_paths=np.asarray([str(p) for p in image_paths], dtype=str).reshape(-1),
        stats_json=np.asarray(json.dumps(stats.to_dict())))
    return save_npz(path, arrays, kind=LABELS_KIND, format_version=LABELS_FORMAT_VERSION,
                    before_commit=before_commit)


class LabelsFile:
    """A loaded ``labels.npz``.

    Attributes:
        path: the file.
        settings: ``anchors`` ``(K, 2)``, ``input_size`` int, ``class_names`` list,
            ``scheme`` str (compare with :meth:`check_settings`).
        image_paths: the images, in dataset order.
        rows: the row arrays (see the module docstring).
        stats: the encoder's counts.
        grid_sizes: grid side per scale, coarsest first.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        data = load_npz(self.path, kind=LABELS_KIND, format_version=LABELS_FORMAT_VERSION,
                        required=REQUIRED_KEYS)
        anchors = np.asarray(data["anchors"], np.float32).reshape(-1, 2)
        self.settings: dict[str, Any] = {
            "anchors": anchors, "input_size": int(data["input_size"]),
            "class_names": [str(n) for n in data["class_names"]],
            "scheme": str(data["scheme"])}
        if self.settings["scheme"] != SCHEME_YOLOV3:
            raise ArtifactError(f"unsupported scheme {self.settings['scheme']!r}",
                                path=self.path)
        self.image_paths = [str(p) for p in data["image_paths"]]
        self.rows = {key: np.asarray(data[key], np.int32).reshape(-1) for key in INDEX_KEYS}
        self.rows["xywh"] = np.asarray(data["xywh"], np.float32).reshape(-1, 4)
        self.rows["cls"] = np.asarray(data["cls"], np.int32).reshape(-1)
        try:
            self.stats = EncodeStats.from_dict(json.loads(str(data["stats_json"])))
        except (ValueError, TypeError, AttributeError) as err:
            raise ArtifactError(f"corrupt stats_json ({err})", path=self.path) from None
        try:
            self.masks = anchor_masks(len(anchors))
        except UsageError as err:  # not a multiple of 3 anchors: the file is broken
            raise ArtifactError(f"bad anchors in labels file: {err}", path=self.path) from None
        size = self.settings["input_size"]
        self.grid_sizes = [size // s for s in strides(len(anchors))]
        self._validate()
        self._slot = np.empty(len(anchors), np.int32)
        for mask in self.masks:
            self._slot[mask] = np.arange(len(mask))
        self._offsets = np.searchsorted(self.rows["image"], np.arange(self.num_images + 1))

    def _validate(self) -> None:
        """Raise :class:`ArtifactError` when row arrays are inconsistent or out of range."""
        count = len(self.rows["image"])
        lengths = {key: len(value) for key, value in self.rows.items()}
        if any(n != count for n in lengths.values()):
            raise ArtifactError(f"row arrays differ in length: {lengths}", path=self.path)
        if count == 0:
            return
        image, scale = self.rows["image"], self.rows["scale"]
        grids = np.asarray(self.grid_sizes)
        problems = []
        if image.min() < 0 or image.max() >= self.num_images or np.any(np.diff(image) < 0):
            problems.append("image index out of range or unsorted")
        if scale.min() < 0 or scale.max() >= len(grids):
            problems.append("scale out of range")
        else:
            grid = grids[scale]
            for key in ("row", "col"):
                if np.any((self.rows[key] < 0) | (self.rows[key] >= grid)):
                    problems.append(f"{key} out of range")
            anchor = self.rows["anchor"]
            scale_of = np.empty(len(self.settings["anchors"]), np.int64)
            for level, mask in enumerate(self.masks):
                scale_of[mask] = level
            if (anchor.min() < 0 or anchor.max() >= len(scale_of) or
                    np.any(scale_of[np.clip(anchor, 0, len(scale_of) - 1)] != scale)):
                problems.append("anchor out of range or not of its scale")
        if not np.all(np.isfinite(self.rows["xywh"])):
            problems.append("non-finite box values")
        if problems:
            raise ArtifactError(f"corrupt labels: {'; '.join(problems)}", path=self.path)

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    def __len__(self) -> int:
        return self.num_images

    def image_rows(self, index: int) -> dict[str, np.ndarray]:
        """The rows of image ``index`` (a dict of the row arrays)."""
        start, stop = self._offsets[index], self._offsets[index + 1]
        return {key: value[start:stop] for key, value in self.rows.items()}

    def dense_batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Compact dense targets of images ``indices``, in that order.

        Returns:
            Per scale a ``(B, g, g, 3, 6)`` float32 array, as
            :func:`detkit.encode.encode_yolov3` returns for the letterboxed boxes.
        """
        indices = np.asarray(indices, np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.num_images):
            raise IndexError(f"image indices must be in [0, {self.num_images}), got "
                             f"{indices.min()}..{indices.max()}")
        starts = self._offsets[indices]
        counts = self._offsets[indices + 1] - starts
        batch_pos = np.repeat(np.arange(len(indices)), counts)
        first_of_image = np.cumsum(counts) - counts
        take = np.repeat(starts - first_of_image, counts) + np.arange(counts.sum())
        rows = {key: value[take] for key, value in self.rows.items()}
        return densify_yolov3(batch_pos, rows["scale"], rows["row"], rows["col"],
                              self._slot[rows["anchor"]], rows["xywh"], rows["cls"],
                              len(indices), self.grid_sizes)

    def check_settings(self, settings: Mapping[str, Any], name: str = "this command") -> None:
        """Raise :class:`ArtifactMismatchError` if ``settings`` (any of ``anchors``,
        ``input_size``, ``class_names``) disagree with the file's."""
        check_agree(str(self.path), self.settings, name, settings,
                    hint="re-run encode-labels with this run's settings")

    def check_images(self, image_paths: Sequence[str], name: str = "the dataset") -> None:
        """Raise :class:`ArtifactMismatchError` unless ``image_paths`` are the file's images
        in the same order, perhaps spelled from another folder (names the first
        difference: :func:`detkit.data.records.same_image_paths`)."""
        paths = [str(p) for p in image_paths]
        if len(paths) != len(self.image_paths):
            raise ArtifactMismatchError(
                f"{self.path} has labels for {len(self.image_paths)} images, {name} has "
                f"{len(paths)}; re-run encode-labels")
        first = same_image_paths(self.image_paths, paths)
        if first is None:
            return
        raise ArtifactMismatchError(
            f"{self.path} and {name} differ at image {first}: {self.image_paths[first]!r} "
            f"vs {paths[first]!r}; re-run encode-labels")


def load_labels(path: str | os.PathLike, settings: Optional[Mapping[str, Any]] = None,
                image_paths: Optional[Sequence[str]] = None,
                annotations: Optional[str] = None) -> "LabelsFile | BoxLabelsFile":
    """Open ``labels.npz`` and optionally check it against a consumer's settings, images
    and annotations (the dataset's :func:`detkit.data.records.annotations_sha256`).

    Raises:
        ArtifactError: missing, corrupt or another kind/version of file, or one its
            manifest does not describe.
        ArtifactMismatchError: settings or image list differ, or stale (an input file
            recorded in its manifest changed since it was encoded, or the boxes or
            classes read: the files inside a VOC or YOLO folder are not manifest inputs).
    """
    scheme = str(load_npz(path, kind=LABELS_KIND, format_version=LABELS_FORMAT_VERSION,
                          required=("scheme",))["scheme"])
    labels = BoxLabelsFile(path) if scheme == SCHEME_BOXES else LabelsFile(path)
    check_fresh(path, remake="encode-labels")
    if settings is not None:
        labels.check_settings(settings)
    if image_paths is not None:
        labels.check_images(image_paths)
    recorded = read_manifest(path).get("annotations_sha256")
    if annotations is not None and recorded is not None and recorded != annotations:
        raise ArtifactMismatchError(
            "stale: the dataset's boxes or classes changed after it was encoded; re-run "
            "encode-labels", path=path)
    return labels


def check_scheme(labels: "LabelsFile | BoxLabelsFile", family: Any) -> None:
    """Raise :class:`ArtifactMismatchError` unless ``labels`` holds ``family``'s scheme."""
    scheme = labels.settings["scheme"]
    if scheme != family.label_scheme:
        raise ArtifactMismatchError(
            f"{labels.path} holds {scheme!r} labels, --model {family.name} needs "
            f"{family.label_scheme!r} labels: re-run encode-labels --model {family.name}")


def save_box_labels(path: str | os.PathLike, image: np.ndarray, xyxy: np.ndarray,
                    cls: np.ndarray, *, input_size: int, class_names: Sequence[str],
                    image_paths: Sequence[str], stats: Mapping[str, Any],
                    before_commit: Optional[Callable[[Path], Any]] = None) -> Path:
    """Atomically write a boxes-scheme ``labels.npz`` (see the module docstring).

    Args:
        image: ``(R,)`` image index of each box; xyxy: ``(R, 4)`` letterboxed boxes in
            input pixels; cls: ``(R,)`` class index (any order, sorted here by image).
        input_size, class_names, image_paths: settings and the dataset's images.
        stats: counts recorded as ``stats_json``.
        before_commit: as :func:`save_labels`.
    """
    image = np.asarray(image, np.int32).reshape(-1)
    order = np.argsort(image, kind="stable")
    arrays = {"image": image[order],
              "xyxy": np.asarray(xyxy, np.float32).reshape(-1, 4)[order],
              "cls": np.asarray(cls, np.int32).reshape(-1)[order],
              "input_size": np.asarray(int(input_size), np.int32),
              "class_names": np.asarray(list(class_names), dtype=str).reshape(-1),
              "scheme": np.asarray(SCHEME_BOXES),
              "image_paths": np.asarray([str(p) for p in image_paths], dtype=str).reshape(-1),
              "stats_json": np.asarray(json.dumps(dict(stats)))}
    return save_npz(path, arrays, kind=LABELS_KIND, format_version=LABELS_FORMAT_VERSION,
                    before_commit=before_commit)


class BoxLabelsFile:
    """A loaded boxes-scheme ``labels.npz``: the letterboxed boxes of every image.

    Attributes:
        path: the file.
        settings: ``input_size`` int, ``class_names`` list, ``scheme`` (``"boxes"``); no
            anchors (the boxes serve any anchors of a boxes-scheme family).
        image_paths: the images, in dataset order.
        rows: ``image`` ``(R,)``, ``xyxy`` ``(R, 4)``, ``cls`` ``(R,)``.
        stats: the counts recorded at encoding.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        data = load_npz(self.path, kind=LABELS_KIND, format_version=LABELS_FORMAT_VERSION,
                        required=BOX_REQUIRED_KEYS)
        self.settings: dict[str, Any] = {
            "input_size": int(data["input_size"]),
            "class_names": [str(n) for n in data["class_names"]],
            "scheme": str(data["scheme"])}
        self.image_paths = [str(p) for p in data["image_paths"]]
        self.rows = {"image": np.asarray(data["image"], np.int32).reshape(-1),
                     "xyxy": np.asarray(data["xyxy"], np.float32).reshape(-1, 4),
                     "cls": np.asarray(data["cls"], np.int32).reshape(-1)}
        try:
            self.stats = json.loads(str(data["stats_json"]))
        except ValueError as err:
            raise ArtifactError(f"corrupt stats_json ({err})", path=self.path) from None
        image = self.rows["image"]
        problems = []
        if len({len(v) for v in self.rows.values()}) > 1:
            problems.append("row arrays differ in length")
        elif len(image) and (image.min() < 0 or image.max() >= self.num_images
                             or np.any(np.diff(image) < 0)):
            problems.append("image index out of range or unsorted")
        if not np.all(np.isfinite(self.rows["xyxy"])):
            problems.append("non-finite box values")
        if len(self.rows["cls"]) and (self.rows["cls"].min() < 0 or self.rows["cls"].max()
                                      >= len(self.settings["class_names"])):
            problems.append("class index out of range")
        if problems:
            raise ArtifactError(f"corrupt labels: {'; '.join(problems)}", path=self.path)
        self._offsets = np.searchsorted(image, np.arange(self.num_images + 1))

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    def __len__(self) -> int:
        return self.num_images

    def boxes_batch(self, indices: Sequence[int], max_boxes: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Padded boxes of images ``indices``: ``(B, M, 4)`` float32 xyxy input pixels and
        ``(B, M)`` int32 classes (-1 pads), ``M = max(max_boxes, most boxes of one)``."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.num_images):
            raise IndexError(f"image indices must be in [0, {self.num_images}), got "
                             f"{indices.min()}..{indices.max()}")
        starts, stops = self._offsets[indices], self._offsets[indices + 1]
        rows = max([int(max_boxes)] + [int(n) for n in stops - starts])
        boxes = np.zeros((len(indices), rows, 4), np.float32)
        classes = np.full((len(indices), rows), -1, np.int32)
        for slot, (start, stop) in enumerate(zip(starts, stops)):
            boxes[slot, :stop - start] = self.rows["xyxy"][start:stop]
            classes[slot, :stop - start] = self.rows["cls"][start:stop]
        return boxes, classes

    def check_settings(self, settings: Mapping[str, Any], name: str = "this command") -> None:
        """As :meth:`LabelsFile.check_settings` (anchors are not stored, so not compared)."""
        check_agree(str(self.path), self.settings, name, settings,
                    hint="re-run encode-labels with this run's settings")

    check_images = LabelsFile.check_images
