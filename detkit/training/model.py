"""A network with its detection loss: :class:`YoloTrainingModel`."""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from detkit.keras_compat import declare_built, symbolic_build_without_data
from detkit.training.strategy import num_replicas_in_sync

#: Name of the weight-decay term in the logs (the network's regularization losses).
REG_TERM = "reg"


class YoloTrainingModel(keras.Model):
    """Wrap ``network`` (inputs -> list of raw YOLO outputs) for ``fit``/``evaluate``.

    Overrides only :meth:`compute_loss`, so the stock ``train_step`` of every backend
    (TensorFlow, JAX, PyTorch) runs it. The loss is

    ``loss = mean_b sum_terms loss.terms(y, y_pred)[term][b] + sum(network.losses)``

    (the weight decay of the network's regularizers; in evaluation, ``val_loss``, the
    data loss alone: the decay depends on which layers train, not on the images, so
    a ``--bottlenecks`` run's cached and image phases, which train different layers,
    are compared on the same footing; ``val_reg`` still logs it), divided by the number of
    ``tf.distribute`` replicas (whose gradients are summed). Each term's batch mean is
    tracked as a metric named after it (``xy``, ``wh``, ``obj``, ``cls`` or ``box``,
    plus ``reg``), so ``fit`` logs them beside ``loss`` and ``val_*``. A loss with
    ``make_metrics()`` and ``update_metrics(metrics, y, y_pred)`` (the RPN's masked
    accuracy) has those metrics logged too.

    ``network`` can be the full detector (images in) or its trainable part on cached
    features (the bottleneck path): anything whose outputs the loss understands.
    Checkpoints should save ``network``'s weights (``model.network.save_weights``);
    ``model.save_weights`` also stores the optimizer state (the resume state).

    Subclasses that add loss terms (distillation) override :meth:`loss_terms` and name
    the extra terms in ``extra_term_names``.

    Args:
        network: a ``keras.Model`` returning the list of raw outputs, coarsest first.
        loss: a :class:`detkit.losses.YoloV3Loss` (anything with ``terms(y_true, y_pred)``
            returning ``(B,)`` tensors named by ``term_names``).
        extra_term_names: names of the terms :meth:`loss_terms` adds to ``loss``'s.
    """

    def __init__(self, network: keras.Model, loss: Any,
                 extra_term_names: Sequence[str] = (), **kwargs: Any):
        super().__init__(name=kwargs.pop("name", f"{network.name}_training"), **kwargs)
        self.network = network
        self.detection_loss = loss
        self.term_names = tuple(loss.term_names) + tuple(extra_term_names) + (REG_TERM,)
        self.term_trackers = [keras.metrics.Mean(name=name) for name in self.term_names]
        self.loss_metrics = list(loss.make_metrics()) if hasattr(loss, "make_metrics") else []
        # No weights of its own: built when the network is (load_weights needs it).
        declare_built(self, bool(network.built))

    def call(self, inputs, training=None):
        outputs = self.network(inputs, training=training)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """Total loss of a (replica's) batch; updates the per-term metrics."""
        del sample_weight
        terms, per_sample = self.loss_terms(x, y, list(y_pred), training=training)
        count = ops.cast(ops.shape(per_sample)[0], "float32")
        # An empty replica batch (a short last batch split over replicas) gives 0, not NaN.
        data_loss = ops.sum(per_sample) / ops.maximum(count, 1.0)
        reg = ops.sum([ops.cast(ops.sum(l), "float32") for l in self.losses]) \
            if self.losses else ops.zeros((), "float32")
        for name, tracker in zip(self.term_names, self.term_trackers):
            if name == REG_TERM:
                tracker.update_state(reg)
            else:
                tracker.update_state(terms[name])
        if self.loss_metrics:
            self.detection_loss.update_metrics(self.loss_metrics, y, list(y_pred))
        replicas = num_replicas_in_sync()
        total = data_loss + reg if training else data_loss
        return total / replicas if replicas > 1 else total

    def train_step(self, *args, **kwargs):
        result = super().train_step(*args, **kwargs)
        return _per_worker_logs(result) if _multi_worker() else result

    def test_step(self, *args, **kwargs):
        result = super().test_step(*args, **kwargs)
        return _per_worker_logs(result) if _multi_worker() else result

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if keras.backend.backend() != "tensorflow" or not _multi_worker():
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        return symbolic_build_without_data(self)

    def loss_terms(self, x, y, y_pred: list, training=True):
        """Per-sample terms ``{name: (B,)}`` (named by ``term_names`` but ``reg``) and
        the per-sample data loss ``(B,)``: here the detection loss's terms and their sum."""
        del x, training
        terms = self.detection_loss.terms(y, y_pred)
        return terms, sum(terms.values())


def _multi_worker() -> bool:
    """Whether training runs under ``MultiWorkerMirroredStrategy`` (TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(tf.distribute.get_strategy(),
                      tf.distribute.MultiWorkerMirroredStrategy)


def _per_worker_logs(logs: dict) -> dict:
    """Logs as ``(1,)`` tensors under ``MultiWorkerMirroredStrategy``.

    Keras averages a multi-worker run's per-replica logs with ``reduce(..., axis=0)``,
    which fails on scalars; one-element vectors average to the same scalars.
    """
    return {name: ops.reshape(value, (1,)) for name, value in logs.items()}
