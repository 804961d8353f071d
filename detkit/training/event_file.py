"""A TensorBoard event file written with the ``tensorboard`` package alone (no TensorFlow).

The same file serves every Keras backend: records are TensorBoard's protobufs packed by
its own ``RecordWriter``, so neither ``tf.summary`` nor ``keras.callbacks.TensorBoard``
(which need TensorFlow) is involved. Scalars are ``simple_value`` summaries and images
PNG ``Summary.Image`` values, both of which TensorBoard and its ``EventAccumulator`` read.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import cv2
import numpy as np

from detkit.errors import ArtifactError

#: File name prefix TensorBoard looks for.
EVENTS_PREFIX = "events.out.tfevents"


class EventFile:
    """Append scalars and images to a new event file in ``log_dir``.

    Each instance opens its own file (``events.out.tfevents.<time>.<host>.<pid>``), so a
    resumed run adds a file beside the old ones and TensorBoard reads them together.
    Nothing is opened until the first write; :meth:`flush` after each epoch.

    Args:
        log_dir: folder of the event file (created on the first write).
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self.path: Path | None = None
        self._writer = None

    def _records(self):
        if self._writer is None:
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            now = time.time()
            self.path = self.log_dir / (f"{EVENTS_PREFIX}.{int(now):010d}."
                                        f"{socket.gethostname()}.{os.getpid()}")
            try:
                self._writer = RecordWriter(open(self.path, "ab"))
            except OSError as err:
                raise ArtifactError(f"cannot write TensorBoard events ({err.strerror})",
                                    path=self.path) from None
            first = event_pb2.Event(wall_time=now, file_version="brain.Event:2")
            self._writer.write(first.SerializeToString())
        return self._writer

    def _write(self, step: int, values: list) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        event = event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values))
        self._records().write(event.SerializeToString())

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Write ``{tag: value}`` at ``step`` (non-finite values are skipped)."""
        from tensorboard.compat.proto import summary_pb2

        items = [summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                 for tag, value in values.items() if np.isfinite(float(value))]
        if items:
            self._write(step, items)

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """Write ``{tag: (H, W, 3) uint8 RGB}`` images as PNG at ``step``."""
        from tensorboard.compat.proto import summary_pb2

        items = []
        for tag, image in images.items():
            ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image),
                                                        cv2.COLOR_RGB2BGR))
            if not ok:
                continue
            height, width = image.shape[:2]
            items.append(summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
                height=int(height), width=int(width), colorspace=3,
                encoded_image_string=png.tobytes())))
        if items:
            self._write(step, items)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
