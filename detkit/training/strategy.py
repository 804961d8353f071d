"""Data-parallel training behind one small interface.

``--strategy none`` trains on the default device. ``mirrored`` and ``multi-worker`` use
``tf.distribute`` on the TensorFlow backend (``MirroredStrategy`` over the local devices,
``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``); on JAX both mean
``keras.distribution.DataParallel`` over every device JAX sees (one process, or several
after ``jax.distributed.initialize``, each feeding its own rows of every global batch:
:func:`detkit.training.distributed.process_batches`). Build the model, the optimizer and
compile inside :meth:`Distribution.scope`; batches are global (split across replicas).

The loss of a replica must be its local batch mean divided by :func:`num_replicas_in_sync`
(gradients are summed across replicas); :class:`detkit.training.model.YoloTrainingModel`
does that.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

import keras

from detkit.errors import UsageError
from detkit.choices import STRATEGIES  # noqa: F401 (re-exported)



@dataclasses.dataclass
class Distribution:
    """How training is spread over devices.

    Attributes:
        name: one of :data:`STRATEGIES`.
        num_replicas: model replicas working on one global batch.
        handle: the ``tf.distribute.Strategy`` or ``keras.distribution.Distribution``
            (``None`` for ``none``).
    """

    name: str
    num_replicas: int = 1
    handle: Any = None

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The context to build, compile and fit the model in."""
        if self.handle is None:
            yield
        else:
            with self.handle.scope():
                yield


def make_distribution(name: str, devices: Sequence[str] | None = None) -> Distribution:
    """Create the distribution ``name`` for the current Keras backend.

    Args:
        name: one of :data:`STRATEGIES`.
        devices: device names to use (``mirrored`` only; default: all local GPUs, else
            the CPU).

    Raises:
        UsageError: unknown name, or a backend that has no such strategy.
    """
    if name not in STRATEGIES:
        raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "none":
        return Distribution(name)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if name == "mirrored":
            strategy = tf.distribute.MirroredStrategy(
                devices=list(devices) if devices else None)
        else:
            from detkit.training.distributed import COLLECTIVE_TIMEOUT_S, tf_config

            tf_config()  # a malformed TF_CONFIG is a usage error, not a hang
            # A worker that dies makes the others' collectives fail after the timeout
            # instead of waiting for ever.
            options = tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=COLLECTIVE_TIMEOUT_S)
            strategy = tf.distribute.MultiWorkerMirroredStrategy(
                communication_options=options)
        return Distribution(name, int(strategy.num_replicas_in_sync), strategy)
    if backend == "jax":
        from detkit.training.distributed import initialize_jax_processes

        initialize_jax_processes()  # several processes: join them before any device
        all_devices = keras.distribution.list_devices()
        chosen = list(devices) if devices else all_devices
        # Each process gives fit only its rows of every global batch
        # (distributed.process_batches): Keras must not shard the input again.
        distribution = keras.distribution.DataParallel(devices=chosen,
                                                       auto_shard_dataset=False)
        return Distribution(name, len(chosen), distribution)
    raise UsageError(f"strategy {name!r} is not supported on the {backend} backend; "
                     f"use the tensorflow or jax backend, or the strategy 'none'")


def num_replicas_in_sync() -> int:
    """Replicas whose gradients are summed in this context (``tf.distribute`` only; JAX
    data parallelism works on global arrays, so its loss needs no scaling)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)
