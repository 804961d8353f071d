"""``import-darknet`` against OpenCV 4's Darknet reader (an independent implementation).

OpenCV 5 dropped ``cv2.dnn.readNetFromDarknet`` and detkit's environment has OpenCV 5,
so the check runs in two steps and two environments:

1. ``python -m benchmarks.check_darknet_opencv export DIR`` (detkit's venv): writes the
   official yolov3-tiny and yolov3 cfg layouts (80 classes, 416 px) with random weights in
   Darknet's format, imports them with ``detkit import-darknet``, and saves detkit's raw
   head outputs for one random image (``DIR/NAME.npz``).
2. ``python benchmarks/check_darknet_opencv.py compare DIR`` (a venv with
   ``opencv-python-headless<5`` and numpy only): runs the same cfg + weights through
   ``cv2.dnn.readNetFromDarknet``, takes the output of the conv before each ``[yolo]``
   and prints the max absolute difference relative to the largest output, as JSON.

``all DIR --cv-python PATH`` does both (step 2 through that interpreter).

Each layout runs twice: with running variances in [0.3, 1.5] (the bar: 1e-4 relative
for yolov3-tiny, 1e-3 for yolov3), and with 10% of them at 1e-4 (``-smallvar``), where
OpenCV departs from Darknet: it normalizes with ``sqrt(var + 1e-6)`` where Darknet (and
detkit's import, checked against a NumPy Darknet forward pass in tests/test_darknet.py)
uses ``sqrt(var) + 1e-6``. The ``-smallvar`` figures are reported, not judged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

#: Cases: name -> (cfg builder in tests/darknet_cfgs.py, tolerance or None (not judged),
#: fraction of running variances set to 1e-4).
CASES = {"yolov3-tiny": ("yolov3_tiny_cfg", 1e-4, 0.0), "yolov3": ("yolov3_cfg", 1e-3, 0.0),
         "yolov3-tiny-smallvar": ("yolov3_tiny_cfg", None, 0.1),
         "yolov3-smallvar": ("yolov3_cfg", None, 0.1)}
SIZE = 416
CLASSES = 80


def export(folder: Path, seed: int = 0) -> None:
    """Write cfg, weights, the input image and detkit's outputs for every case."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import darknet_cfgs

    from detkit.commands.import_darknet import Options, run
    from detkit.models import build_model

    folder.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).random((SIZE, SIZE, 3)).astype(np.float32)
    for name, (builder, _, small) in CASES.items():
        text = getattr(darknet_cfgs, builder)(classes=CLASSES, size=SIZE)
        convs = darknet_cfgs.random_convs(text, seed=seed, tiny_variances=small)
        cfg, weights = folder / f"{name}.cfg", folder / f"{name}.weights"
        cfg.write_text(text)
        weights.write_bytes(darknet_cfgs.weights_bytes(convs))
        result = run(Options(cfg=cfg, weights=weights, out=folder / f"{name}.weights.h5"))
        model = build_model(result.model, CLASSES, 1.0, SIZE)
        model.load_weights(result.out)
        outputs = model.predict(image[None], verbose=0)
        np.savez(folder / f"{name}.npz", image=image,
                 **{f"out{i}": np.asarray(o)[0] for i, o in enumerate(outputs)})
        print(f"exported {name}: {len(outputs)} outputs", flush=True)


def compare(folder: Path) -> dict:
    """OpenCV's raw outputs against detkit's; returns ``{name: {max_rel_diff, ...}}``."""
    import cv2

    results = {"opencv": cv2.__version__}
    for name, (_, tolerance, _) in CASES.items():
        cfg, weights = folder / f"{name}.cfg", folder / f"{name}.weights"
        saved = np.load(folder / f"{name}.npz")
        net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        yolos = [layer for layer in net.getLayerNames() if layer.startswith("yolo_")]
        # The raw head output is the conv just before each [yolo] layer.
        heads = [f"conv_{int(layer.split('_')[1]) - 1}" for layer in yolos]
        blob = np.transpose(saved["image"], (2, 0, 1))[None].copy()
        net.setInput(blob)
        cv_outputs = net.forward(heads)
        diffs, scale = [], 0.0
        for i, raw in enumerate(cv_outputs):
            _, channels, height, width = raw.shape
            reference = np.transpose(raw[0], (1, 2, 0)).reshape(height, width, 3, -1)
            ours = saved[f"out{i}"]
            assert ours.shape == reference.shape, (name, ours.shape, reference.shape)
            diffs.append(float(np.abs(ours - reference).max()))
            scale = max(scale, float(np.abs(reference).max()))
        relative = max(diffs) / scale
        results[name] = {"max_rel_diff": relative, "max_abs_diff": max(diffs),
                         "max_abs_output": scale, "tolerance": tolerance,
                         "ok": tolerance is None or relative < tolerance, "heads": heads}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("export", "compare", "all"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cv-python", default="/tmp/cv4/bin/python",
                        help="interpreter with opencv-python-headless<5 (for 'all')")
    args = parser.parse_args()
    if args.step in ("export", "all"):
        export(args.folder)
    if args.step == "compare":
        results = compare(args.folder)
        print(json.dumps(results, indent=2))
        return 0 if all(v["ok"] for k, v in results.items() if k != "opencv") else 1
    if args.step == "all":
        return subprocess.call([args.cv_python, __file__, "compare", str(args.folder)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
