"""Quality gate: a small yolov3-tiny trained from scratch on the synthetic dataset.

Goal: on the synthetic dataset (256 px, 4 classes) a ``yolov3-tiny`` trained from scratch
on a CPU within 15 minutes (wall clock, everything included) reaches mAP@0.5 >= 0.80 on
the val split. mAP is measured with pycocotools (the reference) on ``val.json``, from
detections made by :func:`detkit.postprocess.detect` and mapped back to image pixels by
:func:`detkit.postprocess.to_image_coords` (predict's postprocessing). The curve (loss
and per-term losses per epoch, mAP@0.5 every few epochs) is returned and printed.

Run: ``python -m benchmarks.bench_train_quality [--quick] [--clock cpu] [train options]``
(quick: seconds, no gate). On a machine shared with other jobs ``--clock cpu`` counts the
process's CPU seconds / 2 (:mod:`benchmarks.clock`) in place of wall seconds, for the
budget and the reported times; everything (dataset, anchors, training, evaluations) counts
in either clock. Train options pass through to ``detkit train`` (issue 19's augmentation
measurements): ``--mosaic P``, ``--mixup P``, ``--label-smoothing E``,
``--multi-scale F``; the recipe is otherwise the gate's.
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

#: The gate.
TARGET_MAP50 = 0.80
TIME_BUDGET_S = 15 * 60
#: Full run settings (tuned for a 2-core CPU).
FULL = dict(images=1000, size=256, classes=4, width=0.25, input_size=256, batch_size=16,
            epochs=30, lr=1e-2, warmup_epochs=1.0, eval_every=10, jit=True, max_boxes=32)
QUICK = dict(images=24, size=64, classes=4, width=0.0625, input_size=64, batch_size=8,
             epochs=2, lr=1e-3, warmup_epochs=0.5, eval_every=1, jit=False, max_boxes=32)
#: Training stops (keeping its last epoch) when this much of the budget is spent, so
#: the final evaluation still fits in it on a slower (shared) machine.
STOP_AT_S = TIME_BUDGET_S - 45


def coco_map50(model, val_json: Path, anchors, input_size: int, batch_size: int = 16):
    """``(mAP@0.5, mAP@[.5:.95])`` of a YOLOv3(-tiny) ``model`` on a COCO ground truth, by
    pycocotools (:func:`benchmarks.cocoeval.coco_figures`)."""
    from detkit.families import get_family

    figures = coco_figures(model, get_family("yolov3"), val_json, anchors, input_size,
                           batch_size)
    return figures["map50"], figures["map"]


def synth_with_anchors(work: Path, settings: dict, k: int = 6, **synth_options):
    """Make the synthetic dataset in ``work/synth`` and fit ``k`` anchors to its train split.

    Returns ``(data folder, train Dataset, anchors (k, 2))``; the anchors are written to
    ``work/anchors.txt`` and returned as read back (rounded as the runs read them).
    """
    import numpy as np

    from detkit.anchors import load_anchors, save_anchors
    from detkit.data.dataset import load_dataset
    from detkit.data.synth import make_synth_dataset
    from detkit.kmeans import input_box_sizes, iou_kmeans

    data = work / "synth"
    make_synth_dataset(data, images=settings["images"], size=settings["size"],
                       classes=settings["classes"], seed=0, val_fraction=0.2,
                       **synth_options)
    train_set = load_dataset(data / "train.txt")
    anchors = iou_kmeans(input_box_sizes(train_set.records, settings["input_size"]), k,
                         seed=0).anchors.astype(np.float32)
    save_anchors(work / "anchors.txt", anchors, decimals=1)
    return data, train_set, load_anchors(work / "anchors.txt")


#: Train options that pass through (``--mosaic`` etc.), by TrainOptions field.
PASS_THROUGH = {"mosaic": float, "mixup": float, "label_smoothing": float,
                "multi_scale": float, "close_mosaic": int}


def main(quick: bool = False, clock: str = "wall", train_options: dict | None = None) -> dict:
    """Run the gate; ``train_options`` (TrainOptions fields) override the recipe's."""
    import keras

    from detkit.commands.train import Options as TrainOptions
    from detkit.training.run import run_training

    settings = QUICK if quick else FULL
    extra = {k: v for k, v in (train_options or {}).items() if v is not None}
    timer = BenchClock(clock)
    work = Path(tempfile.mkdtemp(prefix="bench_train_quality_"))
    data, train_set, anchors = synth_with_anchors(work, settings)
    input_size = settings["input_size"]
    curve: list[dict] = []

    class MapCurve(keras.callbacks.Callback):
        """mAP@0.5 on val every ``eval_every`` epochs (and at the last one)."""

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "elapsed_s": round(timer.seconds(), 1),
                   "wall_s": round(timer.wall_s(), 1)}
            row.update({k: round(float(v), 4) for k, v in (logs or {}).items()})
            last = epoch + 1 == settings["epochs"]
            if (epoch + 1) % settings["eval_every"] == 0 or last:
                map50, map_all = coco_map50(self.model.network, data / "val.json",
                                            anchors, input_size)
                row.update(map50=round(map50, 4), map=round(map_all, 4))
            curve.append(row)
            print(json.dumps(row), flush=True)

    class TimeBudget(keras.callbacks.Callback):
        """Stop at the batch that ends past :data:`STOP_AT_S` (full run only); the
        epoch then ends early and its checkpoint is written."""

        def on_train_batch_end(self, batch, logs=None):
            if not quick and timer.seconds() > STOP_AT_S:
                self.model.stop_training = True

    opts = TrainOptions(data=data / "train.txt", stage=1, model="yolov3-tiny",
                        width=settings["width"], anchors=work / "anchors.txt",
                        input_size=input_size, epochs=settings["epochs"],
                        batch_size=settings["batch_size"], lr=settings["lr"],
                        warmup_epochs=settings["warmup_epochs"], freeze="none", seed=0,
                        out=work / "run", workers=2, jit=settings["jit"],
                        max_boxes=settings["max_boxes"], plots=False, **extra)
    result = run_training(opts, callbacks=[MapCurve(), TimeBudget()])
    # The gate is judged on the last checkpoint, re-evaluated from the file.
    from detkit.models import build_model

    model = build_model("yolov3-tiny", len(train_set.class_names), settings["width"],
                        input_size)
    model.load_weights(work / "run" / "last.weights.h5")
    map50, map_all = coco_map50(model, data / "val.json", anchors, input_size)
    elapsed = timer.seconds()
    figures = {
        "map50": round(map50, 4), "map": round(map_all, 4), "target_map50": TARGET_MAP50,
        "elapsed_s": round(elapsed, 1), "wall_s": round(timer.wall_s(), 1),
        "cpu_s": round(timer.cpu_s(), 1), "clock": clock, "budget_s": TIME_BUDGET_S,
        "train_options": extra,
        "passed": bool(map50 >= TARGET_MAP50 and elapsed <= TIME_BUDGET_S) if not quick
        else None,
        "epochs": result.total_epochs, "train_images": len(train_set.records),
        "settings": settings, "anchors": anchors.round(1).tolist(), "curve": curve,
    }
    print(f"train quality: mAP@0.5 {map50:.3f} (target {TARGET_MAP50}), "
          f"mAP {map_all:.3f}, {elapsed:.0f} {clock} s (budget {TIME_BUDGET_S} s), "
          f"{result.total_epochs} epochs on {len(train_set.records)} images")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clock", default="wall", choices=KINDS,
                        help="count wall seconds, or CPU seconds / 2 (a shared machine)")
    for field, kind in PASS_THROUGH.items():
        parser.add_argument("--" + field.replace("_", "-"), dest=field, type=kind,
                            default=None, help=f"passed to detkit train (--{field})")
    args = parser.parse_args()
    figures = main(args.quick, args.clock, {field: getattr(args, field)
                                            for field in PASS_THROUGH})
    print(json.dumps({k: v for k, v in figures.items() if k != "curve"}, default=str))
