"""COCO mAP of the network being trained, on the ``--val`` images (``--eval-every N``).

:class:`MapEvaluator` runs a network (decoding + NMS with ``predict``'s defaults, compiled
once) over the validation images and scores the detections with detkit's own COCO
evaluator (:func:`detkit.evaluate.evaluate_coco`, pycocotools-exact) as ``eval-map``
does for the family (class-agnostic with AR@1000 for the rpn). The
:class:`MapEvaluation` callback does it every N epochs (and at the run's last epoch) and
adds ``val_map``, ``val_map50`` and ``val_fitness`` to the epoch logs, before the
checkpoint, history and TensorBoard callbacks read them.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import keras
import numpy as np

from detkit.evaluate import detections_from_list, evaluate_coco, ground_truth_from_dataset
from detkit.evaluate.coco import CocoResult, family_params
from detkit.training.callbacks import ema_weights, is_finite

#: Score threshold of the evaluation: ``predict``'s default (its NMS IoU and detections
#: per image are the family's defaults), so ``eval-map --model`` on a checkpoint
#: reproduces the numbers.
EVAL_CONF = 0.001
#: Validation images drawn (predicted and true boxes) at each evaluation.
SAMPLE_IMAGES = 4
#: Longest side of a drawn sample, in pixels (larger images are shrunk).
SAMPLE_SIDE = 640
#: Color of the true boxes (RGB) in the drawn samples.
TRUTH_COLOR = (255, 255, 255)


def fitness(ap: float, ap50: float) -> float:
    """ultralytics' fitness: ``0.1 AP50 + 0.9 AP``."""
    return 0.1 * float(ap50) + 0.9 * float(ap)


def map_logs(result: CocoResult) -> dict[str, float]:
    """``val_map`` (AP@[.5:.95]), ``val_map50`` (AP@.5) and ``val_fitness`` of a result."""
    ap, ap50 = float(result.stats[0]), float(result.stats[1])
    return {"val_map": ap, "val_map50": ap50, "val_fitness": fitness(ap, ap50)}


def draw_sample(image: np.ndarray, record: Any, detections: tuple,
                class_names: Sequence[str]) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB: true boxes (white, thin) under the predicted ones
    (class colors, with scores), shrunk to at most :data:`SAMPLE_SIDE` pixels."""
    from detkit.predict import draw_detections

    canvas = np.ascontiguousarray(image.copy())
    for box in np.asarray(record.boxes, np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), TRUTH_COLOR, 1)
    boxes, scores, classes = detections
    canvas = draw_detections(canvas, boxes, scores, classes, class_names)  # confident ones
    side = max(canvas.shape[:2])
    if side > SAMPLE_SIDE:
        scale = SAMPLE_SIDE / side
        canvas = cv2.resize(canvas, (max(1, round(canvas.shape[1] * scale)),
                                     max(1, round(canvas.shape[0] * scale))),
                            interpolation=cv2.INTER_AREA)
    return canvas


class MapEvaluator:
    """COCO evaluation of a Keras detector network on a dataset.

    Args:
        network: the detector (raw outputs); its current weights are used at each call.
        family: its registry entry; anchors: ``(K, 2)`` input pixels.
        input_size: input side in pixels.
        dataset: the validation :class:`detkit.data.dataset.Dataset`.
        batch_size: images per forward pass.
    """

    def __init__(self, network, family, anchors: np.ndarray, input_size: int, dataset,
                 batch_size: int):
        self.network, self.family, self.anchors = network, family, anchors
        self.input_size, self.batch_size = int(input_size), int(batch_size)
        self.records = list(dataset.records)
        self.class_names = list(dataset.class_names)
        given = getattr(dataset, "category_ids", None)
        self.category_ids = (list(given) if given is not None
                             else list(range(1, len(self.class_names) + 1)))
        self.gt = ground_truth_from_dataset(dataset)
        self._detector = None

    def detector(self):
        """The compiled :class:`~detkit.export.detectors.KerasDetector` (made once)."""
        if self._detector is None:
            from detkit.export.detectors import KerasDetector
            from detkit.models.detector import at_input_size

            # A network built for any side (multi-scale training) runs at input_size.
            network = at_input_size(self.network, self.input_size)
            iou, max_det = self.family.nms(None, None)
            self._detector = KerasDetector(network, self.family, self.anchors,
                                           self.input_size, conf=EVAL_CONF, iou=iou,
                                           max_det=max_det,
                                           batch_size=self.batch_size, compile=True)
        return self._detector

    def evaluate(self, draw: int = 0) -> tuple[CocoResult, list[np.ndarray]]:
        """Detect on every image and score: ``(result, the first draw images drawn)``."""
        from detkit.data.images import read_image
        from detkit.predict import detect_images

        detector, results, drawings = self.detector(), [], []
        for start in range(0, len(self.records), self.batch_size):
            chunk = self.records[start:start + self.batch_size]
            originals = [read_image(record.image_path) for record in chunk]
            found, per_image = detect_images(detector, originals,
                                             [r.image_id for r in chunk], self.category_ids)
            results += found
            for record, image, detections in zip(chunk, originals, per_image):
                if len(drawings) < draw:
                    drawings.append(draw_sample(image, record, detections,
                                                self.class_names))
        detections = detections_from_list(results, self.gt, source="<validation>")
        return evaluate_coco(self.gt, detections, family_params(self.family)), drawings


class MapEvaluation(keras.callbacks.Callback):
    """Every ``every`` epochs, and at epoch ``last_epoch``, add the mAP logs.

    Runs with the EMA weights when the optimizer keeps them (as checkpoints do). After
    an evaluation, ``drawings`` holds the drawn samples and ``drawn_epoch`` its 0-based
    epoch (for :class:`detkit.training.board.TensorBoardLog`).

    Args:
        evaluator: the :class:`MapEvaluator` of the phase's network.
        every: epochs between evaluations (>= 1).
        last_epoch: the run's number of epochs (its last one is always evaluated).
        samples: images to draw at each evaluation.
    """

    def __init__(self, evaluator: MapEvaluator, every: int, last_epoch: int,
                 samples: int = SAMPLE_IMAGES):
        super().__init__()
        self.evaluator, self.every, self.last_epoch = evaluator, int(every), int(last_epoch)
        self.samples = int(samples)
        self.drawings: list[np.ndarray] = []
        self.drawn_epoch = -1

    def due(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` is evaluated."""
        return (epoch + 1) % self.every == 0 or epoch + 1 == self.last_epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.due(epoch) or not is_finite(logs.get("loss")):
            return
        with ema_weights(self.model):
            result, self.drawings = self.evaluator.evaluate(draw=self.samples)
        self.drawn_epoch = int(epoch)
        logs.update(map_logs(result))
