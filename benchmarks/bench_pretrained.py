"""Value of a pretrained start: fine-tuning the shipped pretrained body vs from scratch.

Goal (issue 14): on the synthetic target set, fine-tuning from the pretrained body
(``examples/pretrained/``, trained by ``make -f examples/demo.mk pretrained`` on a larger
synthetic *source* set: another seed, six shape classes) reaches mAP@0.5 >= 0.80 in at
most a third of the wall time that training from scratch needs for the same mAP, on the
2-core CPU.

Both arms train ``yolov3-tiny --width 0.25`` at 256 px on the same target set (the
training-quality gate's: 1000 images, 4 classes, seed 0, 800 train / 200 val) with the
same batches, augmentation and anchors; they differ only in the start (``--weights``
of the pretrained file, loaded by name: body and neck, the 6-class output convs
skipped) and in the learning-rate schedule each start wants (scratch: the gate's lr
1e-2 over 30 epochs; fine-tuning: lr 2e-3 over 8). mAP@0.5 on ``val.json`` by
pycocotools after each evaluated epoch. The wall clock of each arm counts model
building, data loading and training, and stops while mAP is evaluated; an arm stops
once it has reached the target (scratch keeps its 30-epoch schedule until then).

Run: ``python -m benchmarks.bench_pretrained [--quick] [--clock cpu]`` (quick: a tiny pretrained model
made on the spot, seconds, no verdict).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.clock import KINDS, BenchClock  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The goal.
TARGET_MAP50 = 0.80
MAX_RATIO = 1 / 3
#: The shipped pretrained model at the benchmark's width.
PRETRAINED = ROOT / "examples" / "pretrained" / "yolov3-tiny-w0.25.weights.h5"
FULL = dict(images=1000, size=256, classes=4, width=0.25, input_size=256, batch_size=16,
            max_boxes=32, jit=True,
            scratch=dict(epochs=30, lr=1e-2, warmup_epochs=1.0, eval_every=2),
            finetune=dict(epochs=8, lr=2e-3, warmup_epochs=1.0, eval_every=1))
QUICK = dict(images=24, size=64, classes=4, width=0.0625, input_size=64, batch_size=8,
             max_boxes=32, jit=False,
             scratch=dict(epochs=2, lr=1e-3, warmup_epochs=0.5, eval_every=1),
             finetune=dict(epochs=2, lr=1e-3, warmup_epochs=0.5, eval_every=1))


def quick_pretrained(work: Path, settings: dict) -> Path:
    """A pretrained model for ``--quick``: one epoch on a tiny 6-class source set."""
    from detkit.commands.train import Options as TrainOptions
    from detkit.data.synth import make_synth_dataset
    from detkit.training.run import run_training

    source = work / "source"
    make_synth_dataset(source, images=settings["images"], size=settings["size"], classes=6,
                       seed=1, val_fraction=0.2)
    run_training(TrainOptions(data=source / "train.txt", stage=1, freeze="none",
                              model="yolov3-tiny", width=settings["width"],
                              input_size=settings["input_size"], epochs=1,
                              batch_size=settings["batch_size"], seed=1,
                              out=work / "pretrain"))
    return work / "pretrain" / "last.weights.h5"


def run_arm(name: str, work: Path, data: Path, anchors, settings: dict,
            weights: Path | None, clock: str = "wall") -> dict:
    """Train one arm; return its curve and the training seconds to the target."""
    import keras

    from benchmarks.bench_train_quality import coco_map50
    from detkit.commands.train import Options as TrainOptions
    from detkit.training.run import run_training

    arm = settings[name]
    input_size = settings["input_size"]
    timer = BenchClock(clock)
    curve: list[dict] = []
    reached: dict = {}

    class MapCurve(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "train_s": round(timer.seconds(), 1),
                   "wall_s": round(timer.wall_s(), 1),
                   "loss": round(float((logs or {}).get("loss", float("nan"))), 3)}
            if (epoch + 1) % arm["eval_every"] == 0 or epoch + 1 == arm["epochs"]:
                with timer.paused():
                    map50, map_all = coco_map50(self.model.network, data / "val.json",
                                                anchors, input_size)
                row.update(map50=round(map50, 4), map=round(map_all, 4))
                if map50 >= TARGET_MAP50 and not reached:
                    reached.update(epoch=epoch + 1, train_s=row["train_s"])
                    self.model.stop_training = True
            curve.append(row)
            print(json.dumps({"arm": name, **row}), flush=True)

    opts = TrainOptions(data=data / "train.txt", stage=1, model="yolov3-tiny",
                        width=settings["width"], anchors=work / "anchors.txt",
                        input_size=input_size, epochs=arm["epochs"],
                        batch_size=settings["batch_size"], lr=arm["lr"],
                        warmup_epochs=arm["warmup_epochs"], freeze="none", seed=0,
                        weights=weights, out=work / name, workers=2, jit=settings["jit"],
                        max_boxes=settings["max_boxes"])
    result = run_training(opts, callbacks=[MapCurve()])
    best = max((row.get("map50", 0.0) for row in curve), default=0.0)
    return {"curve": curve, "reached_epoch": reached.get("epoch"),
            "train_s_to_target": reached.get("train_s"), "best_map50": best,
            "train_s_total": curve[-1]["train_s"] if curve else None,
            "weights_report": result.weights_report, **arm}


def main(quick: bool = False, clock: str = "wall") -> dict:
    import subprocess

    from benchmarks.bench_train_quality import synth_with_anchors

    settings = QUICK if quick else FULL
    work = Path(tempfile.mkdtemp(prefix="bench_pretrained_"))
    data, train_set, anchors = synth_with_anchors(work, settings)
    pretrained = quick_pretrained(work, settings) if quick else PRETRAINED
    if not pretrained.is_file():
        raise SystemExit(f"{pretrained} is missing: make -f examples/demo.mk pretrained")
    load = os.getloadavg()
    finetune = run_arm("finetune", work, data, anchors, settings, pretrained, clock)
    scratch = run_arm("scratch", work, data, anchors, settings, None, clock)
    t_fine, t_scratch = finetune["train_s_to_target"], scratch["train_s_to_target"]
    ratio = (t_fine / t_scratch) if t_fine and t_scratch else None
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    figures = {
        "target_map50": TARGET_MAP50, "max_ratio": round(MAX_RATIO, 4),
        "finetune": finetune, "scratch": scratch,
        "ratio": None if ratio is None else round(ratio, 3),
        "passed": None if quick else bool(ratio is not None and ratio <= MAX_RATIO),
        "clock": clock, "pretrained": str(pretrained), "train_images": len(train_set.records),
        "load_at_start": [round(x, 2) for x in load], "uptime_at_end": uptime,
        "settings": {k: v for k, v in settings.items() if k not in ("scratch", "finetune")},
    }
    print(f"pretrained: fine-tuning reached mAP@0.5 {TARGET_MAP50} in "
          f"{t_fine} s (epoch {finetune['reached_epoch']}), scratch in {t_scratch} s "
          f"(epoch {scratch['reached_epoch']}); ratio {figures['ratio']} "
          f"(goal <= {MAX_RATIO:.3f}); {uptime}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clock", default="wall", choices=KINDS,
                        help="count wall seconds, or CPU seconds / 2 (a shared machine)")
    args = parser.parse_args()
    print(json.dumps(main(args.quick, args.clock), indent=1, default=str))
