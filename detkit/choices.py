"""The names options choose among, each tuple written once and free of Keras.

The modules that implement a choice (losses, schedules, strategies, freezing, the
bottleneck cache, k-means) and the ``Options`` that offer it on the command line both
import the tuple from here, so ``detkit --help`` never imports Keras to list them.
"""

#: Box regression losses (``--box-loss``) and objectness losses (``--obj-loss``).
BOX_LOSSES = ("mse", "huber", "ciou")
OBJ_LOSSES = ("bce", "focal")
#: Learning-rate schedules after warmup (``--schedule``).
SCHEDULES = ("cosine", "plateau")
#: Distribution strategies (``--strategy``).
STRATEGIES = ("none", "mirrored", "multi-worker")
#: Parts of a detector that can be frozen (``--freeze``): ``none`` (all trainable),
#: ``body`` (keras-yolo3's freeze_body=1), ``all-but-heads`` (only the final ``head_out_*``
#: convs train, freeze_body=2).
FREEZE_MODES = ("none", "body", "all-but-heads")
#: Where a detector is cut for the bottleneck cache (``--split``), and the default.
SPLITS = ("body", "all-but-heads")
DEFAULT_SPLIT = "all-but-heads"
#: Storage dtypes and compressions of the bottleneck cache (``--dtype``, ``--compression``).
DTYPES = ("float16", "float32")
COMPRESSIONS = ("auto", "none", "lzf", "gzip")
#: How k-means sees boxes (``--resize``) and its cluster centers (``--center``).
RESIZE_MODES = ("letterbox", "stretch")
CENTERS = ("median", "mean")
#: Bodies the heads can sit on (``--backbone``): detkit's Darknet-53, the yolov3-tiny
#: 7-conv body and the small residual Darknet of retinanet / rpn, and three
#: ``keras.applications`` networks.
BACKBONES = ("darknet53", "darknet-tiny", "darknet-small", "mobilenetv2", "efficientnetb0",
             "resnet50")
#: ``--backbone-weights`` words (anything else is a file path).
BACKBONE_WEIGHTS_WORDS = ("imagenet", "none")
#: Compute precisions (``--precision``): Keras dtype policies.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
#: What picks ``best.weights.h5`` (``--monitor``): the validation loss (lower is better),
#: or a COCO figure of ``--eval-every`` (higher is better): AP, AP50, 0.1 AP50 + 0.9 AP.
MONITORS = ("val_loss", "map", "map50", "fitness")
