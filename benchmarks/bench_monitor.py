"""Which checkpoint ``--monitor`` keeps: fitness against val_loss on the CPU quality gate.

Goal (issue 19): on the CPU quality gate (``yolov3-tiny --width 0.25``, 256 px, the
synthetic set of :mod:`benchmarks.bench_train_quality`: 800 train / 200 val images, 30
epochs from scratch), ``--monitor fitness`` picks a checkpoint whose mAP is at least the
one ``--monitor val_loss`` would pick. One run with ``--eval-every 1`` evaluates every
epoch, so ``history.csv`` holds both criteria and the mAP of every epoch: the val_loss
pick is the epoch of least ``val_loss``, the fitness pick the epoch of highest
``val_fitness`` (0.1 AP50 + 0.9 AP); the verdict compares their COCO mAP (AP), and both
AP50 figures are reported. ``best.weights.h5`` of the run (monitor fitness) is
re-evaluated by pycocotools, the reference, to check it is that epoch's network.

Run: ``python -m benchmarks.bench_monitor [--quick]`` (quick: seconds, no verdict).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def picks(history: Path) -> dict:
    """The val_loss and fitness picks of a ``history.csv`` evaluated every epoch."""
    with open(history, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val_map")]
    by_loss = min(rows, key=lambda row: float(row["val_loss"]))
    by_fitness = max(rows, key=lambda row: float(row["val_fitness"]))

    def summary(row: dict) -> dict:
        return {"epoch": int(row["epoch"]), "val_loss": round(float(row["val_loss"]), 4),
                "map": round(float(row["val_map"]), 4),
                "map50": round(float(row["val_map50"]), 4),
                "fitness": round(float(row["val_fitness"]), 4)}

    return {"val_loss": summary(by_loss), "fitness": summary(by_fitness),
            "evaluated_epochs": len(rows)}


def main(quick: bool = False) -> dict:
    from benchmarks.bench_train_quality import FULL, QUICK, coco_map50, synth_with_anchors
    from detkit.commands.train import Options as TrainOptions
    from detkit.models import build_model
    from detkit.training.run import run_training

    settings = QUICK if quick else FULL
    work = Path(tempfile.mkdtemp(prefix="bench_monitor_"))
    data, train_set, anchors = synth_with_anchors(work, settings)
    opts = TrainOptions(data=data / "train.txt", val=data / "val.txt", eval_every=1,
                        monitor="fitness", stage=1, model="yolov3-tiny",
                        width=settings["width"], anchors=work / "anchors.txt",
                        input_size=settings["input_size"], epochs=settings["epochs"],
                        batch_size=settings["batch_size"], lr=settings["lr"],
                        warmup_epochs=settings["warmup_epochs"], freeze="none", seed=0,
                        out=work / "run", workers=2, jit=settings["jit"],
                        max_boxes=settings["max_boxes"], plots=False)
    run_training(opts)
    chosen = picks(work / "run" / "history.csv")
    model = build_model("yolov3-tiny", len(train_set.class_names), settings["width"],
                        settings["input_size"])
    model.load_weights(work / "run" / "best.weights.h5")
    map50, map_all = coco_map50(model, data / "val.json", anchors, settings["input_size"])
    fit, loss = chosen["fitness"], chosen["val_loss"]
    figures = {**chosen, "best_weights_pycocotools": {"map": round(map_all, 4),
                                                      "map50": round(map50, 4)},
               "passed": None if quick else bool(fit["map"] >= loss["map"]),
               "settings": settings}
    print(f"monitor: fitness picks epoch {fit['epoch']} (AP {fit['map']}, AP50 "
          f"{fit['map50']}); val_loss would pick epoch {loss['epoch']} (AP {loss['map']}, "
          f"AP50 {loss['map50']}); best.weights.h5 by pycocotools: AP {map_all:.4f}, "
          f"AP50 {map50:.4f}")
    return figures


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv), indent=1, default=str))
