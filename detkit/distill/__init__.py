"""Knowledge distillation of a YOLO student from a frozen YOLO teacher (``detkit distill``).

* :mod:`~detkit.distill.loss` - :class:`DistillationLoss`, objectness-scaled
  distillation of raw head outputs (Mehta and Ozturk, 2018), in ``keras.ops``.
* :mod:`~detkit.distill.scales` - :func:`match_strides`: the output scales teacher and
  student share (same stride, same anchors).
* :mod:`~detkit.distill.model` - :class:`DistillationTrainingModel`: ``train``'s
  training model with the teacher run in-graph, in inference mode, on the student's
  own (augmented) batch.
* :mod:`~detkit.distill.teacher` - :func:`resolve_teacher`, :func:`build_teacher`: the
  teacher's architecture from the flags or its manifest, every layer of its weights
  loaded, frozen.
* :mod:`~detkit.distill.cache` - ``--teacher-cache``: the teacher's outputs on the
  letterboxed images, computed once into HDF5 and read back batch by batch.
* :mod:`~detkit.distill.run` - :func:`run_distillation` (options:
  :class:`detkit.commands.distill.Options`):
  ``train``'s run (stages, checkpoints, resume, NaN guard, mixed precision) with the
  teacher plugged in.

The student's loss is ``(1 - alpha) * L_gt + alpha * L_distill`` per image (``alpha = 0``
is plain training, exactly); ``val_loss`` is always the ground-truth loss alone, so
``best.weights.h5`` tracks how well the student fits the labels.
"""

from detkit.distill.cache import (TeacherCache, TeacherOutputBatches, cache_settings,
                                  write_teacher_cache)
from detkit.distill.loss import DistillationLoss, binary_kl_with_logits
from detkit.distill.model import DistillationTrainingModel
from detkit.distill.run import Distillation, DistillResult, run_distillation
from detkit.distill.scales import StridePair, match_strides, require_pairs
from detkit.distill.teacher import (TeacherSpec, build_teacher, preserved_random_state,
                                    resolve_teacher, teacher_weights_and_manifest)

__all__ = [
    "DistillResult", "Distillation", "DistillationLoss",
    "DistillationTrainingModel", "StridePair", "TeacherCache", "TeacherOutputBatches",
    "TeacherSpec", "binary_kl_with_logits", "build_teacher", "cache_settings",
    "match_strides", "preserved_random_state", "require_pairs", "resolve_teacher",
    "run_distillation", "teacher_weights_and_manifest", "write_teacher_cache",
]
