"""Training throughput of YOLOv3-416 (images/s): the real loss, batch 32, synthetic data.

Runs detkit's training model (:class:`detkit.training.model.YoloTrainingModel` with
:class:`detkit.losses.YoloV3Loss` and the Adam/clipping/warmup-cosine optimizer of
``train``) under ``fit`` on random images with targets encoded from random boxes, in
float32 and in a mixed policy (``mixed_bfloat16`` by default). Data come from NumPy
batches made once on the host (so the figure is the device's, not the loader's). The
time of the first epoch (compilation) is reported apart; the throughput is the median
over the timed epochs.

Meant for an accelerator: ``KERAS_BACKEND=jax python -m benchmarks.bench_gpu_throughput``
(``--quick``: a width-0.125 model at 128 px for a smoke run on a CPU).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FULL = dict(model="yolov3", width=1.0, input_size=416, classes=80, batch_size=32,
            steps=40, epochs=4, boxes_per_image=8,
            policies=("float32", "mixed_bfloat16"))
QUICK = dict(model="yolov3", width=0.125, input_size=128, classes=4, batch_size=4,
             steps=3, epochs=2, boxes_per_image=3, policies=("float32",))
#: Distinct host batches cycled through (each is a fresh array per step for ``fit``).
HOST_BATCHES = 4


def synthetic_batches(settings: dict, anchors, seed: int = 0):
    """``HOST_BATCHES`` batches ``(images (B, S, S, 3) float32, y_true)`` of random
    pixels and random boxes, encoded like ``train`` encodes them."""
    import numpy as np

    from detkit.training.targets import YoloTrainingTargets

    rng = np.random.default_rng(seed)
    size, batch, count = settings["input_size"], settings["batch_size"], settings["boxes_per_image"]
    encoder = YoloTrainingTargets(anchors, size, settings["classes"])
    out = []
    for _ in range(HOST_BATCHES):
        images = rng.random((batch, size, size, 3), dtype=np.float32)
        centers = rng.uniform(0.1, 0.9, (batch, count, 2)) * size
        sides = np.exp(rng.uniform(np.log(0.04), np.log(0.6), (batch, count, 2))) * size
        boxes = np.concatenate([centers - sides / 2, centers + sides / 2], -1)
        boxes = np.clip(boxes, 0, size).astype(np.float32)
        classes = rng.integers(0, settings["classes"], (batch, count)).astype(np.int32)
        out.append((images, encoder(boxes, classes)))
    return out


def measure(settings: dict, policy: str) -> dict:
    """Images/s of ``fit`` under the dtype ``policy`` (``float32``, ``mixed_bfloat16``...)."""
    import keras

    from detkit.anchors import default_anchors_path, load_anchors
    from detkit.losses import YoloV3Loss
    from detkit.models import build_model
    from detkit.training.model import YoloTrainingModel
    from detkit.commands.train import Options as TrainOptions
    from detkit.training.fit import make_optimizer

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        anchors = load_anchors(default_anchors_path(settings["model"]))
        batches = synthetic_batches(settings, anchors)
        steps = settings["steps"]

        class Feed(keras.utils.PyDataset):
            def __len__(self):
                return steps

            def __getitem__(self, index):
                return batches[index % len(batches)]

        network = build_model(settings["model"], settings["classes"], settings["width"],
                              settings["input_size"])
        loss = YoloV3Loss(anchors, settings["classes"], settings["input_size"])
        model = YoloTrainingModel(network, loss)
        opts = TrainOptions(data=".", epochs=settings["epochs"], lr=1e-3)
        model.compile(optimizer=make_optimizer(1e-3, steps, opts), jit_compile=True)

        class EpochTimes(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times, self.losses = [], []

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                # Reading the logged loss waits for the epoch's last step.
                self.losses.append(float(logs["loss"]))
                self.times.append(time.perf_counter() - self.start)

        timer = EpochTimes()
        model.fit(Feed(), epochs=settings["epochs"], verbose=0, callbacks=[timer],
                  shuffle=False)
        images = steps * settings["batch_size"]
        timed = timer.times[1:]
        return {"policy": policy, "images_per_s": round(images / statistics.median(timed), 1),
                "step_ms": round(1000 * statistics.median(timed) / steps, 2),
                "first_epoch_s": round(timer.times[0], 1),
                "epoch_s": [round(t, 3) for t in timer.times],
                "loss": [round(v, 3) for v in timer.losses],
                "params": int(network.count_params())}
    finally:
        keras.config.set_dtype_policy(previous)


def main(quick: bool = False) -> dict:
    import keras

    device = _accelerator()
    if device is None and not quick:
        # YOLOv3-416 at batch 32 takes minutes per step on a CPU: nothing to learn there.
        print("gpu throughput: no accelerator on this backend; run it on a GPU with "
              "KERAS_BACKEND=jax (figures in BENCHMARKS.md), or --quick for a smoke run",
              flush=True)
        return {"backend": keras.backend.backend(), "device": "cpu",
                "not_run": "no accelerator"}
    settings = QUICK if quick else FULL
    rows = [measure(settings, policy) for policy in settings["policies"]]
    figures = {"backend": keras.backend.backend(), "device": device or "cpu",
               "settings": {k: v for k, v in settings.items() if k != "policies"},
               "runs": rows}
    for row in rows:
        print(f"{settings['model']}-{settings['input_size']} {row['policy']}: "
              f"{row['images_per_s']} img/s ({row['step_ms']} ms/step of "
              f"{settings['batch_size']}), first epoch {row['first_epoch_s']} s, "
              f"loss {row['loss'][0]} -> {row['loss'][-1]}", flush=True)
    print(json.dumps(figures), flush=True)
    return figures


def _accelerator() -> str | None:
    """Name of the backend's first accelerator, or None when it has only the CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else str(device.device_kind)
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else None
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return None


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
