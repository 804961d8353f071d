"""Losses against slow loop-based references, hand-computed cases and edge cases."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from detkit.decode import MAX_BOX_TO_INPUT
from detkit.encode import IGNORED as IGNORE
from detkit.encode import NEGATIVE as BACKGROUND
from detkit.losses import (FocalLoss, HuberLoss, MaskedBinaryAccuracy,
                           MaskedBinaryCrossentropy, YoloV3Loss, ciou)

LOG2 = math.log(2.0)
ANCHORS_6 = np.float32([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]])


# ---------------------------------------------------------------------------------------
# Slow references
# ---------------------------------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _bce(z, x):
    """BCE with logits of one element, the textbook way (x is moderate in tests)."""
    p = min(max(_sigmoid(x), 1e-12), 1 - 1e-12)
    return -(z * math.log(p) + (1 - z) * math.log(1 - p))


def _focal(z, x, alpha=0.25, gamma=2.0):
    p = _sigmoid(x)
    p_t = z * p + (1 - z) * (1 - p)
    a_t = z * alpha + (1 - z) * (1 - alpha)
    return a_t * (1 - p_t) ** gamma * _bce(z, x)


def _huber(e, delta=1.0):
    return 0.5 * e * e if abs(e) <= delta else delta * (abs(e) - 0.5 * delta)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = ((a[2] - a[0]) * (a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
             - inter)
    return inter / union if union > 0 else 0.0


def _ciou(pa, pb):
    """CIoU of boxes given as (cx, cy, w, h)."""
    a = [pa[0] - pa[2] / 2, pa[1] - pa[3] / 2, pa[0] + pa[2] / 2, pa[1] + pa[3] / 2]
    b = [pb[0] - pb[2] / 2, pb[1] - pb[3] / 2, pb[0] + pb[2] / 2, pb[1] + pb[3] / 2]
    iou = _iou(a, b)
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    rho2 = (pa[0] - pb[0]) ** 2 + (pa[1] - pb[1]) ** 2
    v = 4 / math.pi ** 2 * (math.atan(pb[2] / pb[3]) - math.atan(pa[2] / pa[3])) ** 2
    alpha = v / (1 - iou + v) if (1 - iou + v) > 0 else 0.0
    return iou - rho2 / (cw * cw + ch * ch) - alpha * v


def reference_yolo_loss(raw_list, target_list, gt_boxes, anchors, num_classes, input_size,
                        ignore_thresh=0.5, box_loss="mse", obj_loss="bce"):
    """Element-by-element YOLOv3 loss (keras-yolo3 semantics, all-GT ignore mask)."""
    scales = len(anchors) // 3
    masks = [[3 * s + i for i in range(3)] for s in reversed(range(scales))]
    batch = raw_list[0].shape[0]
    total = {"xy": 0.0, "wh": 0.0, "box": 0.0, "obj": 0.0, "cls": 0.0}
    for raw, target, mask in zip(raw_list, target_list, masks):
        grid = raw.shape[1]
        for b in range(batch):
            for i in range(grid):          # row (y)
                for j in range(grid):      # column (x)
                    for k, anchor_id in enumerate(mask):
                        r = raw[b, i, j, k].astype(np.float64)
                        t = target[b, i, j, k].astype(np.float64)
                        aw, ah = anchors[anchor_id] / input_size
                        px = (_sigmoid(r[0]) + j) / grid
                        py = (_sigmoid(r[1]) + i) / grid
                        # the decoder's overflow clamp: boxes at most 4x the input
                        pw = math.exp(min(r[2], math.log(MAX_BOX_TO_INPUT / aw))) * aw
                        ph = math.exp(min(r[3], math.log(MAX_BOX_TO_INPUT / ah))) * ah
                        obj = t[4]
                        if obj > 0:
                            scale = 2 - t[2] * t[3]
                            if box_loss == "ciou":
                                total["box"] += scale * (1 - _ciou((px, py, pw, ph), t[:4]))
                            else:
                                total["xy"] += scale * (_bce(t[0] * grid - j, r[0]) +
                                                        _bce(t[1] * grid - i, r[1]))
                                for e in (r[2] - math.log(t[2] / aw),
                                          r[3] - math.log(t[3] / ah)):
                                    total["wh"] += scale * (0.5 * e * e if box_loss == "mse"
                                                            else _huber(e))
                            total["obj"] += (_bce(1, r[4]) if obj_loss == "bce"
                                             else _focal(1, r[4]))
                            for c in range(num_classes):
                                total["cls"] += _bce(1.0 if c == int(t[5]) else 0.0, r[5 + c])
                        else:
                            pred = [px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2]
                            best = max([_iou(pred, g) for g in gt_boxes[b]] + [0.0])
                            if best < ignore_thresh:
                                total["obj"] += (_bce(0, r[4]) if obj_loss == "bce"
                                                 else _focal(0, r[4]))
    return {name: value / batch for name, value in total.items()}


def random_case(seed, batch=2, input_size=64, num_classes=3, boxes_per_image=3, pad=5):
    """Raw outputs, targets and padded GT boxes for a 2-scale (yolov3-tiny) layout.

    Each GT box is assigned to a random scale and anchor at the cell of its center; the
    padded box list holds every GT box, so other scales see it in their ignore masks.
    """
    rng = np.random.default_rng(seed)
    grids = [input_size // 32, input_size // 16]
    raws = [rng.normal(0, 1.5, (batch, g, g, 3, 5 + num_classes)).astype(np.float32)
            for g in grids]
    targets = [np.zeros((batch, g, g, 3, 6), np.float32) for g in grids]
    for t in targets:
        t[..., 5] = -1
    gt = np.zeros((batch, boxes_per_image + pad, 4), np.float32)
    for b in range(batch):
        for n in range(boxes_per_image):
            cx, cy = rng.uniform(0.1, 0.9, 2)
            w, h = rng.uniform(0.05, 0.6, 2)
            gt[b, n] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            scale = rng.integers(len(grids))
            g = grids[scale]
            i, j, k = int(cy * g), int(cx * g), rng.integers(3)
            targets[scale][b, i, j, k] = [cx, cy, w, h, 1, rng.integers(num_classes)]
    # Nudge a few raw predictions onto GT boxes so that some ignore decisions flip.
    return raws, targets, gt


def _loss_terms(loss, raws, targets, gt):
    y_true = {"targets": [ops.convert_to_tensor(t) for t in targets],
              "boxes": ops.convert_to_tensor(gt)}
    terms = loss.terms(y_true, [ops.convert_to_tensor(r) for r in raws])
    total = loss(y_true, [ops.convert_to_tensor(r) for r in raws])
    batch = raws[0].shape[0]
    means = {name: float(ops.convert_to_numpy(ops.sum(v))) / batch
             for name, v in terms.items()}
    return means, float(ops.convert_to_numpy(total))


# ---------------------------------------------------------------------------------------
# YOLOv3 loss
# ---------------------------------------------------------------------------------------

def test_yolo_loss_hand_computed_single_cell():
    """One 1x1 grid, three anchors, the GT box equals anchor 0: every term on paper.

    Raw outputs are zero, so every BCE is log 2 except where the target offset is 0.5
    (also log 2), and the wh error is log(1) = 0. Box weight s = 2 - 0.25^2 = 1.9375.
    xy = 2 s log2; wh = 0; obj = log2 (positive) + 2 log2 (negatives with IoU 0.25 and
    0.0625 < 0.5); cls = log2. Total = (3.875 + 4) log 2.
    """
    anchors = np.float32([[8, 8], [16, 16], [32, 32]])
    loss = YoloV3Loss(anchors, num_classes=1, input_size=32)
    raw = np.zeros((1, 1, 1, 3, 6), np.float32)
    target = np.zeros((1, 1, 1, 3, 6), np.float32)
    target[..., 5] = -1
    target[0, 0, 0, 0] = [0.5, 0.5, 0.25, 0.25, 1, 0]
    gt = np.float32([[[0.375, 0.375, 0.625, 0.625], [0, 0, 0, 0]]])
    terms, total = _loss_terms(loss, [raw], [target], gt)
    np.testing.assert_allclose(terms["xy"], 2 * 1.9375 * LOG2, rtol=1e-6)
    np.testing.assert_allclose(terms["wh"], 0.0, atol=1e-7)
    np.testing.assert_allclose(terms["obj"], 3 * LOG2, rtol=1e-6)
    np.testing.assert_allclose(terms["cls"], LOG2, rtol=1e-6)
    np.testing.assert_allclose(total, 7.875 * LOG2, rtol=1e-6)
    # A lower ignore threshold ignores anchor 1 (IoU 0.25): one log 2 less objectness.
    loss = YoloV3Loss(anchors, num_classes=1, input_size=32, ignore_thresh=0.2)
    terms, total = _loss_terms(loss, [raw], [target], gt)
    np.testing.assert_allclose(terms["obj"], 2 * LOG2, rtol=1e-6)
    np.testing.assert_allclose(total, 6.875 * LOG2, rtol=1e-6)


@pytest.mark.parametrize("box_loss,obj_loss,seed", [
    ("mse", "bce", 0), ("mse", "bce", 1), ("huber", "bce", 2), ("ciou", "bce", 3),
    ("mse", "focal", 4), ("ciou", "focal", 5)])
def test_yolo_loss_matches_loop_reference(box_loss, obj_loss, seed):
    raws, targets, gt = random_case(seed)
    loss = YoloV3Loss(ANCHORS_6, num_classes=3, input_size=64, ignore_thresh=0.3,
                      box_loss=box_loss, obj_loss=obj_loss)
    terms, total = _loss_terms(loss, raws, targets, gt)
    ref = reference_yolo_loss(raws, targets, gt, ANCHORS_6, 3, 64, ignore_thresh=0.3,
                              box_loss=box_loss, obj_loss=obj_loss)
    assert set(terms) == set(loss.term_names)
    for name in loss.term_names:
        np.testing.assert_allclose(terms[name], ref[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    np.testing.assert_allclose(total, sum(ref[n] for n in loss.term_names), rtol=1e-4)


def test_yolo_loss_ignore_mask_uses_all_gt_boxes_of_the_image():
    """A negative cell whose prediction sits on a GT box of another image is not ignored."""
    anchors = np.float32([[8, 8], [16, 16], [32, 32]])
    loss = YoloV3Loss(anchors, num_classes=1, input_size=32)
    raw = np.zeros((2, 1, 1, 3, 6), np.float32)
    target = np.zeros((2, 1, 1, 3, 6), np.float32)
    target[..., 5] = -1
    # Image 0 has a GT box equal to anchor 1's decoded box (IoU 1); image 1 has none.
    gt = np.zeros((2, 3, 4), np.float32)
    gt[0, 2] = [0.25, 0.25, 0.75, 0.75]
    terms, _ = _loss_terms(loss, [raw], [target], gt)
    # Image 0: anchor 1 ignored, anchors 0 and 2 counted; image 1: all three counted.
    np.testing.assert_allclose(terms["obj"], (2 + 3) * LOG2 / 2, rtol=1e-6)


def test_yolo_loss_is_a_batch_mean_and_ignores_padding():
    raws, targets, gt = random_case(7, batch=1)
    loss = YoloV3Loss(ANCHORS_6, num_classes=3, input_size=64)
    _, single = _loss_terms(loss, raws, targets, gt)
    doubled = ([np.concatenate([r, r]) for r in raws],
               [np.concatenate([t, t]) for t in targets], np.concatenate([gt, gt]))
    _, mean = _loss_terms(loss, *doubled)
    np.testing.assert_allclose(mean, single, rtol=1e-6)
    padded = np.concatenate([gt, np.zeros((1, 20, 4), np.float32)], axis=1)
    _, with_padding = _loss_terms(loss, raws, targets, padded)
    np.testing.assert_allclose(with_padding, single, rtol=1e-6)


@pytest.mark.parametrize("box_loss", ["mse", "huber", "ciou"])
def test_yolo_loss_finite_on_failure_cases(box_loss):
    """Exploding logits, images with no boxes and a degenerate box: finite loss and grads."""
    raws, targets, gt = random_case(11, num_classes=1)
    for t in targets:
        t[..., 5] = np.where(t[..., 4] > 0, 0, -1)
    raws[0][..., 2:4] = 1e4       # would overflow exp without the clamp
    raws[1][..., 2:4] = -1e4
    raws[1][..., 4] = 1e4
    targets[1][1] = 0             # image 1: no boxes at all
    targets[1][1][..., 5] = -1
    targets[0][1] = 0
    targets[0][1][..., 5] = -1
    gt[1] = 0
    targets[1][0, 0, 0, 0] = [0.1, 0.1, 0.0, 0.2, 1, 0]   # zero-width box
    loss = YoloV3Loss(ANCHORS_6, num_classes=1, input_size=64, box_loss=box_loss)
    variables = [keras.Variable(r) for r in raws]
    y_true = {"targets": [ops.convert_to_tensor(t) for t in targets],
              "boxes": ops.convert_to_tensor(gt)}
    import tensorflow as tf  # gradient check only; the loss itself is keras.ops
    with tf.GradientTape() as tape:
        value = loss(y_true, [v.value for v in variables])
    grads = tape.gradient(value, [v.value for v in variables])
    assert np.isfinite(float(value))
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy()))


def test_yolo_loss_zero_when_prediction_is_perfect_ciou():
    """CIoU of identical boxes is 1, so the box term vanishes."""
    anchors = np.float32([[8, 8], [16, 16], [32, 32]])
    loss = YoloV3Loss(anchors, num_classes=1, input_size=32, box_loss="ciou")
    raw = np.zeros((1, 1, 1, 3, 6), np.float32)
    target = np.zeros((1, 1, 1, 3, 6), np.float32)
    target[..., 5] = -1
    target[0, 0, 0, 1] = [0.5, 0.5, 0.5, 0.5, 1, 0]   # exactly anchor 1's decoded box
    gt = np.float32([[[0.25, 0.25, 0.75, 0.75]]])
    terms, _ = _loss_terms(loss, [raw], [target], gt)
    np.testing.assert_allclose(terms["box"], 0.0, atol=1e-6)


def test_ciou_matches_reference_on_random_pairs():
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.uniform(0, 1, (50, 2)), rng.uniform(0.01, 0.5, (50, 2))], 1)
    b = np.concatenate([rng.uniform(0, 1, (50, 2)), rng.uniform(0.01, 0.5, (50, 2))], 1)
    a, b = a.astype(np.float32), b.astype(np.float32)
    fast = ops.convert_to_numpy(ciou(a[:, :2], a[:, 2:], b[:, :2], b[:, 2:]))
    slow = [_ciou(x.astype(np.float64), y.astype(np.float64)) for x, y in zip(a, b)]
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5)


def test_yolo_loss_config_round_trip_and_bad_choice():
    loss = YoloV3Loss(ANCHORS_6, 3, 64, ignore_thresh=0.4, box_loss="huber",
                      obj_loss="focal")
    clone = YoloV3Loss.from_config(loss.get_config())
    raws, targets, gt = random_case(5)
    np.testing.assert_allclose(_loss_terms(clone, raws, targets, gt)[1],
                               _loss_terms(loss, raws, targets, gt)[1], rtol=1e-6)
    with pytest.raises(ValueError, match="box_loss.*'giou'"):
        YoloV3Loss(ANCHORS_6, 3, 64, box_loss="giou")
    with pytest.raises(ValueError, match="anchors"):
        YoloV3Loss(ANCHORS_6[:4], 3, 64)


# ---------------------------------------------------------------------------------------
# Anchor-matching losses
# ---------------------------------------------------------------------------------------

def test_focal_loss_matches_reference_and_normalizes_by_positives():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2, 7, 3)).astype(np.float32)
    labels = np.int32([[0, 2, BACKGROUND, IGNORE, BACKGROUND, 1, IGNORE],
                       [BACKGROUND, BACKGROUND, IGNORE, 2, BACKGROUND, BACKGROUND, 0]])
    total, positives = 0.0, 0
    for b in range(2):
        for a in range(7):
            if labels[b, a] == IGNORE:
                continue
            positives += labels[b, a] >= 0
            for c in range(3):
                total += _focal(float(labels[b, a] == c), float(logits[b, a, c]))
    value = float(FocalLoss()(labels, logits))
    np.testing.assert_allclose(value, total / positives, rtol=1e-5)
    # gamma 0 and no alpha: plain BCE; from probabilities gives the same value.
    plain = FocalLoss(alpha=-1, gamma=0.0)
    bce = sum(_bce(float(labels[b, a] == c), float(logits[b, a, c]))
              for b in range(2) for a in range(7) for c in range(3) if labels[b, a] != IGNORE)
    np.testing.assert_allclose(float(plain(labels, logits)), bce / positives, rtol=1e-5)
    probs = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(float(FocalLoss(from_logits=False)(labels, probs)), value,
                               rtol=1e-4)
    # No positive anchor at all: normalized by 1, still finite.
    empty = np.full((2, 7), BACKGROUND, np.int32)
    assert np.isfinite(float(FocalLoss()(empty, logits)))


def test_huber_loss_hand_computed():
    y_true = np.float32([[[0.0, 0.0, 0], [1.0, 3.0, 2], [5.0, 5.0, -1], [9, 9, -2]]])
    y_pred = np.float32([[[0.5, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    # positives: 0.5*0.25 = 0.125; |e|=3 -> 1*(3-0.5) = 2.5; total 2.625 over 2 positives.
    np.testing.assert_allclose(float(HuberLoss()(y_true, y_pred)), 2.625 / 2, rtol=1e-6)
    np.testing.assert_allclose(float(HuberLoss(delta=2.0)(y_true, y_pred)),
                               (0.125 + 2 * (3 - 1)) / 2, rtol=1e-6)


def test_masked_bce_and_accuracy():
    y_true = np.float32([[1, 0, -1, 1], [0, -1, -1, 0]])
    logits = np.float32([[2.0, -1.0, 50.0, -0.5], [0.3, 9.0, -9.0, -2.0]])
    valid = [(b, i) for b in range(2) for i in range(4) if y_true[b, i] != -1]
    expected = sum(_bce(y_true[b, i], logits[b, i]) for b, i in valid) / len(valid)
    np.testing.assert_allclose(float(MaskedBinaryCrossentropy()(y_true, logits)), expected,
                               rtol=1e-6)
    metric = MaskedBinaryAccuracy()
    metric.update_state(y_true, logits)
    # valid predictions: 1 ok, 0 ok, 1 wrong (-0.5), 0 wrong (0.3), 0 ok -> 3 / 5
    np.testing.assert_allclose(float(metric.result()), 0.6, rtol=1e-6)
    metric.update_state(np.float32([[1]]), np.float32([[4.0]]))
    np.testing.assert_allclose(float(metric.result()), 4 / 6, rtol=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    clone = MaskedBinaryAccuracy.from_config(metric.get_config())
    assert clone.ignore_label == -1 and clone.from_logits


def test_standalone_losses_config_round_trip():
    for loss in (FocalLoss(alpha=0.5, gamma=1.0), HuberLoss(delta=0.3),
                 MaskedBinaryCrossentropy(ignore_label=-2)):
        clone = type(loss).from_config(loss.get_config())
        assert clone.get_config() == loss.get_config()
