"""Quality bars of the other families: YOLOv2, RetinaNet and the RPN from scratch on a CPU.

Goal (issue 15): on the synthetic dataset (256 px, 4 classes), each family trained from
scratch on the 2-core CPU within 15 minutes (wall clock, everything included: dataset,
anchors, training, evaluations) reaches: ``yolov2`` (small width) mAP@0.5 >= 0.75,
``retinanet`` (small body) mAP@0.5 >= 0.75, ``rpn`` class-agnostic AR@100 >= 0.90.

Evaluation is pycocotools (the reference) on ``val.json``
(:func:`benchmarks.cocoeval.coco_figures`: the family's decoder and NMS defaults, 0.45
and 100 detections; the RPN's 0.7 and 1000, as eval-map). For the RPN, COCOeval runs
class-agnostic (``useCats=0``) with ``maxDets`` 1, 100, 1000: AR@100 is COCO's (recall
averaged over IoU 0.5:0.95); recall at IoU 0.5 alone is reported too.

Anchors come from ``kmeans-anchors`` on the train split (k = the family's anchor
count: 5, 27, 9). The curve (loss terms per epoch, the metric every few epochs) is
printed as JSON lines and returned.

On a machine shared with other jobs, ``--clock cpu`` budgets the process's CPU time at
2 x 15 minutes (what a quiet 2-core machine gives in 15 minutes); both times are reported.

Run: ``python -m benchmarks.bench_families --family yolov2 [--quick] [--epochs N]
[--eval-every N] [--width W] [--lr LR] [--batch-size B] [--warmup-epochs E] [--no-augment]
[--aug-scale LOW HIGH] [--aug-jitter J] [--mosaic P] [--close-mosaic N] [--input-size S]
[--seed N] [--set OPTION=VALUE ...]``
(``--set``: a loss or assigner option of the family, e.g. ``--set box_weight=10``;
``--input-size``: the network's input side for training, the k-means anchors and the
evaluation, the dataset's images staying at 256 px and letterboxed to it; without
``--family``: yolov2, retinanet and rpn one after the other, as ``make bench`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.clock import KINDS, BenchClock  # noqa: E402
from benchmarks.cocoeval import coco_figures  # noqa: E402

TIME_BUDGET_S = 15 * 60
#: The bars: (metric, target) per family.
TARGETS = {"yolov2": ("map50", 0.75), "yolov2-tiny": ("map50", 0.75),
           "retinanet": ("map50", 0.75), "rpn": ("ar100", 0.90)}
#: Full-run settings per family (tuned for the 2-core CPU), and the quick smoke run.
FULL = {
    "yolov2": dict(width=0.1875, epochs=22, lr=1e-2, batch_size=16, eval_every=7,
                   aug_scale=(0.7, 1.3), aug_jitter=0.1, mosaic=1.0, close_mosaic=7),
    "yolov2-tiny": dict(width=0.25, epochs=30, lr=1e-2, batch_size=16, eval_every=10),
    "retinanet": dict(width=0.125, epochs=26, lr=5e-3, batch_size=16, eval_every=8,
                      aug_scale=(0.7, 1.3), aug_jitter=0.1),
    "rpn": dict(width=0.125, epochs=42, lr=1e-2, batch_size=16, eval_every=14,
                aug_scale=(0.7, 1.3), aug_jitter=0.1, pos_iou=0.5),
}
DATASET = dict(images=1000, size=256, classes=4, input_size=256, max_boxes=32)
QUICK_DATASET = dict(images=24, size=64, classes=4, input_size=64, max_boxes=32)
QUICK = dict(width=0.0625, epochs=2, lr=1e-3, batch_size=8, eval_every=1)
#: Settings that are ``detkit train`` options passed through as they are (``None`` or
#: absent: the option's default): the schedule, the augmentation, and the family's
#: loss and assigner options (:meth:`detkit.families.Family.option_names`).
TRAIN_SETTINGS = ("warmup_epochs", "augment", "aug_scale", "aug_jitter", "mosaic",
                  "close_mosaic")
#: Settings of the benchmark itself: ``input_size`` (the network's input side; absent or
#: ``None``: the dataset's ``input_size``, the images' side) and ``seed`` (the training's:
#: initial weights, data order, augmentation; the dataset stays the same; default 0).
BENCH_SETTINGS = ("input_size", "seed")
#: Training stops (keeping its last epoch) when this much of the budget is spent.
STOP_AT_S = TIME_BUDGET_S - 60


def _rounded(figures: dict) -> dict:
    return {key: round(value, 4) for key, value in figures.items()}


def prepare(work: Path, family, dataset: dict):
    """The synthetic dataset and k-means anchors (k = the family's anchor count)."""
    import numpy as np

    from detkit.anchors import load_anchors, save_anchors
    from detkit.data.dataset import load_dataset
    from detkit.data.synth import make_synth_dataset
    from detkit.kmeans import input_box_sizes, iou_kmeans

    data = work / "synth"
    make_synth_dataset(data, images=dataset["images"], size=dataset["size"],
                       classes=dataset["classes"], seed=0, val_fraction=0.2)
    train_set = load_dataset(data / "train.txt")
    anchors = iou_kmeans(input_box_sizes(train_set.records, dataset["input_size"]),
                         family.num_anchors, seed=0).anchors.astype(np.float32)
    save_anchors(work / "anchors.txt", anchors, decimals=1)
    return data, train_set, load_anchors(work / "anchors.txt")


#: The families ``main`` runs when none is named (``run_all``).
DEFAULT_FAMILIES = ("yolov2", "retinanet", "rpn")


def main(quick: bool = False, family: str | None = None, clock: str = "wall",
         **overrides) -> dict:
    """Run one family's bar (``family``), or each of :data:`DEFAULT_FAMILIES`."""
    if family is None:
        return {name: run_family(name, quick, clock) for name in DEFAULT_FAMILIES}
    return run_family(family, quick, clock, **overrides)


def run_family(name: str, quick: bool = False, clock: str = "wall", **overrides) -> dict:
    """Train and evaluate one family (see the module docstring)."""
    import keras

    from detkit.commands.train import Options as TrainOptions
    from detkit.families import get_family
    from detkit.training.run import run_training

    family = get_family(name)
    metric, target = TARGETS[name]
    dataset = QUICK_DATASET if quick else DATASET
    settings = {**(QUICK if quick else FULL[name]),
                **{k: v for k, v in overrides.items() if v is not None}}
    if settings.get("input_size") is not None:
        dataset = {**dataset, "input_size": int(settings["input_size"])}
    timer = BenchClock(clock)

    work = Path(tempfile.mkdtemp(prefix=f"bench_{name}_"))
    data, train_set, anchors = prepare(work, family, dataset)
    input_size = dataset["input_size"]
    curve: list[dict] = []

    class Curve(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "elapsed_s": round(timer.wall_s(), 1),
                   "cpu_s": round(timer.cpu_s(), 1)}
            row.update({k: round(float(v), 4) for k, v in (logs or {}).items()})
            if (epoch + 1) % settings["eval_every"] == 0 or epoch + 1 == settings["epochs"]:
                row.update(_rounded(coco_figures(self.model.network, family,
                                                 data / "val.json", anchors, input_size)))
            curve.append(row)
            print(json.dumps(row), flush=True)

    class TimeBudget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if not quick and timer.seconds() > STOP_AT_S:
                self.model.stop_training = True

    passed = {key: value for key, value in settings.items()
              if key in (*TRAIN_SETTINGS, *family.option_names()) and value is not None}
    unknown = set(settings) - {*passed, *QUICK, *TRAIN_SETTINGS, *BENCH_SETTINGS,
                               *family.option_names()}
    if unknown:
        raise ValueError(f"settings {sorted(unknown)} are not options of the {name} run "
                         f"(its loss and assigner take: {', '.join(family.option_names())})")
    opts = TrainOptions(data=data / "train.txt", stage=1, model=name,
                        width=settings["width"], anchors=work / "anchors.txt",
                        input_size=input_size, epochs=settings["epochs"],
                        batch_size=settings["batch_size"], lr=settings["lr"],
                        freeze="none", seed=settings.get("seed", 0), out=work / "run",
                        workers=2, jit=not quick, max_boxes=dataset["max_boxes"],
                        **{"warmup_epochs": 1.0, **passed})
    result = run_training(opts, callbacks=[Curve(), TimeBudget()])
    from detkit.models import build_model

    model = build_model(name, len(train_set.class_names), settings["width"], input_size)
    model.load_weights(work / "run" / "last.weights.h5")
    final = _rounded(coco_figures(model, family, data / "val.json", anchors, input_size))
    elapsed, used = timer.wall_s(), timer.seconds()
    figures = {"family": name, **final, "metric": metric, "target": target,
               "wall_s": round(elapsed, 1),
               "cpu_s": round(timer.cpu_s(), 1), "clock": clock,
               "budget_s": TIME_BUDGET_S, "input_size": input_size,
               "passed": (bool(final[metric] >= target and used <= TIME_BUDGET_S)
                          if not quick else None),
               "epochs": result.total_epochs, "params": int(model.count_params()),
               "train_images": len(train_set.records), "settings": settings,
               "anchors": anchors.round(1).tolist(), "curve": curve}
    print(json.dumps({k: v for k, v in figures.items() if k != "curve"}))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default=None, choices=sorted(TARGETS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--eval-every", type=int, help="epochs between the curve's "
                        "evaluations (each costs about 20 s on the 2-core CPU)")
    parser.add_argument("--width", type=float)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--warmup-epochs", type=float)
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    parser.add_argument("--aug-scale", type=float, nargs=2, metavar=("LOW", "HIGH"))
    parser.add_argument("--aug-jitter", type=float)
    parser.add_argument("--mosaic", type=float)
    parser.add_argument("--close-mosaic", type=int)
    parser.add_argument("--seed", type=int, help="the training's seed (default 0)")
    parser.add_argument("--input-size", type=int,
                        help="the network's input side (training, anchors, evaluation); "
                             "default: the dataset's, 256 (64 with --quick)")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="a loss or assigner option of the family's training "
                             "(detkit train's name with underscores), e.g. box_weight=10")
    parser.add_argument("--clock", default="wall", choices=KINDS,
                        help="budget the wall time, or the CPU time / 2 (shared machine)")
    args = parser.parse_args()
    extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes OPTION=VALUE, got {item!r}")
        try:
            extra[key.strip().replace("-", "_")] = int(value)
        except ValueError:
            extra[key.strip().replace("-", "_")] = float(value)
    main(args.quick, args.family, args.clock, epochs=args.epochs,
         eval_every=args.eval_every, width=args.width,
         lr=args.lr, batch_size=args.batch_size, warmup_epochs=args.warmup_epochs,
         augment=args.augment,
         aug_scale=tuple(args.aug_scale) if args.aug_scale else None,
         aug_jitter=args.aug_jitter, mosaic=args.mosaic, close_mosaic=args.close_mosaic,
         input_size=args.input_size, seed=args.seed, **extra)
