"""Training: the loss-computing model wrapper, callbacks, schedules, strategies, stages.

* :mod:`detkit.training.model` - :class:`YoloTrainingModel`, any network whose outputs
  are raw YOLO outputs (the full detector, or the heads on cached features) with the
  detection loss and per-term metrics.
* :mod:`detkit.training.targets` - the on-the-fly target encoder for the batch loader.
* :mod:`detkit.training.schedule` - warmup + cosine learning rate, warmup for plateau.
* :mod:`detkit.training.callbacks` - NaN guard, history CSV, checkpoints, resume state.
* :mod:`detkit.training.strategy` - ``tf.distribute`` / JAX data parallel behind one
  interface.
* :mod:`detkit.training.run` - the stage logic behind ``detkit train``.
"""
