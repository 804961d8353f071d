"""Exports keep the accuracy: a trained yolov3-tiny against its SavedModel, ONNX and TF Lite
(float32, float16, int8) exports; compiled against eager Keras inference.

Workload: on the synthetic dataset (96 px, 4 classes), a ``yolov3-tiny`` width 0.25 is
trained from scratch for a few CPU minutes (``detkit train``, ``best.weights.h5`` by
val loss). ``detkit eval-map --weights`` then measures COCO mAP@[.5:.95] on the val split
for the Keras weights and for each export of ``detkit export`` (raw outputs, decoded and
NMS'd by predict; plus TF Lite int8 and ONNX with the NMS inside the file), with its size
on disk and ms/image of the detection loop (letterbox, forward pass, decoding, NMS; after
one warm-up call). Goals: float32 exports within 0.002 of the Keras mAP, float16 within
0.005, int8 within 0.03.

Speed: ``detkit predict`` with the same weights at the demo's input side (256 px) over the
val images, compiled (``--compile``: jit, static batch) against the eager loop
(``--no-compile``), in the same run. Goal: compiled at least 3x faster per image.

Run: ``python -m benchmarks.bench_export [--quick]`` (quick: seconds of training, no goals).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Largest |mAP(export) - mAP(Keras)| allowed, by quantization.
TOLERANCE = {None: 0.002, "float16": 0.005, "int8": 0.03}
#: Compiled inference must be at least this many times faster per image than eager.
TARGET_SPEEDUP = 3.0
FULL = dict(images=300, size=96, classes=4, min_size=0.15, max_objects=4, input_size=96,
            batch_size=8, width=0.25, epochs=20, lr=5e-3, workers=2,
            speed_input_size=256, speed_images=48, calibration_images=100)
QUICK = dict(images=24, size=64, classes=2, min_size=0.15, max_objects=4, input_size=64,
             batch_size=8, width=0.0625, epochs=1, lr=1e-3, workers=1,
             speed_input_size=64, speed_images=8, calibration_images=8)
#: (label, export options) of each export measured.
EXPORTS = (
    ("saved_model", dict(format="saved_model")),
    ("onnx", dict(format="onnx")),
    ("tflite", dict(format="tflite")),
    ("tflite float16", dict(format="tflite", quantize="float16")),
    ("tflite int8", dict(format="tflite", quantize="int8")),
    ("onnx + nms", dict(format="onnx", nms=True)),
    ("tflite float16 + nms", dict(format="tflite", quantize="float16", nms=True)),
)


def main(quick: bool = False) -> dict:
    from benchmarks.bench_train_quality import synth_with_anchors
    from detkit.commands import eval_map, export, train
    from detkit.export.runtimes import disk_size

    settings = QUICK if quick else FULL
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    data, _, _ = synth_with_anchors(work, settings, min_size=settings["min_size"],
                                    max_objects=settings["max_objects"])
    model = dict(model="yolov3-tiny", width=settings["width"], anchors=work / "anchors.txt",
                 input_size=settings["input_size"])
    run_dir = work / "run"
    train.run(train.Options(data=data / "train.txt", val=data / "val.txt",
                            epochs=settings["epochs"], lr=settings["lr"], seed=0,
                            batch_size=settings["batch_size"], freeze="none",
                            workers=settings["workers"], out=run_dir, **model))
    train_s = time.perf_counter() - start
    weights = run_dir / "best.weights.h5"
    classes = data / "classes.txt"
    print(f"trained in {train_s:.0f} s", flush=True)

    def evaluate(label: str, path: Path, **extra) -> dict:
        report = eval_map.run(eval_map.Options(
            data=data / "val.json", weights=path, classes=classes,
            out=work / f"{label.replace(' ', '_')}_report.json", **extra)).report
        row = {"AP": round(report["AP"], 4), "AP50": round(report["AP50"], 4),
               "MB": round(disk_size(path) / 2**20, 3),
               "ms_per_image": report["model"]["ms_per_image"],
               "runner": report["model"]["runner"]}
        print(f"{label:>18}: AP {row['AP']:.4f}  AP50 {row['AP50']:.4f}  {row['MB']:.2f} MB  "
              f"{row['ms_per_image']:.1f} ms/image  ({row['runner']})", flush=True)
        return row

    rows = {"keras": evaluate("keras", weights, **model)}
    base = rows["keras"]["AP"]
    passed = True
    for label, options in EXPORTS:
        out = work / "exports" / (label.replace(" + ", "_").replace(" ", "_")
                                  + (".onnx" if options["format"] == "onnx" else
                                     ".tflite" if options["format"] == "tflite" else ""))
        tick = time.perf_counter()
        calibration = ({"calibration": data / "train.txt",
                        "calibration_images": settings["calibration_images"]}
                       if options.get("quantize") == "int8" else {})
        export.run(export.Options(weights=weights, classes=classes, out=out, **model,
                                  **options, **calibration))
        export_s = time.perf_counter() - tick
        row = evaluate(label, out)
        row["export_s"] = round(export_s, 1)
        row["delta_AP"] = round(row["AP"] - base, 4)
        row["tolerance"] = TOLERANCE[options.get("quantize")]
        row["within"] = abs(row["AP"] - base) <= row["tolerance"]
        passed &= row["within"]
        rows[label] = row

    speed = _speed(data, weights, classes, model, settings)
    passed &= speed["speedup"] >= TARGET_SPEEDUP
    elapsed = time.perf_counter() - start
    figures = {"rows": rows, "speed": speed, "train_s": round(train_s, 1),
               "passed": None if quick else bool(passed), "wall_s": round(elapsed, 1),
               "settings": settings}
    print(f"export: Keras AP {base:.4f}; "
          + "; ".join(f"{k} {v['delta_AP']:+.4f}" for k, v in rows.items() if k != "keras")
          + f"; compiled {speed['speedup']:.1f}x eager; {elapsed:.0f} s", flush=True)
    return figures


def _speed(data: Path, weights: Path, classes: Path, model: dict, settings: dict) -> dict:
    """ms/image of ``predict`` compiled vs eager at the demo's input side."""
    from detkit.commands import predict

    folder = data / "speed_images"
    folder.mkdir(exist_ok=True)
    images = sorted((data / "images").iterdir())[:settings["speed_images"]]
    for image in images:
        target = folder / image.name
        if not target.exists():
            target.symlink_to(image.resolve())
    result = {}
    for mode in (True, False):
        run = predict.run(predict.Options(
            data=folder, weights=weights, classes=classes, out=data / f"speed_{mode}.json",
            batch_size=settings["batch_size"], compile=mode,
            **{**model, "input_size": settings["speed_input_size"]}))
        result["compiled" if mode else "eager"] = run
    compiled, eager = result["compiled"], result["eager"]
    figures = {"input_size": settings["speed_input_size"], "images": compiled.num_images,
               "batch_size": settings["batch_size"],
               "compiled_ms_per_image": round(compiled.ms_per_image, 2),
               "eager_ms_per_image": round(eager.ms_per_image, 2),
               "compile_warmup_s": round(compiled.warmup_seconds, 1),
               "speedup": round(eager.ms_per_image / max(compiled.ms_per_image, 1e-9), 2)}
    print(f"speed at {figures['input_size']} px: compiled {figures['compiled_ms_per_image']:.1f}"
          f" ms/image (after a {figures['compile_warmup_s']:.0f} s warm-up), eager "
          f"{figures['eager_ms_per_image']:.1f} ms/image: {figures['speedup']:.1f}x "
          f"(goal {TARGET_SPEEDUP:g}x)", flush=True)
    return figures


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv), indent=2, default=str))
