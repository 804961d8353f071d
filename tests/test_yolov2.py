"""The YOLOv2 family: Darknet-19 + passthrough model, its assigner, the YAD2K loss, decoding.

The loss is compared with a slow per-cell NumPy reference written here; the failure of
YAD2K users (``exp(t_w)`` overflowing to NaN on a random start, negative log targets)
has its own tests. Real training through the CLI is in ``test_families_e2e.py``.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from detkit.assign.yolov2 import Yolov2Assigner
from detkit.decode import decode_yolov2
from detkit.families import get_family
from detkit.losses import YoloV2Loss
from detkit.models.yolov2 import SpaceToDepth, build_yolov2

SIZE = 64
ANCHORS = np.float32([[10, 12], [16, 16], [24, 30], [40, 36], [56, 60]])
NUM_CLASSES = 3


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_loss(raw, y_true, anchors, size, num_classes, ignore=0.5, wo=5.0, wno=1.0,
                   wc=1.0, small=True):
    """YAD2K loss (softmax cross-entropy classes), one cell and anchor at a time; with
    ``small``, Darknet's coordinate scale 2 - w h of the target box."""
    raw = np.asarray(raw, np.float64)
    mask, targets, gt = y_true["mask"], y_true["targets"], y_true["boxes"]
    batch, grid, _, k, _ = raw.shape
    out = {name: np.zeros(batch) for name in ("xy", "wh", "obj", "noobj", "cls")}
    wc_given = wc
    for b in range(batch):
        for i in range(grid):
            for j in range(grid):
                for a in range(k):
                    t = raw[b, i, j, a]
                    m = mask[b, i, j, a, 0]
                    tx, ty, tw, th, c = targets[b, i, j, a]
                    sx, sy = sigmoid(t[0]), sigmoid(t[1])
                    if small and m:
                        true_w = anchors[a, 0] * math.exp(tw) / size
                        true_h = anchors[a, 1] * math.exp(th) / size
                        wc = wc_given * (2 - true_w * true_h)
                    out["xy"][b] += wc * m * ((sx - tx) ** 2 + (sy - ty) ** 2)
                    out["wh"][b] += wc * m * ((t[2] - tw) ** 2 + (t[3] - th) ** 2)
                    clamp = np.log(4.0 * size / anchors[a])
                    w = math.exp(min(t[2], clamp[0])) * anchors[a, 0] / size
                    h = math.exp(min(t[3], clamp[1])) * anchors[a, 1] / size
                    cx, cy = (j + sx) / grid, (i + sy) / grid
                    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                    best = max([iou(box, g) for g in gt[b]] + [0.0])
                    conf = sigmoid(t[4])
                    out["obj"][b] += wo * m * (1 - conf) ** 2
                    out["noobj"][b] += wno * (1 - m) * (best < ignore) * conf ** 2
                    if m:
                        out["cls"][b] -= math.log(softmax(t[5:])[int(c)])
    return out


def sample_batch(seed=0):
    rng = np.random.default_rng(seed)
    boxes = np.zeros((2, 4, 4), np.float32)
    classes = np.full((2, 4), -1, np.int32)
    boxes[0, :3] = [[4, 6, 14, 20], [30, 30, 60, 62], [33, 2, 45, 16]]
    classes[0, :3] = [0, 2, 1]
    boxes[1, :1] = [[10, 10, 50, 44]]
    classes[1, :1] = [1]
    raw = rng.normal(0, 1.5, (2, SIZE // 32, SIZE // 32, 5, 5 + NUM_CLASSES)).astype(np.float32)
    return boxes, classes, raw


# ---------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------

def test_space_to_depth_matches_a_loop():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    got = keras.ops.convert_to_numpy(SpaceToDepth(2)(x))
    want = np.zeros((2, 2, 3, 12), np.float32)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                for dy in range(2):
                    for dx in range(2):
                        want[b, i, j, (dy * 2 + dx) * 3:(dy * 2 + dx + 1) * 3] = \
                            x[b, 2 * i + dy, 2 * j + dx]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, tf.nn.space_to_depth(x, 2).numpy())


def test_yolov2_shapes_and_passthrough():
    model = build_yolov2(80, 1.0, 416)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 13, 13, 5, 85)]
    # YAD2K's yolo.h5 (COCO, 608 or 416) has 50,983,561 parameters.
    assert model.count_params() == 50_983_561
    heads = model.get_layer("heads")
    assert heads.get_layer("passthrough_reorg").output.shape[1:] == (None, None, 256)
    body = model.get_layer("body")
    assert [tuple(o.shape[1:]) for o in body.outputs] == [(13, 13, 1024), (26, 26, 512)]


