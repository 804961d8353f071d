"""Run a detector over images: letterbox, batch, detect, map back, COCO results.

Images come from a folder (its image files, sorted by name, ids ``0, 1, ...``), a single
image file (id 0), or any dataset :func:`detkit.data.dataset.load_dataset` reads (ids are
the records' ``image_id``, so ``eval-map`` can match the results with the ground truth).
Results are COCO detection results: ``{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}`` in original-image pixels, ``category_id`` the class index + 1 unless the
dataset (COCO) or the caller gives category ids.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from detkit.artifacts import atomic_path
from detkit.data.augment import letterbox_image
from detkit.data.images import read_image
from detkit.errors import DataError, UsageError

#: File name endings of images picked up from a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Decimals kept in results (pixels and scores).
BBOX_DECIMALS = 2
SCORE_DECIMALS = 5
#: Scale from uint8 pixels to the model's [0, 1] input.
PIXEL_SCALE = 1.0 / 255.0
#: Drawing: line width and font scale per 500 pixels of the image's longer side.
LINE_PER_500PX = 2
FONT_PER_500PX = 0.5


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One image to run on: its file and the id its results carry."""

    path: Path
    image_id: int


@dataclasses.dataclass
class ImageSet:
    """What ``IMAGES`` resolved to.

    Attributes:
        items: the images, in run order.
        kind: ``"image"``, ``"folder"`` or a dataset format name.
        class_names: the dataset's class names (datasets only).
        category_ids: the dataset's COCO category ids (COCO datasets only).
    """

    items: list[ImageItem]
    kind: str
    class_names: list[str] | None = None
    category_ids: list[int] | None = None


def is_image_file(path: Path) -> bool:
    """True for a file whose name ends in one of :data:`IMAGE_EXTENSIONS`."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def collect_images(path: str | os.PathLike, *, format: str | None = None,
                   classes: str | os.PathLike | None = None) -> ImageSet:
    """Resolve ``IMAGES``: an image file, a folder of images, or a dataset.

    A folder is a dataset when ``format`` is given or it looks like one (VOC xml files,
    YOLO ``images/`` + ``labels/``); otherwise its image files are used.

    Raises:
        DataError: the path does not exist, or a folder without images.
        UsageError: a format that cannot be detected.
    """
    from detkit.data import dataset as datasets

    path = Path(path)
    if not path.exists():
        raise DataError("no such image, folder or dataset", path=path)
    if format is None and is_image_file(path):
        return ImageSet([ImageItem(path, 0)], "image")
    if format is None and path.is_dir():
        try:
            datasets.detect_format(path)
        except UsageError:
            files = sorted(p for p in path.iterdir() if is_image_file(p))
            if not files:
                raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the "
                                f"folder", path=path) from None
            return ImageSet([ImageItem(p, i) for i, p in enumerate(files)], "folder")
    data = datasets.load_dataset(path, format=format, classes=classes)
    items = [ImageItem(Path(r.image_path), int(r.image_id)) for r in data.records]
    return ImageSet(items, data.format, list(data.class_names), data.category_ids)


def load_batch(items: Sequence[ImageItem], input_size: int
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Read and letterbox images: ``(B, S, S, 3)`` float32 in ``[0, 1]`` and the originals.

    Raises:
        DataError: an image is missing or cannot be decoded (names the file).
    """
    originals = [read_image(item.path) for item in items]
    batch = np.stack([letterbox_image(image, input_size) for image in originals])
    return batch.astype(np.float32) * np.float32(PIXEL_SCALE), originals


