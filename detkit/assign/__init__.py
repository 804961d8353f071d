"""Label assigners: a batch of ground-truth boxes -> ``y_true`` of a family's loss (NumPy).

Each detector family names one assigner class in its registry entry
(:mod:`detkit.families`). An assigner is made once per run,
``Assigner(anchors, input_size, num_classes, strides=..., **options)``, and called on
every batch, ``assigner(boxes, classes) -> y_true``, with ``boxes`` ``(B, M, 4)`` xyxy in
input pixels and ``classes`` ``(B, M)`` int (``-1`` pads). ``options`` are the training
options the assigner reads, named in its ``OPTIONS``; ``stats`` accumulates what happened
to the boxes. The matching math itself (cells, anchors, IoU matching, sampling, box
deltas) is :mod:`detkit.encode`; the assigners only hold the settings and shape
``y_true``.

* :class:`~detkit.assign.yolov3.Yolov3Assigner` - per-scale compact YOLOv3 targets.
* :class:`~detkit.assign.yolov2.Yolov2Assigner` - the YOLOv2 (YAD2K) detector mask and
  targets on one grid.
* :class:`~detkit.assign.matching.AnchorMatchingAssigner` - IoU matching of fixed anchors
  (RetinaNet): labels with positives, negatives and ignored anchors, and box deltas.
* :class:`~detkit.assign.matching.RpnAssigner` - class-agnostic objectness over a
  balanced sample of anchors (RPN).

Anchor layout (:mod:`detkit.assign.layout`): an anchors file lists ``K = A * L`` anchor
sizes sorted by area; output level ``i`` (coarsest stride first) uses rows
``[(L - 1 - i) A, (L - i) A)``, so the largest anchors go to the coarsest stride.
"""
