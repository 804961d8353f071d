"""Distillation gain: a yolov3-tiny width 0.25 student with and without a teacher.

Workload (the issue's, scaled to a CPU): on the synthetic dataset (96 px, objects 15-60 %
of the image so that a few hundred steps learn them), a teacher ``yolov3-tiny`` width 1.0 is
trained (from scratch, augmented, ``best.weights.h5`` by ``val_loss``); then for each of
3 seeds a student ``yolov3-tiny`` width 0.25 is trained twice for the same epochs with the
same seed, data order and augmentation: once by ``detkit train`` (the reference: no
teacher) and once by ``detkit distill`` with the teacher in-graph (``--alpha``). mAP@0.5
of each student's ``last.weights.h5`` on the val split is measured with pycocotools
(:func:`benchmarks.bench_train_quality.coco_map50`). Goal: the distilled students' mean
mAP@0.5 beats the plain students' mean by at least 2 points.

Run: ``python -m benchmarks.bench_distill [--quick | --gpu] [--model yolov2-tiny]``
(quick: seconds, one seed, no goal; gpu: the full-size workload of :data:`GPU`; ``--model``:
teacher and students of another family that distills into itself, e.g. ``yolov2-tiny``
with 5 k-means anchors, on the CPU at its :data:`FULL_FOR_MODEL` settings).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The goal: mean mAP@0.5 gain of the distilled students, in mAP points (0-100 scale).
TARGET_GAIN_POINTS = 2.0
#: Full run (sized for ~15 minutes on a quiet 2-core CPU).
FULL = dict(images=200, size=96, classes=4, min_size=0.15, max_objects=4, input_size=96,
            batch_size=8, teacher_width=1.0, teacher_epochs=40, teacher_lr=5e-3,
            student_width=0.25, student_epochs=20, student_lr=5e-3,
            alpha=0.5, temperature=1.0, seeds=(0, 1, 2), workers=2)
#: The issue's workload at full size, for an accelerator (``--gpu``; run with
#: ``KERAS_BACKEND=jax`` where TensorFlow has no GPU).
GPU = dict(images=1000, size=256, classes=4, min_size=0.04, max_objects=6, input_size=256,
           batch_size=16, teacher_width=1.0, teacher_epochs=30, teacher_lr=5e-3,
           student_width=0.25, student_epochs=16, student_lr=5e-3,
           alpha=0.5, temperature=1.0, seeds=(0, 1, 2), workers=6, jit=True)
#: Changes to :data:`FULL` for a family: YOLOv2's one stride-32 output is a 3x3 grid at
#: 96 px, so its CPU run is at 160 px (5x5) with a width-0.5 teacher to stay in budget.
FULL_FOR_MODEL = {"yolov2-tiny": dict(size=160, input_size=160, teacher_width=0.5)}
QUICK = dict(images=24, size=64, classes=2, min_size=0.15, max_objects=4, input_size=64,
             batch_size=8, teacher_width=0.125, teacher_epochs=1, teacher_lr=1e-3,
             student_width=0.0625, student_epochs=1, student_lr=1e-3,
             alpha=0.5, temperature=1.0, seeds=(0,), workers=1)


def _map50(run_dir: Path, width: float, settings: dict, data: Path, anchors) -> float:
    """mAP@0.5 (0-1) of a run's ``last.weights.h5`` on ``val.json``."""
    model = _load(run_dir / "last.weights.h5", width, settings)
    return _coco_map50(model, data / "val.json", anchors, settings)


def _coco_map50(model, val_json: Path, anchors, settings: dict) -> float:
    """mAP@0.5 (0-1) by pycocotools, decoded as the family of ``settings["model"]``."""
    from benchmarks.cocoeval import coco_figures
    from detkit.families import get_family

    return coco_figures(model, get_family(settings["model"]), val_json, anchors,
                        settings["input_size"], 16)["map50"]


