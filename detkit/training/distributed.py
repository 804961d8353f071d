"""Training over several processes: who writes, and how each replica gets its batch.

``--batch-size`` is the global batch. Under a ``tf.distribute`` strategy every replica
gets an equal, disjoint slice of each global batch, and each worker process prepares
only the slices of its own replicas (:func:`distributed_batches`): no image is read
twice. Concatenated in replica order, the slices are exactly the global batch a single
process would train on, so one step changes the weights as a single process would.

Only the chief writes the run directory; the other workers write into a temporary
directory that is removed at the end (:func:`is_chief`, :func:`worker_run_dir`).

On JAX, several processes join with ``jax.distributed.initialize`` before any device is
used (:func:`initialize_jax_processes`), configured by ``DETKIT_COORDINATOR`` (host:port
of process 0), ``DETKIT_NUM_PROCESSES`` and ``DETKIT_PROCESS_ID`` (on CPU the processes
exchange gradients through gloo). ``keras.distribution.DataParallel`` then spans every
process's devices and works on global arrays: each process gives ``fit`` only its rows of
every global batch (:func:`process_batches`, which :func:`distributed_batches` returns on
JAX), and Keras assembles the global batch from the processes' parts, so the step, the
batch-norm statistics and the loss are those of the whole global batch. Process 0 is the
chief.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import keras
import numpy as np

from detkit.errors import TrainingError, UsageError

#: Environment variables of a JAX multi-process run.
JAX_COORDINATOR, JAX_NUM_PROCESSES, JAX_PROCESS_ID = (
    "DETKIT_COORDINATOR", "DETKIT_NUM_PROCESSES", "DETKIT_PROCESS_ID")
#: Seconds a collective waits for the other workers before failing the run.
COLLECTIVE_TIMEOUT_S = 300.0


def tf_config() -> Optional[dict]:
    """The parsed ``TF_CONFIG`` (``None`` when unset).

    Raises:
        UsageError: ``TF_CONFIG`` is not JSON with a ``cluster`` and a ``task``.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        config = json.loads(text)
        task, cluster = config["task"], config["cluster"]
        str(task["type"]), int(task.get("index", 0)), dict(cluster)
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"TF_CONFIG must be JSON like {{\"cluster\": {{\"worker\": "
                         f"[\"host:port\", ...]}}, \"task\": {{\"type\": \"worker\", "
                         f"\"index\": 0}}}}: {err}") from None
    return config


def is_chief() -> bool:
    """Whether this process writes the run directory.

    With ``TF_CONFIG``: the ``chief`` task, or worker 0 of a cluster without one. With
    the JAX variables: process 0. Otherwise (one process): yes.
    """
    config = tf_config()
    if config is not None:
        task = config["task"]
        if task["type"] == "chief":
            return True
        return (task["type"] == "worker" and int(task.get("index", 0)) == 0
                and "chief" not in config["cluster"])
    return int(os.environ.get(JAX_PROCESS_ID, "0")) == 0


def worker_run_dir(run_dir: Path, *, resume: bool = False) -> Path:
    """Where this process writes: ``run_dir`` on the chief, else a fresh temporary
    directory (holding a copy of the chief's run files when resuming, so every worker
    starts from the same state; on several machines ``run_dir`` must then be shared).

    The caller removes a temporary directory with :func:`release_run_dir`.
    """
    if is_chief():
        return run_dir
    scratch = Path(tempfile.mkdtemp(prefix="detkit-worker-"))
    if resume and run_dir.is_dir():
        for item in run_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, scratch / item.name)
    return scratch


def release_run_dir(written: Path, run_dir: Path) -> None:
    """Remove a non-chief worker's temporary directory (nothing on the chief)."""
    if written != run_dir:
        shutil.rmtree(written, ignore_errors=True)


def initialize_jax_processes() -> int:
    """Join a JAX multi-process run described by the environment; return its size.

    Does nothing (returns 1) unless ``DETKIT_NUM_PROCESSES`` is above 1. Must run
    before anything starts JAX's backend (a computation, ``jax.devices()``,
    ``jax.process_count()``). Collectives on CPU go through gloo. A process that dies
    later makes the others' next collective fail at once ("Gloo all-reduce failed:
    Connection closed by peer"), and the coordination service then ends them (its
    heartbeat timeout, 100 s by default), so no process waits for ever.

    Raises:
        UsageError: a missing or malformed variable.
        TrainingError: the processes could not join (e.g. no coordinator answered).
    """
    count = int(os.environ.get(JAX_NUM_PROCESSES, "1") or 1)
    if count <= 1:
        return 1
    address = os.environ.get(JAX_COORDINATOR)
    index = os.environ.get(JAX_PROCESS_ID)
    if not address or index is None or not index.isdigit() or int(index) >= count:
        raise UsageError(f"a JAX run over {count} processes needs {JAX_COORDINATOR}="
                         f"host:port and {JAX_PROCESS_ID} in [0, {count})")
    import jax

    # Not jax.process_count(): it starts the XLA backend, after which joining fails.
    if not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize(coordinator_address=address, num_processes=count,
                                       process_id=int(index))
        except RuntimeError as err:  # e.g. the coordinator did not answer in time
            raise TrainingError(f"cannot join the JAX run over {count} processes at "
                                f"{address}: {err}") from None
    return jax.process_count()