def detections_to_results(image_id: int, boxes: np.ndarray, scores: np.ndarray,
                          classes: np.ndarray, category_ids: Sequence[int]) -> list[dict]:
    """COCO results of one image from ``(N, 4)`` xyxy image-pixel boxes."""
    results = []
    for box, score, cls in zip(boxes, scores, classes):
        x1, y1, x2, y2 = (float(v) for v in box)
        results.append({
            "image_id": int(image_id),
            "category_id": int(category_ids[int(cls)]),
            "bbox": [round(x1, BBOX_DECIMALS), round(y1, BBOX_DECIMALS),
                     round(x2 - x1, BBOX_DECIMALS), round(y2 - y1, BBOX_DECIMALS)],
            "score": round(float(score), SCORE_DECIMALS),
        })
    return results


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, saturated RGB color per class (golden-angle hue steps)."""
    hue = int((index * 137.508) % 180)
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    classes: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """A copy of ``(H, W, 3)`` uint8 RGB ``image`` with labelled boxes drawn on it."""
    canvas = np.ascontiguousarray(image.copy())
    side = max(image.shape[:2])
    thickness = max(1, round(LINE_PER_500PX * side / 500))
    font = max(0.3, FONT_PER_500PX * side / 500)
    for box, score, cls in zip(boxes, scores, classes):
        color = class_color(int(cls))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        label = f"{class_names[int(cls)]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        top = max(y1, th + base)
        cv2.rectangle(canvas, (x1, top - th - base), (x1 + tw, top), color, -1)
        cv2.putText(canvas, label, (x1, top - base), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def write_drawing(path: Path, image: np.ndarray) -> None:
    """Atomically write an RGB image (format from the suffix)."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise DataError("cannot write image", path=path)


def drawing_names(items: Iterable[ImageItem]) -> list[str]:
    """Output file names of drawn images: the source stem (id-prefixed if stems repeat)."""
    items = list(items)
    stems = [item.path.stem for item in items]
    unique = len(set(stems)) == len(stems)
    return [f"{stem}.jpg" if unique else f"{item.image_id}_{stem}.jpg"
            for item, stem in zip(items, stems)]


def run_predictions(model, items: Sequence[ImageItem], anchors: np.ndarray,
                    input_size: int, *, conf: float, iou: float, max_det: int,
                    batch_size: int, category_ids: Sequence[int],
                    class_names: Sequence[str], draw_dir: Path | None = None,
                    on_batch: Callable[[int], None] | None = None) -> list[dict]:
    """Detect objects in every image; return the COCO results list.

    Args:
        model: a detector from :func:`detkit.models.build_model`.
        items: the images.
        anchors: ``(K, 2)`` anchors in input pixels.
        input_size: letterbox side ``S``.
        conf, iou, max_det: see :func:`detkit.postprocess.detect`.
        batch_size: images per forward pass.
        category_ids: category id of each class index.
        class_names: class names (labels of drawn boxes).
        draw_dir: if given, each image is written there with its boxes drawn.
        on_batch: called with the number of images done after each batch (progress).
    """
    from keras import ops

    from detkit.postprocess import detect, to_image_coords

    results: list[dict] = []
    names = drawing_names(items) if draw_dir is not None else None
    for start in range(0, len(items), batch_size):
        chunk = list(items[start:start + batch_size])
        batch, originals = load_batch(chunk, input_size)
        outputs = model(batch, training=False)
        det = detect(list(outputs), anchors, input_size, conf=conf, iou=iou,
                     max_det=max_det)
        boxes, scores, classes, valid = (ops.convert_to_numpy(t) for t in det)
        for i, (item, image) in enumerate(zip(chunk, originals)):
            n = int(valid[i])
            height, width = image.shape[:2]
            image_boxes = to_image_coords(boxes[i, :n], width, height, input_size)
            results += detections_to_results(item.image_id, image_boxes, scores[i, :n],
                                             classes[i, :n], category_ids)
            if draw_dir is not None:
                drawn = draw_detections(image, image_boxes, scores[i, :n], classes[i, :n],
                                        class_names)
                write_drawing(Path(draw_dir) / names[start + i], drawn)
        if on_batch is not None:
            on_batch(len(chunk))
    return results
