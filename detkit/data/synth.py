"""A synthetic detection dataset detkit makes itself, for the demo, tests and CI.

Each image is a textured, noisy background with up to ``max_objects`` filled shapes of
:data:`SHAPES` (circle, rectangle, triangle, cross, star, ring), sized from ``min_size``
to ``max_size`` of the image side (log-uniform), with varied aspect ratios, rotations
and saturated colors that contrast with the background. Shapes may overlap, but a later
shape hides at most :data:`MAX_HIDDEN` of an earlier one. Every
:data:`EMPTY_EVERY`-th image has no objects (a negative).

Boxes are exact: every shape is drawn into an instance map, and a box is the extent of
the shape's *visible* pixels, ``x2 = last column + 1`` (0-based, ``x2`` exclusive).
Image ``i`` depends only on ``(seed, i)`` and the options, never on the image count.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import os
from pathlib import Path

import cv2
import numpy as np

from detkit.artifacts import atomic_path
from detkit.data.records import ImageRecord
from detkit.data.writers import write_class_names, write_coco_json, write_yolo3_lines
from detkit.errors import DataError, UsageError

#: Shape classes in class-index order; ``--classes C`` uses the first C.
SHAPES = ("circle", "rectangle", "triangle", "cross", "star", "ring")
#: Largest width/height ratio of each shape's nominal box.
MAX_ASPECT = {"circle": 1.4, "rectangle": 3.0, "triangle": 1.6, "cross": 1.5,
              "star": 1.3, "ring": 1.4}
#: Every EMPTY_EVERY-th image (index ``EMPTY_EVERY - 1``, ...) has no objects.
EMPTY_EVERY = 20
#: Largest fraction of an earlier shape's pixels that later shapes may hide.
MAX_HIDDEN = 0.35
#: Placement attempts per object before giving up on it.
PLACEMENT_TRIES = 25
#: Fewest visible pixels an object must keep.
MIN_PIXELS = 9
#: Smallest RGB distance between a shape's color and the background under it.
MIN_CONTRAST = 90.0
COLOR_TRIES = 12
#: Pixels added around a shape's geometric extent to be sure to hold its raster.
WINDOW_MARGIN = 2
#: Fixed-point bits of polygon vertices (OpenCV ``shift``): 1/16 pixel precision.
SHIFT = 4
JPEG_QUALITY = 90
IMAGE_FORMATS = ("jpg", "png")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 8192
IMAGES_DIR = "images"
#: The files beside ``images/``: class names, COCO ground truth, keras-yolo3 lines.
CLASSES_FILE, TRAIN_JSON, VAL_JSON, VAL_LINES, TRAIN_LINES = (
    "classes.txt", "train.json", "val.json", "val.txt", "train.txt")
DATASET_FILES = (CLASSES_FILE, TRAIN_JSON, VAL_JSON, VAL_LINES, TRAIN_LINES)


@dataclasses.dataclass
class SynthDataset:
    """What :func:`make_synth_dataset` wrote.

    Attributes:
        out_dir: the dataset folder.
        class_names: the shape names used, in class-index order.
        train_path, val_path: keras-yolo3 lines files (image paths relative to out_dir).
        classes_path: ``classes.txt``.
        train_json, val_json: COCO ground truth of each split (image ids = line index).
        n_train, n_val, n_empty, n_boxes: image and box counts.
        class_counts: boxes per class (all splits).
    """

    out_dir: Path
    class_names: list[str]
    train_path: Path
    val_path: Path
    classes_path: Path
    train_json: Path
    val_json: Path
    n_train: int
    n_val: int
    n_empty: int
    n_boxes: int
    class_counts: list[int]

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_val


# --------------------------------------------------------------------------- shapes

def _unit_polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices ``(V, 2)`` of a polygonal shape in ``[-1, 1]^2`` (before scale/rotation)."""
    if kind == "rectangle":
        return np.float64([[-1, -1], [1, -1], [1, 1], [-1, 1]])
    if kind == "triangle":
        angles = np.deg2rad(np.float64([-90, 30, 150]) + rng.uniform(-20, 20, 3))
        radii = rng.uniform(0.8, 1.0, 3)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if kind == "cross":
        t = rng.uniform(0.28, 0.42)  # half thickness of each arm
        return np.float64([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1],
                           [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t]])
    if kind == "star":
        inner = rng.uniform(0.4, 0.52)
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    raise ValueError(f"not a polygon shape: {kind!r}")


