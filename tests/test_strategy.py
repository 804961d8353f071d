"""Data-parallel training: two logical CPU devices give the same first step as one.

Logical devices must be configured before TensorFlow starts, so the comparison runs in
a fresh Python process.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from detkit.errors import UsageError
from detkit.training.strategy import make_distribution

SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        DEVICES = ["/cpu:0", "/cpu:1"]
    else:                   # JAX: two host devices from XLA_FLAGS, all of them used
        DEVICES = None
    import keras
    import numpy as np
    from detkit.losses import YoloV3Loss
    from detkit.models import build_model
    from detkit.models.freeze import freeze
    from detkit.training.model import YoloTrainingModel
    from detkit.training.strategy import make_distribution
    from detkit.training.targets import YoloTrainingTargets

    SIZE, BATCH = 64, 4
    anchors = np.float32([[8, 8], [12, 16], [16, 12], [20, 24], [28, 28], [40, 40]])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.zeros((BATCH, 3, 4), np.float32)
    classes = np.full((BATCH, 3), -1, np.int32)
    for b in range(BATCH):
        x, y = rng.uniform(0, 40, 2)
        boxes[b, 0] = [x, y, x + 6 + 3 * b, y + 20]
        classes[b, 0] = b % 2
    y_true = YoloTrainingTargets(anchors, SIZE, 2)(boxes, classes)
    init = os.path.join(tempfile.mkdtemp(), "init.weights.h5")
    keras.utils.set_random_seed(0)
    build_model("yolov3-tiny", 2, 0.0625, SIZE).save_weights(init)

    def first_step(name):
        keras.utils.set_random_seed(0)
        distribution = make_distribution(name, DEVICES if name != "none" else None)
        with distribution.scope():
            detector = build_model("yolov3-tiny", 2, 0.0625, SIZE)
            detector.load_weights(init)
            freeze(detector, sys.argv[1])
            model = YoloTrainingModel(detector, YoloV3Loss(anchors, 2, SIZE))
            model.compile(keras.optimizers.Adam(1e-2, global_clipnorm=10.0))
            before = [np.asarray(v) for v in detector.trainable_weights]
            history = model.fit(images, y_true, batch_size=BATCH, epochs=1,
                                shuffle=False, verbose=0)
        weights = [np.asarray(v) for v in detector.trainable_weights]
        logs = {k: float(v[0]) for k, v in history.history.items()}
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(before, weights))
        return distribution.num_replicas, logs, weights, moved

    one = first_step("none")
    two = first_step("mirrored")
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one[2], two[2]))
    print(json.dumps({"replicas": [one[0], two[0]], "one": one[1], "two": two[1],
                      "weight_diff": diff, "moved": one[3], "num_weights": len(one[2])}))
""")


def _run_script(freeze_mode: str, backend: str = "tensorflow") -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="",
               JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, freeze_mode], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


BACKENDS = ["tensorflow", "jax"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_mirrored_two_devices_match_one_device_first_step(backend):
    """Same first-step loss, per-term losses and updated weights on 1 and 2 replicas.

    TensorFlow: ``tf.distribute.MirroredStrategy`` over two logical CPUs; JAX:
    ``keras.distribution.DataParallel`` over two host devices. Batch normalization is
    frozen (``all-but-heads``): unsynchronized batch statistics over half batches would
    legitimately differ; the loss scaling and gradient sum across replicas are what this
    checks.
    """
    result = _run_script("all-but-heads", backend)
    assert result["replicas"] == [1, 2]
    one, two = result["one"], result["two"]
    assert set(one) == set(two) >= {"loss", "xy", "wh", "obj", "cls"}
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), key
    assert result["num_weights"] > 0 and result["moved"] > 1e-3   # the step did something
    assert result["weight_diff"] < 1e-5


def test_make_distribution_choices():
    none = make_distribution("none")
    assert none.num_replicas == 1 and none.handle is None
    with none.scope():
        pass
    with pytest.raises(UsageError, match="--strategy must be one of none, mirrored"):
        make_distribution("tpu")
