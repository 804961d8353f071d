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
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from detkit.artifacts import atomic_path
from detkit.data import dataset as datasets
from detkit.data.augment import letterbox_image
from detkit.data.images import read_image
from detkit.data.letterbox import Letterbox
from detkit.data.readers.dataset_file import read_dataset_file
from detkit.errors import DataError, UsageError

#: File name endings of images picked up from a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: File name endings read as videos (OpenCV decodes them frame by frame).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
#: FourCC of the drawn video per file ending (the endings ``--save-video`` takes: other
#: containers are refused, or written wrong by OpenCV: a .gif as a sequence of frames).
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v",
                ".avi": "MJPG"}
#: Score a detection needs to be drawn (the results keep every one above ``--conf``, low
#: for mAP; a drawing of those would bury the image under boxes).
DRAW_CONF = 0.25
#: Frame rate written when the source video does not say.
DEFAULT_FPS = 25.0
#: Decimals kept in results (pixels and scores).
BBOX_DECIMALS = 2
SCORE_DECIMALS = 5
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
        files: every file it is made of: the images, and a dataset's annotation and class
            names files.
    """

    items: list[ImageItem]
    kind: str
    class_names: list[str] | None = None
    category_ids: list[int] | None = None
    files: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.files:
            self.files = [str(item.path) for item in self.items]


def is_image_file(path: Path) -> bool:
    """True for a file whose name ends in one of :data:`IMAGE_EXTENSIONS`."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def is_video_file(path: Path) -> bool:
    """True for a file whose name ends in one of :data:`VIDEO_EXTENSIONS`."""
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def collect_images(path: str | os.PathLike, *, format: str | None = None,
                   classes: str | os.PathLike | Sequence[str] | None = None) -> ImageSet:
    """Resolve ``IMAGES``: an image file, a folder of images, or a dataset (of an
    Ultralytics dataset file, its ``val`` split).

    A folder is a dataset when ``format`` is given or it looks like one (VOC xml files,
    YOLO ``images/`` + ``labels/``); otherwise its image files are used.

    Raises:
        DataError: the path does not exist, or a folder without images.
        UsageError: a format that cannot be detected.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such image, folder or dataset", path=path)
    described = read_dataset_file(path)
    parts = described.split("val") if described is not None else []
    if len(parts) == 1:                  # its val split: a dataset or a folder of images
        path = parts[0]
        classes = classes if classes is not None else described.names
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
    data = datasets.load_dataset(path, format=format, classes=classes, split="val")
    items = [ImageItem(Path(r.image_path), int(r.image_id)) for r in data.records]
    return ImageSet(items, data.format, list(data.class_names), data.category_ids,
                    data.files())


def load_images(items: Sequence[ImageItem], input_size: int
                ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Read and letterbox images: ``(B, S, S, 3)`` uint8 RGB and the originals.

    This is the input of every detector and export (see :mod:`detkit.export.graph`).

    Raises:
        DataError: an image is missing or cannot be decoded (names the file).
    """
    originals = [read_image(item.path) for item in items]
    return letterboxed(originals, input_size), originals


def letterboxed(images: Sequence[np.ndarray], input_size: int) -> np.ndarray:
    """``(B, S, S, 3)`` uint8: each RGB image letterboxed to the input side."""
    return np.stack([letterbox_image(image, input_size) for image in images])


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
                    classes: np.ndarray, class_names: Sequence[str],
                    min_score: float = DRAW_CONF) -> np.ndarray:
    """A copy of ``(H, W, 3)`` uint8 RGB ``image`` with the boxes scoring at least
    ``min_score`` drawn on it, labelled with class and score."""
    keep = np.asarray(scores) >= min_score
    boxes, scores, classes = (np.asarray(boxes)[keep], np.asarray(scores)[keep],
                              np.asarray(classes)[keep])
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


def check_drawings(items: Sequence[ImageItem], draw_dir: Path) -> None:
    """Refuse a ``draw_dir`` where a drawing would be written over one of the images.

    Raises:
        UsageError: naming the image and the folder.
    """
    images = {os.path.realpath(item.path): item.path for item in items}
    for name in drawing_names(items):
        target = os.path.realpath(Path(draw_dir) / name)
        if target in images:
            raise UsageError(f"--draw-dir {draw_dir} would overwrite the input image "
                             f"{images[target]} with its drawing; choose another --draw-dir")


def detect_images(detector, images: Sequence[np.ndarray], image_ids: Sequence[int],
                  category_ids: Sequence[int]) -> tuple[list[dict], list[tuple]]:
    """Run ``detector`` on original RGB images; COCO results and per-image detections.

    Returns:
        The results of every image, and per image ``(boxes, scores, classes)`` in image
        pixels (for drawing).
    """
    found = detector(letterboxed(images, detector.input_size))
    results, per_image = [], []
    for i, (image_id, image) in enumerate(zip(image_ids, images)):
        n = int(found.valid[i])
        height, width = image.shape[:2]
        boxes = Letterbox(width, height, detector.input_size).to_image(found.boxes[i, :n])
        scores, classes = found.scores[i, :n], found.classes[i, :n]
        results += detections_to_results(image_id, boxes, scores, classes, category_ids)
        per_image.append((boxes, scores, classes))
    return results, per_image