def synchronize_batch_norm(model: Any) -> int:
    """Make every ``BatchNormalization`` of ``model`` use the statistics of the global
    batch (all replicas) in training, as one process would; returns how many.

    Only meaningful under a ``tf.distribute`` strategy (the TensorFlow backend).
    """
    from detkit.keras_compat import direct_sublayers

    count = 0
    stack = [model]
    while stack:
        layer = stack.pop()
        stack.extend(direct_sublayers(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count


def replica_rows(global_batch: int, num_replicas: int, replica: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a global batch that ``replica`` trains on.

    Raises:
        UsageError: a global batch that the replicas cannot share equally.
    """
    if global_batch % num_replicas:
        raise UsageError(f"--batch-size {global_batch} must be a multiple of the "
                         f"{num_replicas} replicas training together")
    share = global_batch // num_replicas
    return replica * share, (replica + 1) * share


def distributed_batches(strategy: Any, loader: Any, steps: int, global_batch: int):
    """The batches of ``loader`` as a ``tf.distribute`` dataset, one slice a replica.

    Args:
        strategy: the ``tf.distribute.Strategy`` (or the ``keras.distribution`` of a
            JAX run: see Returns).
        loader: a batch loader whose ``rows(batch, start, stop)`` prepares only rows
            ``[start, stop)`` of a batch (:class:`detkit.data.loader.DetectionBatches`);
            any other ``PyDataset`` is sliced after its whole batch is made.
        steps: global batches per epoch (the last, smaller batch of an epoch is left
            out: every replica must take a step together).
        global_batch: images per global batch (``--batch-size``).

    Returns:
        A ``tf.distribute.DistributedDataset`` for ``fit``, re-iterated every epoch (the
        loader's current epoch decides order and augmentation). Under a
        ``keras.distribution`` (``strategy`` is not a ``tf.distribute`` strategy: the JAX
        backend), this process's rows of every global batch (:func:`process_batches`).
    """
    if not hasattr(strategy, "distribute_datasets_from_function"):
        return process_batches(loader, steps, global_batch)
    import tensorflow as tf

    replicas = int(strategy.num_replicas_in_sync)
    replica_rows(global_batch, replicas, 0)
    sample = _slice(loader, 0, *replica_rows(global_batch, replicas, 0))
    signature = tf.nest.map_structure(
        lambda a: tf.TensorSpec((None, *np.shape(a)[1:]), tf.as_dtype(np.asarray(a).dtype)),
        sample)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def generate():
            for step in range(steps):
                for replica in range(first, first + local):
                    yield _slice(loader, step, *replica_rows(global_batch, replicas,
                                                             replica))

        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps * local))
        return dataset.prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn)


def jax_process_index() -> tuple[int, int]:
    """``(this process's index, process count)`` of a JAX run (``(0, 1)`` in one
    process, or on another backend)."""
    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return int(jax.process_index()), int(jax.process_count())


def process_batches(loader: Any, steps: int, global_batch: int, *,
                    process: Optional[int] = None, count: Optional[int] = None):
    """This JAX process's share of every global batch of ``loader``, as a ``PyDataset``.

    Under ``keras.distribution.DataParallel`` over several processes, Keras on JAX takes
    each process's batch as its local part of the global batch
    (``jax.make_array_from_process_local_data``): process ``p`` of ``n`` must give rows
    ``[p B / n, (p + 1) B / n)`` of global batch ``B``. Each process prepares only those
    rows (``loader.rows``), so no image is read twice, and the global batch that the
    step sees is the one a single process would train on.

    Args:
        loader: the batch loader (``rows(batch, start, stop)``, as for
            :func:`distributed_batches`), its epoch set by the run's callbacks.
        steps: global batches per epoch (without a short last one: every process
            must take every step).
        global_batch: images per global batch (``--batch-size``).
        process, count: this process's index and the process count (default: JAX's).

    Raises:
        UsageError: a global batch the processes cannot share equally.
    """
    if process is None or count is None:
        process, count = jax_process_index()
    start, stop = replica_rows(global_batch, count, process)
    return ProcessShard(loader, steps, start, stop)


class ProcessShard(keras.utils.PyDataset):
    """Rows ``[start, stop)`` of each of the first ``steps`` batches of ``loader``, with
    the loader's ``PyDataset`` parallelism (see :func:`process_batches`).

    Attributes:
        base: the loader.
    """

    def __init__(self, loader: Any, steps: int, start: int, stop: int):
        super().__init__(workers=getattr(loader, "workers", 1),
                         use_multiprocessing=getattr(loader, "use_multiprocessing", False),
                         max_queue_size=getattr(loader, "max_queue_size", 10))
        self.base, self.steps, self.start, self.stop = loader, int(steps), start, stop

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} out of range [0, {self.steps})")
        return _slice(self.base, index, self.start, self.stop)


def _slice(loader: Any, batch: int, start: int, stop: int):
    """Rows ``[start, stop)`` of ``loader``'s batch ``batch``."""
    rows: Optional[Callable] = getattr(loader, "rows", None)
    if rows is not None:
        return rows(batch, start, stop)
    return _map(loader[batch], lambda array: np.asarray(array)[start:stop])


def _map(structure: Any, fn: Callable) -> Any:
    """``fn`` over the arrays of a nest of tuples, lists and dicts."""
    if isinstance(structure, dict):
        return {key: _map(value, fn) for key, value in structure.items()}
    if isinstance(structure, (tuple, list)):
        return type(structure)(_map(value, fn) for value in structure)
    return fn(structure)