@pytest.mark.parametrize("name", ["yolov2", "yolov2-tiny"])
def test_output_biases_start_at_zero(name):
    model = get_family(name).build(2, 0.0625, SIZE, 0.0)
    bias = model.get_layer("heads").get_layer("head_out_0").bias
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bias), 0.0)


# ---------------------------------------------------------------------------------------
# Assigner
# ---------------------------------------------------------------------------------------

def test_assigner_hand_case_box_smaller_than_its_anchor():
    """Two boxes on a 2x2 grid (stride 32), both best matched by anchor 0 (10x12).

    Box 0: 12x12 centred at (20, 40) -> grid (0.625, 1.25): row 1, col 0; IoU 120/144 with
    10x12 beats 144/256 with 16x16. Box 1: 6x8 centred at (43, 8) -> (1.34375, 0.25): row
    0, col 1; IoU 48/120 with 10x12. Box 1 is smaller than its anchor, so its log-size
    targets are negative, as they are.
    """
    assigner = Yolov2Assigner(ANCHORS, SIZE, NUM_CLASSES)
    boxes = np.float32([[[14, 34, 26, 46], [40, 4, 46, 12]]])
    y = assigner(boxes, np.int32([[2, 0]]))
    np.testing.assert_array_equal(np.argwhere(y["mask"][..., 0] > 0),
                                  [[0, 0, 1, 0], [0, 1, 0, 0]])
    np.testing.assert_allclose(y["targets"][0, 1, 0, 0],
                               [0.625, 0.25, math.log(12 / 10), 0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(y["targets"][0, 0, 1, 0],
                               [0.34375, 0.25, math.log(6 / 10), math.log(8 / 12), 0.0],
                               atol=1e-6)
    assert y["targets"][0, 0, 1, 0, 2] < 0 and y["targets"][0, 0, 1, 0, 3] < 0
    np.testing.assert_allclose(y["boxes"][0], boxes[0] / SIZE)


def test_assigner_counts_and_padding():
    boxes, classes, _ = sample_batch()
    assigner = Yolov2Assigner(ANCHORS, SIZE, NUM_CLASSES)
    y = assigner(boxes, classes)
    assert y["mask"].shape == (2, 2, 2, 5, 1) and y["targets"].shape == (2, 2, 2, 5, 5)
    assert assigner.stats.boxes == 4 and assigner.stats.padding == 4
    assert int(y["mask"].sum()) == assigner.stats.assigned
    np.testing.assert_array_equal(y["boxes"][1, 1:], 0.0)


# ---------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [{}, {"obj_weight": 2.0, "noobj_weight": 0.5,
                                          "coord_weight": 3.0, "ignore_thresh": 0.3},
                                     {"coord_weight": 3.0, "scale_small_boxes": False}])
def test_loss_matches_the_slow_reference(weights):
    boxes, classes, raw = sample_batch(1)
    y = Yolov2Assigner(ANCHORS, SIZE, NUM_CLASSES)(boxes, classes)
    loss = YoloV2Loss(ANCHORS, NUM_CLASSES, SIZE, **weights)
    got = {k: keras.ops.convert_to_numpy(v) for k, v in loss.terms(y, [raw]).items()}
    ref = reference_loss(raw, y, ANCHORS, SIZE, NUM_CLASSES,
                         ignore=weights.get("ignore_thresh", 0.5),
                         wo=weights.get("obj_weight", 5.0),
                         wno=weights.get("noobj_weight", 1.0),
                         wc=weights.get("coord_weight", 1.0),
                         small=weights.get("scale_small_boxes", True))
    assert list(got) == list(loss.term_names)
    for name in loss.term_names:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert ref["noobj"].sum() > 0 and ref["obj"].sum() > 0
    total = keras.ops.convert_to_numpy(loss(y, [raw]))
    np.testing.assert_allclose(total, sum(ref.values()).mean(), rtol=1e-5)


def test_ignore_drops_exactly_the_overlapping_negatives():
    """A negative anchor whose decoded box is the ground truth takes no no-object loss."""
    boxes = np.float32([[[0, 0, 32, 32]]])
    y = Yolov2Assigner(ANCHORS, SIZE, NUM_CLASSES)(boxes, np.int32([[0]]))
    raw = np.zeros((1, 2, 2, 5, 5 + NUM_CLASSES), np.float32)
    raw[..., 2:4] = -5.0                       # tiny boxes: overlap nothing
    loss = YoloV2Loss(ANCHORS, NUM_CLASSES, SIZE)
    before = float(keras.ops.convert_to_numpy(loss.terms(y, [raw])["noobj"])[0])
    # anchor 4 (56x60) of cell (0, 0) now decodes to a 32x32 box at (16, 16): the gt.
    raw[0, 0, 0, 4, 2:4] = np.log([32 / 56, 32 / 60])
    after = float(keras.ops.convert_to_numpy(loss.terms(y, [raw])["noobj"])[0])
    negatives = 4 * 5 - 1                      # every anchor but the assigned one (3)
    assert y["mask"][0, 0, 0, 3, 0] == 1 and y["mask"].sum() == 1
    np.testing.assert_allclose(before, negatives * 0.25, rtol=1e-6)   # sigmoid(0)^2
    np.testing.assert_allclose(after, (negatives - 1) * 0.25, rtol=1e-6)