def run_predictions(detector, items: Sequence[ImageItem], *, batch_size: int,
                    category_ids: Sequence[int], class_names: Sequence[str],
                    draw_dir: Path | None = None, draw_conf: float = DRAW_CONF,
                    on_batch: Callable[[int], None] | None = None) -> list[dict]:
    """Detect objects in every image, a batch at a time; return the COCO results list.

    Args:
        detector: a :class:`detkit.export.detectors.Detector` (Keras or an export).
        items: the images (read one batch at a time).
        batch_size: images per call.
        category_ids: category id of each class index.
        class_names: class names (labels of drawn boxes).
        draw_dir: if given, each image is written there with its boxes drawn (those
            scoring at least ``draw_conf``).
        on_batch: called with the number of images done after each batch (progress).
    """
    results: list[dict] = []
    names = drawing_names(items) if draw_dir is not None else None
    for start in range(0, len(items), batch_size):
        chunk = list(items[start:start + batch_size])
        originals = [read_image(item.path) for item in chunk]
        found, per_image = detect_images(detector, originals,
                                         [item.image_id for item in chunk], category_ids)
        results += found
        if draw_dir is not None:
            for i, (image, (boxes, scores, classes)) in enumerate(zip(originals, per_image)):
                drawn = draw_detections(image, boxes, scores, classes, class_names,
                                        draw_conf)
                write_drawing(Path(draw_dir) / names[start + i], drawn)
        if on_batch is not None:
            on_batch(len(chunk))
    return results


@dataclasses.dataclass
class VideoInfo:
    """A video's geometry and timing.

    Attributes:
        width, height: frame size in pixels.
        fps: frames per second (``DEFAULT_FPS`` when the file does not say).
        frames: the frame count the container announces (may be approximate; 0 unknown).
    """

    width: int
    height: int
    fps: float
    frames: int


def open_video(path: str | os.PathLike):
    """``(cv2.VideoCapture, VideoInfo)`` of a video file.

    Raises:
        DataError: the file is missing or OpenCV cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such video", path=path)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError("cannot decode video (unknown container or codec)", path=path)
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    info = VideoInfo(width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     fps=fps if fps > 0 else DEFAULT_FPS,
                     frames=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0))
    return capture, info


def frame_batches(capture, batch_size: int) -> Iterable[list[np.ndarray]]:
    """RGB frames of an open capture, ``batch_size`` at a time, decoded as they are read."""
    batch = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def video_codec(path: Path) -> str:
    """The FourCC a drawn video ``path`` is written with.

    Raises:
        UsageError: an ending OpenCV cannot write a video to (naming the ones it can).
    """
    codec = VIDEO_CODECS.get(Path(path).suffix.lower())
    if codec is None:
        raise UsageError(f"--save-video {path}: a drawn video is written as "
                         f"{', '.join(VIDEO_CODECS)}; not "
                         f"{Path(path).suffix or 'a name without an ending'}")
    return codec


class VideoSink:
    """Drawn frames written to a temporary file beside ``path``, renamed onto it by
    :meth:`close` (removed by :meth:`discard`), so a video appears only once complete."""

    def __init__(self, path: Path, info: VideoInfo):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{self.path.name}")
        codec = video_codec(self.path)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec),
                                       info.fps, (info.width, info.height))
        if not self._writer.isOpened():
            self.discard()
            raise DataError(f"cannot write a {codec} video here (try .mp4 or .avi)",
                            path=self.path)

    def write(self, image: np.ndarray) -> None:
        """Append one RGB frame."""
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        """Finish the file and move it into place."""
        self._writer.release()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        """Drop the partial file."""
        self._writer.release()
        self._tmp.unlink(missing_ok=True)


def run_video(detector, path: str | os.PathLike, *, batch_size: int,
              category_ids: Sequence[int], class_names: Sequence[str],
              save_video: Path | None = None, draw_conf: float = DRAW_CONF,
              on_batch: Callable[[int], None] | None = None
              ) -> tuple[list[dict], VideoInfo, int]:
    """Detect objects in every frame of a video, streaming; optionally write it drawn.

    Frames are decoded, detected and (with ``save_video``) drawn and written one batch
    at a time, so a long video never sits in memory. Result ``image_id`` is the frame
    index (from 0).

    Returns:
        ``(results, info, frames read)``.

    Raises:
        DataError: an unreadable video, or a drawn video that cannot be written.
    """
    capture, info = open_video(path)
    sink = VideoSink(Path(save_video), info) if save_video is not None else None
    results, done = [], 0
    try:
        for frames in frame_batches(capture, batch_size):
            ids = list(range(done, done + len(frames)))
            found, per_image = detect_images(detector, frames, ids, category_ids)
            results += found
            if sink is not None:
                for frame, (boxes, scores, classes) in zip(frames, per_image):
                    sink.write(draw_detections(frame, boxes, scores, classes, class_names,
                                               draw_conf))
            done += len(frames)
            if on_batch is not None:
                on_batch(len(frames))
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    finally:
        capture.release()
    if done == 0:
        if sink is not None:
            sink.discard()
        raise DataError("the video has no frames OpenCV can decode", path=Path(path))
    if sink is not None:
        sink.close()
    return results, info, done