def main(quick: bool = False, preset: dict | None = None, **overrides) -> dict:
    """Run the workload (``overrides``: settings such as ``model="yolov2-tiny"``)."""
    import numpy as np

    from benchmarks.bench_train_quality import synth_with_anchors
    from detkit.commands import distill as distill_command
    from detkit.commands import train as train_command

    def train(data, **options):
        return train_command.run(train_command.Options(data=data, **options))

    def distill(data, **options):
        return distill_command.run(distill_command.Options(data=data, **options))

    from detkit.families import get_family

    model = overrides.get("model", "yolov3-tiny")
    base = preset or (QUICK if quick else {**FULL, **FULL_FOR_MODEL.get(model, {})})
    settings = {"model": model, **base, **overrides}
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_distill_"))
    data, train_set, anchors = synth_with_anchors(
        work, settings, k=get_family(settings["model"]).num_anchors,
        min_size=settings["min_size"], max_objects=settings["max_objects"])
    common = dict(model=settings["model"], anchors=work / "anchors.txt",
                  input_size=settings["input_size"], batch_size=settings["batch_size"],
                  freeze="none", workers=settings["workers"], jit=settings.get("jit", False))

    teacher_dir = work / "teacher"
    train(data / "train.txt", width=settings["teacher_width"], val=data / "val.txt",
          epochs=settings["teacher_epochs"], lr=settings["teacher_lr"], seed=0,
          out=teacher_dir, **common)
    teacher_time = time.perf_counter() - start
    teacher_model = _load(teacher_dir / "best.weights.h5", settings["teacher_width"],
                          settings)
    teacher_map = _coco_map50(teacher_model, data / "val.json", anchors, settings)
    print(f"teacher: mAP@0.5 {teacher_map:.3f} ({teacher_time:.0f} s)", flush=True)

    student = dict(width=settings["student_width"], epochs=settings["student_epochs"],
                   lr=settings["student_lr"], **common)
    plain, distilled, timings = [], [], {"plain_s": 0.0, "distill_s": 0.0}
    for seed in settings["seeds"]:
        tick = time.perf_counter()
        train(data / "train.txt", seed=seed, out=work / f"plain_{seed}", **student)
        timings["plain_s"] += time.perf_counter() - tick
        tick = time.perf_counter()
        distill(data / "train.txt", teacher=teacher_dir, alpha=settings["alpha"],
                temperature=settings["temperature"], seed=seed,
                out=work / f"distill_{seed}", **student)
        timings["distill_s"] += time.perf_counter() - tick
        plain.append(_map50(work / f"plain_{seed}", settings["student_width"], settings,
                            data, anchors))
        distilled.append(_map50(work / f"distill_{seed}", settings["student_width"],
                                settings, data, anchors))
        print(f"seed {seed}: plain {plain[-1]:.3f}, distilled {distilled[-1]:.3f}",
              flush=True)
    gain = 100.0 * (float(np.mean(distilled)) - float(np.mean(plain)))
    elapsed = time.perf_counter() - start
    figures = {
        "teacher_map50": round(teacher_map, 4),
        "plain_map50": [round(v, 4) for v in plain],
        "distilled_map50": [round(v, 4) for v in distilled],
        "plain_mean": round(float(np.mean(plain)), 4),
        "distilled_mean": round(float(np.mean(distilled)), 4),
        "gain_points": round(gain, 2), "target_gain_points": TARGET_GAIN_POINTS,
        "passed": bool(gain >= TARGET_GAIN_POINTS) if not quick else None,
        "teacher_train_s": round(teacher_time, 1),
        "student_train_s_per_run": {k: round(v / len(settings["seeds"]), 1)
                                    for k, v in timings.items()},
        "wall_s": round(elapsed, 1), "train_images": len(train_set.records),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
    }
    print(f"distill: teacher mAP@0.5 {teacher_map:.3f}; student plain "
          f"{np.mean(plain):.3f} vs distilled {np.mean(distilled):.3f} over "
          f"{len(settings['seeds'])} seed(s): gain {gain:+.1f} points "
          f"(goal +{TARGET_GAIN_POINTS:g}); {elapsed:.0f} s")
    return figures


def _load(path: Path, width: float, settings: dict):
    from detkit.models import build_model

    model = build_model(settings["model"], settings["classes"], width, settings["input_size"])
    model.load_weights(path)
    return model


if __name__ == "__main__":
    chosen = (dict(model=sys.argv[sys.argv.index("--model") + 1])
              if "--model" in sys.argv else {})
    print(json.dumps(main(quick="--quick" in sys.argv,
                          preset=GPU if "--gpu" in sys.argv else None, **chosen), indent=2))
