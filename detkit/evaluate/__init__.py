"""Detection metrics: pycocotools-exact COCO evaluation and PASCAL VOC mAP, in NumPy.

The evaluators work on flat arrays (:class:`GroundTruth`, :class:`Detections`) rather than
per-image dictionaries: ground truth and detections are grouped by ``(image, category)``
with stable sorts, IoUs are computed only inside groups, and the greedy matching runs for
every IoU threshold and area range at once.
"""

from detkit.evaluate.coco import CocoParams, CocoResult, evaluate_coco
from detkit.evaluate.inputs import (Detections, GroundTruth, check_detections,
                                    detections_from_list, detections_model,
                                    ground_truth_from_coco, ground_truth_from_dataset,
                                    load_detections, load_ground_truth)
from detkit.evaluate.voc import VocResult, evaluate_voc

__all__ = ["CocoParams", "CocoResult", "Detections", "GroundTruth", "VocResult",
           "check_detections", "detections_from_list", "detections_model",
           "evaluate_coco", "evaluate_voc", "ground_truth_from_coco",
           "ground_truth_from_dataset", "load_detections", "load_ground_truth"]