#: Rotation range (degrees) of each shape: rectangles and crosses stay near upright so
#: they remain unlike diamonds and X marks; round shapes need none.
MAX_ROTATION = {"circle": 0.0, "ring": 0.0, "rectangle": 15.0, "cross": 20.0,
                "triangle": 180.0, "star": 180.0}


def draw_shape(mask: np.ndarray, kind: str, center: tuple[float, float],
               half_size: tuple[float, float], rng: np.random.Generator
               ) -> tuple[slice, slice]:
    """Fill shape ``kind`` with 1 in ``mask`` ``(H, W)`` uint8.

    Args:
        mask: the canvas, modified in place.
        kind: one of :data:`SHAPES`.
        center: ``(cx, cy)`` in pixels.
        half_size: ``(w / 2, h / 2)`` of the shape's nominal (unrotated) box, pixels.
        rng: draws the shape's own variation (rotation, proportions).

    Returns:
        ``(rows, cols)`` slices of a window of ``mask`` that holds every filled pixel.
    """
    scale = 1 << SHIFT
    cx, cy = center
    hw, hh = half_size
    angle = rng.uniform(-MAX_ROTATION[kind], MAX_ROTATION[kind])
    if kind in ("circle", "ring"):
        c = (round(cx * scale), round(cy * scale))
        cv2.ellipse(mask, c, (round(hw * scale), round(hh * scale)), angle, 0, 360, 1,
                    -1, cv2.LINE_8, SHIFT)
        if kind == "ring":
            hole = rng.uniform(0.45, 0.6)
            cv2.ellipse(mask, c, (round(hw * hole * scale), round(hh * hole * scale)),
                        angle, 0, 360, 0, -1, cv2.LINE_8, SHIFT)
        extent = np.float64([[cx - hw, cy - hh], [cx + hw, cy + hh]])
    else:
        points = _unit_polygon(kind, rng) * np.float64([hw, hh])
        theta = math.radians(angle)
        rotation = np.float64([[math.cos(theta), -math.sin(theta)],
                               [math.sin(theta), math.cos(theta)]])
        points = points @ rotation.T + np.float64([cx, cy])
        cv2.fillPoly(mask, [np.round(points * scale).astype(np.int32)], 1, cv2.LINE_8,
                     SHIFT)
        extent = points
    height, width = mask.shape
    x0, y0 = np.floor(extent.min(axis=0)).astype(int) - WINDOW_MARGIN
    x1, y1 = np.ceil(extent.max(axis=0)).astype(int) + WINDOW_MARGIN
    return (slice(max(y0, 0), min(y1, height)), slice(max(x0, 0), min(x1, width)))


# ------------------------------------------------------------------------ rendering

def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size, 3)`` float32 RGB: muted base color, smooth blobs, a texture."""
    base = rng.uniform(60, 195) + rng.uniform(-25, 25, 3)
    grid = rng.integers(2, 7)
    small = max(size // 8, grid)  # smooth at low resolution, then a cheap upscale
    blobs = cv2.resize(rng.normal(0, 1, (grid, grid, 3)).astype(np.float32), (small, small),
                       interpolation=cv2.INTER_CUBIC)
    blobs = cv2.resize(blobs, (size, size), interpolation=cv2.INTER_LINEAR)
    image = base.astype(np.float32) + blobs * np.float32(rng.uniform(8, 30))
    texture = rng.integers(3)
    if texture == 1:  # stripes
        period, theta = rng.uniform(6, 40), rng.uniform(0, np.pi)
        axis = np.arange(size, dtype=np.float32) * np.float32(2 * np.pi / period)
        wave = np.sin(axis[None, :] * np.float32(np.cos(theta)) +
                      axis[:, None] * np.float32(np.sin(theta)))
        image += (wave * rng.uniform(4, 14)).astype(np.float32)[..., None]
    elif texture == 2:  # coarse grain
        cells = max(2, size // int(rng.integers(3, 9)))
        grain = cv2.resize(rng.normal(0, 1, (cells, cells, 1)).astype(np.float32),
                           (size, size), interpolation=cv2.INTER_LINEAR)
        image += grain[..., None] * np.float32(rng.uniform(4, 12))
    return image


def _shape_color(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A saturated RGB color far (>= MIN_CONTRAST) from ``under``, the mean color below."""
    best, best_distance = None, -1.0
    for _ in range(COLOR_TRIES):
        rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))
        color = np.float32(rgb) * 255
        distance = float(np.linalg.norm(color - under))
        if distance >= MIN_CONTRAST:
            return color
        if distance > best_distance:
            best, best_distance = color, distance
    return best


