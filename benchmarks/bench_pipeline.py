"""Input pipeline throughput: augmented, encoded training batches from JPEG files.

Measures the images/s that :class:`detkit.data.loader.DetectionBatches` delivers as
training uses it (``augment=True``, shuffled, the YOLOv3 label assigner as encoder, the
way :func:`detkit.training.phases.images_plan` builds it) at 416 px, from JPEG files on
disk (a synthetic dataset of 640 px images, repeated to make enough batches), against
the Keras ``PyDataset`` workers: threads (``workers`` 1, 2, 4; with more than one, also
with OpenCV's own thread pool cut to one thread, ``_cv1``) and processes
(``use_multiprocessing``, 2 and 4). Batches are drawn through the adapter ``fit`` wraps
a ``PyDataset`` in, so the prefetch queue is the one training has; the first batches of
each setting (pool start-up, first decodes) are left out of the rate; each setting's
best epoch counts.

Also reported: where one worker's time goes (decode + augment per image, the float
conversion and the encoder per batch), and this process's CPU milliseconds per image
(threads: all of them, so on a shared machine the figure that neighbours disturb
least; with processes it is what receiving the batches costs the training process).

Run: ``python -m benchmarks.bench_pipeline [--quick] [--workers 1 2 4] [--images N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

INPUT_SIZE = 416
#: Side of the synthetic JPEGs (square, quality 90).
IMAGE_SIZE = 640
BATCH_SIZE = 16
NUM_CLASSES = 4
#: Batches of each setting left out of the rate (pool start-up, first decodes), plus
#: one per worker. The queue holds ``workers`` batches (the fewest that keep every worker
#: busy), so at most that many were made before the clock starts: the rate counts at
#: most ``workers`` batches too many out of :data:`STEADY_BATCHES`.
WARMUP_BATCHES = 2
#: Batches timed per epoch (the records are repeated to make them; 8 with ``quick``).
STEADY_BATCHES = 40
THREAD_WORKERS = (1, 2, 4)
PROCESS_WORKERS = (2, 4)


def make_records(folder: Path, images: int):
    """A synthetic JPEG dataset in ``folder``; returns its training records."""
    from detkit.data.dataset import load_dataset
    from detkit.data.synth import make_synth_dataset

    make_synth_dataset(folder, images=images, size=IMAGE_SIZE, classes=NUM_CLASSES,
                       seed=0, val_fraction=0.0, image_format="jpg")
    return load_dataset(folder / "train.txt").records


def make_loader(records, *, workers: int = 1, use_multiprocessing: bool = False,
                seed: int = 0):
    """The training loader of a YOLOv3 run (augmented, shuffled, encoded targets)."""
    from detkit.data.loader import DetectionBatches
    from detkit.families import get_family

    family = get_family("yolov3")
    anchors, _ = family.resolve_anchors(None)
    encoder = family.make_assigner(anchors, INPUT_SIZE, NUM_CLASSES, seed=seed)
    return DetectionBatches(records, INPUT_SIZE, BATCH_SIZE, augment=True, shuffle=True,
                            seed=seed, encoder=encoder, workers=workers,
                            use_multiprocessing=use_multiprocessing,
                            max_queue_size=workers)


def measure(records, workers: int, use_multiprocessing: bool, epochs: int,
            steady: int = STEADY_BATCHES) -> dict:
    """Steady-state images/s of one setting, batches drawn as ``fit`` draws them."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    warmup = WARMUP_BATCHES + workers
    needed = (warmup + steady) * BATCH_SIZE
    records = list(records) * -(-needed // len(records))
    loader = make_loader(records[:needed], workers=workers,
                         use_multiprocessing=use_multiprocessing)
    adapter = PyDatasetAdapter(loader, shuffle=False)
    rates, cpu_per_image = [], []
    for _ in range(epochs):
        adapter.on_epoch_begin()
        count, start, start_cpu = 0, None, None
        for batch, (images, _targets) in enumerate(adapter.get_numpy_iterator()):
            if batch + 1 == warmup:  # the clock starts after the warm-up batches
                start, start_cpu = time.perf_counter(), time.process_time()
            elif batch + 1 > warmup:
                count += len(images)
        if count:
            rates.append(count / (time.perf_counter() - start))
            cpu_per_image.append((time.process_time() - start_cpu) / count)
        adapter.on_epoch_end()
    return {"images_per_s": max(rates), "cpu_ms_per_image": 1e3 * min(cpu_per_image)}


def breakdown(records, batches: int) -> dict:
    """Milliseconds of one worker's stages: sample (decode + augment), float, encode."""
    from detkit.data.loader import PAD_CLASS

    loader = make_loader(records)
    sample_s = float_s = encode_s = 0.0
    count = 0
    for batch in range(min(batches, len(loader))):
        indices = loader.order[batch * BATCH_SIZE:(batch + 1) * BATCH_SIZE]
        boxes = np.zeros((len(indices), loader.max_boxes, 4), np.float32)
        classes = np.full((len(indices), loader.max_boxes), PAD_CLASS, np.int32)
        images = np.empty((len(indices), INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        for slot, index in enumerate(indices):
            start = time.perf_counter()
            sample = loader.load_sample(int(index))
            sample_s += time.perf_counter() - start
            start = time.perf_counter()
            np.multiply(sample.image, np.float32(1 / 255), out=images[slot])
            float_s += time.perf_counter() - start
            boxes[slot, :len(sample.boxes)] = sample.boxes[:loader.max_boxes]
            classes[slot, :len(sample.boxes)] = sample.classes[:loader.max_boxes]
        start = time.perf_counter()
        loader.encoder(boxes, classes)
        encode_s += time.perf_counter() - start
        count += len(indices)
    return {"sample_ms_per_image": 1e3 * sample_s / count,
            "float_ms_per_image": 1e3 * float_s / count,
            "encode_ms_per_image": 1e3 * encode_s / count}


def main(quick: bool = False, workers: tuple[int, ...] = THREAD_WORKERS,
         processes: tuple[int, ...] = PROCESS_WORKERS, images: int | None = None) -> dict:
    """Measure every setting; print and return the figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2

    images = images or (32 if quick else 128)
    epochs = 1 if quick else 2
    result: dict = {"input_size": INPUT_SIZE, "image_size": IMAGE_SIZE,
                    "batch_size": BATCH_SIZE, "images": images,
                    "warmup_batches": WARMUP_BATCHES,
                    "steady_batches": 8 if quick else STEADY_BATCHES,
                    "cpu_count": os.cpu_count(),
                    "opencv_threads": cv2.getNumThreads()}
    with tempfile.TemporaryDirectory() as tmp:
        records = make_records(Path(tmp) / "data", images)
        result.update(breakdown(records, 2 if quick else 8))
        opencv_threads = cv2.getNumThreads()
        settings = [(count, False, None) for count in workers]
        # OpenCV's own thread pool under several loader threads: left as is, or one
        # thread per call (no oversubscription of the cores).
        settings += [(count, False, 1) for count in workers if count > 1]
        settings += [(count, True, None) for count in processes]
        for count, multiprocessing, cv_threads in settings:
            key = f"{'processes' if multiprocessing else 'threads'}{count}"
            key += "" if cv_threads is None else f"_cv{cv_threads}"
            cv2.setNumThreads(opencv_threads if cv_threads is None else cv_threads)
            try:
                figures = measure(records, count, multiprocessing, epochs,
                                  8 if quick else STEADY_BATCHES)
            except Exception as err:  # noqa: BLE001 - report the setting that fails
                result[f"{key}_error"] = f"{type(err).__name__}: {err}"
                print(f"{key}: failed: {type(err).__name__}: {err}", flush=True)
                continue
            finally:
                cv2.setNumThreads(opencv_threads)
            result[f"{key}_images_per_s"] = figures["images_per_s"]
            result[f"{key}_cpu_ms_per_image"] = figures["cpu_ms_per_image"]
            print(f"{key}: {figures['images_per_s']:.1f} images/s "
                  f"({figures['cpu_ms_per_image']:.1f} ms CPU of this process per image)",
                  flush=True)
    result["load_average_1min"] = os.getloadavg()[0]
    base = result.get("threads1_images_per_s")
    if base:
        for key in [k for k in result if k.endswith("_images_per_s")]:
            result[key.replace("_images_per_s", "_speedup")] = result[key] / base
    result["images_per_s"] = max([v for k, v in result.items()
                                  if k.endswith("_images_per_s")] or [0.0])
    print(f"one worker: {result['sample_ms_per_image']:.2f} ms decode+augment, "
          f"{result['float_ms_per_image']:.2f} ms to float, "
          f"{result['encode_ms_per_image']:.2f} ms encode per image; best "
          f"{result['images_per_s']:.0f} images/s (load average "
          f"{result['load_average_1min']:.1f} on {result['cpu_count']} CPUs)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, nargs="*", default=list(THREAD_WORKERS),
                        help="thread worker counts")
    parser.add_argument("--processes", type=int, nargs="*", default=list(PROCESS_WORKERS),
                        help="process worker counts (use_multiprocessing)")
    parser.add_argument("--images", type=int, default=None)
    args = parser.parse_args()
    main(quick=args.quick, workers=tuple(args.workers), processes=tuple(args.processes),
         images=args.images)