def test_negative_log_targets_are_fitted_not_clamped():
    """A box smaller than its anchor: the wh term is 0 exactly at the negative log."""
    boxes = np.float32([[[20, 20, 26, 28]]])              # 6x8, anchor 10x12
    y = Yolov2Assigner(ANCHORS, SIZE, NUM_CLASSES)(boxes, np.int32([[1]]))
    row, col, anchor = np.argwhere(y["mask"][0, ..., 0] > 0)[0]
    raw = np.zeros((1, 2, 2, 5, 5 + NUM_CLASSES), np.float32)
    loss = YoloV2Loss(ANCHORS, NUM_CLASSES, SIZE)
    at_zero = float(keras.ops.convert_to_numpy(loss.terms(y, [raw])["wh"])[0])
    raw[0, row, col, anchor, 2:4] = [math.log(6 / 10), math.log(8 / 12)]
    at_target = float(keras.ops.convert_to_numpy(loss.terms(y, [raw])["wh"])[0])
    darknet_scale = 2 - (6 / SIZE) * (8 / SIZE)           # 2 - w h, relative to the input
    np.testing.assert_allclose(at_zero, darknet_scale * (math.log(0.6) ** 2
                                                         + math.log(8 / 12) ** 2), rtol=1e-5)
    assert at_target < 1e-10


@pytest.mark.parametrize("scale", [30.0, 1e3, 1e5])
def test_wild_outputs_keep_every_term_and_gradient_finite(scale):
    """exp(t_w) of a random start (or a diverging step) cannot overflow: clamped."""
    boxes, classes, raw = sample_batch(2)
    y = Yolov2Assigner(ANCHORS, SIZE, NUM_CLASSES)(boxes, classes)
    raw = tf.Variable(raw * scale)
    loss = YoloV2Loss(ANCHORS, NUM_CLASSES, SIZE)
    with tf.GradientTape() as tape:
        terms = loss.terms(y, [raw])
        total = tf.add_n([tf.reduce_sum(v) for v in terms.values()])
    grad = tape.gradient(total, raw).numpy()
    for name, value in terms.items():
        assert np.all(np.isfinite(value.numpy())), name
    assert np.all(np.isfinite(grad))


# ---------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------

def test_decoder_inverts_the_assigner():
    """Raw outputs made from the targets decode back to the boxes, score = obj x softmax."""
    boxes = np.float32([[[4, 6, 14, 20], [30, 30, 60, 62]]])
    y = Yolov2Assigner(ANCHORS, SIZE, NUM_CLASSES)(boxes, np.int32([[0, 2]]))
    mask, targets = y["mask"][..., 0] > 0, y["targets"]
    raw = np.zeros((1, 2, 2, 5, 5 + NUM_CLASSES), np.float32)
    t = np.clip(targets[..., 0:2], 1e-4, 1 - 1e-4)
    raw[..., 0:2] = np.log(t / (1 - t))
    raw[..., 2:4] = targets[..., 2:4]
    raw[..., 4] = np.where(mask, 6.0, -6.0)
    got_boxes, got_scores = decode_yolov2([raw], ANCHORS, SIZE)
    got_boxes = keras.ops.convert_to_numpy(got_boxes)[0]
    got_scores = keras.ops.convert_to_numpy(got_scores)[0]
    flat = np.flatnonzero(mask[0].reshape(-1))
    np.testing.assert_allclose(got_boxes[flat], boxes[0], atol=1e-2)
    np.testing.assert_allclose(got_scores[flat].sum(axis=1), sigmoid(6.0), rtol=1e-5)
    assert got_scores.shape == (20, NUM_CLASSES)


def test_decode_single_class_scores_are_the_objectness_without_a_warning():
    """One class: the class softmax is 1, so scores are sigmoid(t_o); no Keras warning
    about a softmax over a size-1 axis reaches the user."""
    import warnings

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(2, 4, 4, 5, 6)).astype("float32")   # C = 1
    anchors = np.array([[10, 12], [20, 25], [40, 30], [60, 70], [100, 90]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, scores = decode_yolov2([raw], anchors, 128)
    expected = 1 / (1 + np.exp(-raw[..., 4:5]))
    np.testing.assert_allclose(np.asarray(scores), expected.reshape(2, -1, 1), rtol=1e-6)