def _place(rng: np.random.Generator, size: int, kind: str, min_size: float,
           max_size: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Random center and half size of a shape (longer side log-uniform in the range)."""
    side = size * math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
    aspect = math.exp(rng.uniform(-1, 1) * math.log(MAX_ASPECT[kind]))
    w, h = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    cx = rng.uniform(w / 2, size - w / 2)
    cy = rng.uniform(h / 2, size - h / 2)
    return (cx, cy), (w / 2, h / 2)


def render_sample(seed: int, index: int, *, size: int = 256, num_classes: int = 4,
                  max_objects: int = 6, min_size: float = 0.04, max_size: float = 0.6,
                  with_instances: bool = False) -> tuple[np.ndarray, ...]:
    """Render synthetic image ``index`` of dataset ``seed``.

    Returns:
        ``(image (size, size, 3) uint8 RGB, boxes (N, 4) float32 xyxy pixels,
        classes (N,) int32)``; ``N = 0`` for every :data:`EMPTY_EVERY`-th image. With
        ``with_instances``, also the ``(size, size)`` int16 map of which object
        (``1..N``, 0 = background) each pixel shows.
    """
    rng = np.random.default_rng([seed, index])
    image = _background(rng, size)
    ids = np.zeros((size, size), np.int16)  # 0 = background, k = the k-th object
    mask = np.zeros((size, size), np.uint8)
    areas, visible, windows, classes = [], [], [], []
    empty = index % EMPTY_EVERY == EMPTY_EVERY - 1
    for _ in range(0 if empty else int(rng.integers(1, max_objects + 1))):
        class_id = int(rng.integers(num_classes))
        kind = SHAPES[class_id]
        for _ in range(PLACEMENT_TRIES):
            center, half = _place(rng, size, kind, min_size, max_size)
            window = draw_shape(mask, kind, center, half, rng)
            inside = mask[window].astype(bool)
            mask[window] = 0
            pixels = int(inside.sum())
            if pixels < MIN_PIXELS:
                continue
            hidden = np.bincount(ids[window][inside], minlength=len(areas) + 1)[1:]
            left = np.asarray(visible, np.int64) - hidden
            if np.all(left >= (1 - MAX_HIDDEN) * np.asarray(areas, np.float64)):
                break
        else:
            continue
        ys, xs = np.nonzero(inside)
        ys, xs = ys + window[0].start, xs + window[1].start
        color = _shape_color(rng, image[ys, xs].mean(axis=0))
        direction = rng.normal(0, 1, 2)
        shade = (xs * direction[0] + ys * direction[1]).astype(np.float32)
        shade = (shade - shade.mean()) / max(float(np.ptp(shade)), 1.0)
        image[ys, xs] = color + (shade * np.float32(rng.uniform(0, 40)))[:, None]
        visible = [int(v) for v in left] + [pixels]
        areas.append(pixels)
        windows.append(window)
        classes.append(class_id)
        ids[ys, xs] = len(areas)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * np.float32(rng.uniform(2, 8))
    image = np.clip(image, 0, 255).astype(np.uint8)
    boxes, classes = _visible_boxes(ids, windows), np.asarray(classes, np.int32)
    return (image, boxes, classes, ids) if with_instances else (image, boxes, classes)


def _visible_boxes(ids: np.ndarray, windows: list[tuple[slice, slice]]) -> np.ndarray:
    """``(K, 4)`` float32 extents (``x2`` exclusive) of the pixels of objects ``1..K``."""
    boxes = np.zeros((len(windows), 4), np.float32)
    for k, (rows, cols) in enumerate(windows):
        own = ids[rows, cols] == k + 1
        ys = np.flatnonzero(own.any(axis=1))
        xs = np.flatnonzero(own.any(axis=0))
        boxes[k] = (cols.start + xs[0], rows.start + ys[0], cols.start + xs[-1] + 1,
                    rows.start + ys[-1] + 1)
    return boxes


# -------------------------------------------------------------------------- dataset

def check_options(images: int, size: int, classes: int, seed: int, val_fraction: float,
                  image_format: str, max_objects: int, min_size: float,
                  max_size: float) -> None:
    """Raise :class:`UsageError` (exit 2) for option values that make no dataset."""
    problems = []
    if images < 1:
        problems.append(f"--images must be at least 1, got {images}")
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        problems.append(f"--size must be in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, got {size}")
    if not 1 <= classes <= len(SHAPES):
        problems.append(f"--classes must be in 1..{len(SHAPES)} ({', '.join(SHAPES)}), "
                        f"got {classes}")
    if seed < 0:
        problems.append(f"--seed must be non-negative, got {seed}")
    if not 0 <= val_fraction < 1:
        problems.append(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if image_format not in IMAGE_FORMATS:
        problems.append(f"--image-format must be one of {', '.join(IMAGE_FORMATS)}, "
                        f"got {image_format!r}")
    if max_objects < 1:
        problems.append(f"--max-objects must be at least 1, got {max_objects}")
    if not 0 < min_size <= max_size <= 1:
        problems.append(f"need 0 < --min-size <= --max-size <= 1, got {min_size} and "
                        f"{max_size}")
    if problems:
        raise UsageError("; ".join(problems))


def split_indices(images: int, val_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the validation images (a seeded choice, at least one train)."""
    n_val = int(round(images * val_fraction))
    if val_fraction > 0 and images >= 2:
        n_val = min(max(n_val, 1), images - 1)
    else:
        n_val = 0
    order = np.random.default_rng([seed, images, 0x5EED]).permutation(images)
    return np.sort(order[:n_val])


def _write_image(path: Path, image: np.ndarray, image_format: str) -> None:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_format == "jpg" else []
    ok, encoded = cv2.imencode("." + image_format, bgr, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def make_synth_dataset(out_dir: str | os.PathLike, images: int = 200, size: int = 256,
                       classes: int = 4, seed: int = 0, val_fraction: float = 0.2, *,
                       image_format: str = "jpg", max_objects: int = 6,
                       min_size: float = 0.04, max_size: float = 0.6) -> SynthDataset:
    """Write a synthetic dataset to ``out_dir``.

    Writes ``images/NNNNNN.jpg``, ``classes.txt``, ``train.json`` and ``val.json``
    (COCO), ``val.txt`` and, last, ``train.txt`` (keras-yolo3 lines with image paths
    relative to ``out_dir``), each atomically.

    Args:
        out_dir: the dataset folder (created).
        images: number of images (train + val).
        size: image side in pixels (images are square).
        classes: number of shape classes, the first ``classes`` of :data:`SHAPES`.
        seed: random seed (non-negative); the same seed writes the same dataset.
        val_fraction: share of images in the validation split.
        image_format: ``"jpg"`` (quality 90) or ``"png"``.
        max_objects: most objects in one image.
        min_size, max_size: range of an object's longer side, as a fraction of ``size``.

    Raises:
        UsageError: an option value out of range, or ``out_dir`` is a file.
        DataError: the folder cannot be written.
    """
    check_options(images, size, classes, seed, val_fraction, image_format, max_objects,
                  min_size, max_size)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("the output exists and is not a folder", path=out_dir)
    try:
        return _write_dataset(out_dir, images, size, classes, seed, val_fraction,
                              image_format, max_objects, min_size, max_size)
    except OSError as err:
        raise DataError(f"cannot write the dataset: {err.strerror or err}",
                        path=err.filename or out_dir) from None


def _write_dataset(out_dir: Path, images: int, size: int, classes: int, seed: int,
                   val_fraction: float, image_format: str, max_objects: int,
                   min_size: float, max_size: float) -> SynthDataset:
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    names = list(SHAPES[:classes])
    digits = max(6, len(str(images - 1)))
    val_set = set(split_indices(images, val_fraction, seed).tolist())
    train, val = [], []
    for index in range(images):
        image, boxes, labels = render_sample(seed, index, size=size, num_classes=classes,
                                             max_objects=max_objects, min_size=min_size,
                                             max_size=max_size)
        path = out_dir / IMAGES_DIR / f"{index:0{digits}d}.{image_format}"
        _write_image(path, image, image_format)
        split = val if index in val_set else train
        split.append(ImageRecord(str(path), size, size, boxes, labels,
                                 image_id=len(split)))
    classes_path = write_class_names(out_dir / CLASSES_FILE, names)
    train_json = write_coco_json(out_dir / TRAIN_JSON, train, names)
    val_json = write_coco_json(out_dir / VAL_JSON, val, names)
    val_path = write_yolo3_lines(out_dir / VAL_LINES, val)
    train_path = write_yolo3_lines(out_dir / TRAIN_LINES, train)
    everything = train + val
    counts = np.bincount(np.concatenate([r.classes for r in everything]),
                         minlength=classes) if everything else np.zeros(classes, int)
    return SynthDataset(out_dir=out_dir, class_names=names, train_path=train_path,
                        val_path=val_path, classes_path=classes_path,
                        train_json=train_json, val_json=val_json, n_train=len(train),
                        n_val=len(val),
                        n_empty=sum(1 for r in everything if r.num_boxes == 0),
                        n_boxes=int(counts.sum()), class_counts=counts.tolist())
