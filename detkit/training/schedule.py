"""Learning-rate schedules: linear warmup, then cosine decay or plateau reductions."""

from __future__ import annotations

import math

import keras
from keras import ops


#: The cosine schedule ends at this fraction of the peak rate.
COSINE_FLOOR = 0.01


@keras.saving.register_keras_serializable(package="detkit")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``peak``, then cosine decay to ``floor * peak``.

    ``lr(t) = peak (t + 1) / warmup`` for ``t < warmup`` (steps), then
    ``lr(t) = peak (floor + (1 - floor) (1 + cos(pi min(1, (t - warmup) / (total -
    warmup)))) / 2)``. The step ``t`` is the optimizer's iteration count, so a resumed
    run (optimizer state restored) continues the same curve.

    Args:
        peak: the rate after warmup (e.g. ``1e-3``).
        total_steps: optimizer steps of the whole run.
        warmup_steps: steps of linear warmup (0: none).
        floor: final rate as a fraction of ``peak``.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0,
                 floor: float = COSINE_FLOOR):
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.floor = float(floor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = self.floor + (1.0 - self.floor) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = self.peak * cosine
        if self.warmup_steps == 0:
            return decayed
        ramp = self.peak * ops.minimum((step + 1.0) / warmup, 1.0)
        return ops.where(step < warmup, ramp, decayed)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "floor": self.floor}


class LinearWarmup(keras.callbacks.Callback):
    """Linear warmup of a plain (variable) learning rate, for the plateau schedule.

    Before each of the first ``warmup_steps`` optimizer steps the rate is set to
    ``scale peak (t + 1) / warmup_steps``; the step after warmup sets ``scale peak``, and
    the rate is then left to ``ReduceLROnPlateau``. ``scale`` starts at 1 and takes every
    change another callback made to the rate meanwhile (a plateau reduction during
    warmup is kept, not overwritten by the ramp). Reads the optimizer's iteration count,
    so a resumed run does not warm up again (and a run resumed during warmup recovers
    ``scale`` from the restored rate).
    """

    def __init__(self, peak: float, warmup_steps: int):
        super().__init__()
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.scale = 1.0
        self._last: float | None = None

    def _ramp(self, step: int) -> float:
        return self.peak * min(step + 1, self.warmup_steps) / self.warmup_steps

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        step = int(ops.convert_to_numpy(optimizer.iterations))
        if step > self.warmup_steps:
            return
        current = float(ops.convert_to_numpy(optimizer.learning_rate))
        # The rate set before this step: ours (or, after a resume, the ramp's), times
        # whatever another callback (ReduceLROnPlateau) multiplied it by since.
        before = self._last if self._last is not None else (
            self._ramp(step - 1) * self.scale if step > 0 else None)
        if before and not math.isclose(current, before, rel_tol=1e-5):
            self.scale *= current / before
        rate = self.scale * (self._ramp(step) if step < self.warmup_steps else self.peak)
        optimizer.learning_rate = rate
        self._last = rate
