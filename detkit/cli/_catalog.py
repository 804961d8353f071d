"""The commands, in pipeline order: name -> (the ``detkit.cli`` module that registers it,
its help text). ``detkit --help`` lists them from here without importing any of them."""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    """One subcommand: its module in ``detkit.cli`` and its ``--help`` text."""

    module: str
    help: str


COMMANDS: dict[str, Entry] = {
    "synth": Entry("synth", "Write a synthetic detection dataset: OUT/images/, train.txt, "
                   "val.txt, classes.txt, train.json and val.json (COCO ground truth)."),
    "doctor": Entry("doctor", "Report a dataset's health before training: images, boxes per "
                    "class, box sizes at the input, anchor fit. Exit code 1 on a fatal "
                    "problem: no image readable, more than --max-missing of the images "
                    "missing or unreadable (default 0: any one is fatal), or no box left "
                    "for training."),
    "kmeans-anchors": Entry("kmeans_anchors", "Cluster the dataset's box sizes (as scaled "
                            "to the input) into anchors."),
    "encode-labels": Entry("encode_labels", "Encode every image's letterboxed boxes for "
                           "--model (labels.npz): YOLOv3 target slots, or the boxes the "
                           "other families assign per batch."),
    "import-darknet": Entry("import_darknet", "Convert a Darknet cfg + weights (yolov3, "
                            "yolov3-tiny, darknet53) into detkit weights, anchors and a "
                            "manifest."),
    "cache-bottlenecks": Entry("cache_bottlenecks", "Run the frozen body once over every "
                               "image (letterboxed, no augmentation) and store its outputs "
                               "in an HDF5 cache that train --stage 1 --bottlenecks reads."),
    "train": Entry("train", "Train one stage: writes best/last weights, history.csv and "
                   "manifest.json."),
    "distill": Entry("distill", "Train a student with a frozen teacher (objectness-scaled "
                     "distillation); train's options (--stage, --weights, --model...) are "
                     "the student's. Writes what train writes."),
    "eval-map": Entry("eval_map", "Evaluate detections (a COCO results json, or a model "
                      "run) against ground truth."),
    "predict": Entry("predict", "Detect objects in images or a video with trained weights "
                     "or an export; write COCO-style results (and drawn images or video)."),
    "export": Entry("export", "Export trained weights as a SavedModel, TF Lite or ONNX "
                    "model (+ manifest)."),
    "compare": Entry("compare", "Compare eval-map reports (Keras models and their "
                     "exports): mAP, size on disk, ms/image, one row per report."),
    "version": Entry("version", "Print detkit's version and the versions of the libraries "
                     "it uses."),
}
