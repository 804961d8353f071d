"""The anchor-head families (RetinaNet, RPN): anchor layout, matching, sampling, losses.

Fast code is compared with slow loop references written here (matching with its ignored
band and force-match, the balanced sampler, the loss normalizations); hand cases check
the zero-positive normalization and that neutral anchors take no part in the RPN loss
nor in its accuracy. Real training through the CLI is in ``test_families_e2e.py``.
"""

import math

import keras
import numpy as np
import pytest

from detkit.assign.layout import (anchor_boxes, generated_anchor_sizes, grid_sizes,
                                  level_anchors)
from detkit.assign.matching import NEUTRAL, AnchorMatchingAssigner, RpnAssigner, compact_rows
from detkit.decode import decode_anchor_outputs
from detkit.encode import IGNORED, NEGATIVE, encode_box_deltas
from detkit.families import get_family
from detkit.losses import MaskedBinaryAccuracy, RetinaNetLoss, RpnLoss

SIZE = 64
STRIDES = (32, 16, 8)


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def small_anchors(per_level):
    """Anchor sizes sorted by area, ``per_level`` per level, for a 64 px input."""
    sides = np.geomspace(6, 48, 3 * per_level)
    ratios = np.resize([0.5, 1.0, 2.0], len(sides))
    sizes = np.stack([sides / np.sqrt(ratios), sides * np.sqrt(ratios)], axis=1)
    return sizes[np.argsort(sizes.prod(axis=1), kind="stable")].astype(np.float32)


def random_batch(seed, batch=3, rows=5, classes=3):
    rng = np.random.default_rng(seed)
    boxes = np.zeros((batch, rows, 4), np.float32)
    labels = np.full((batch, rows), -1, np.int32)
    for b in range(batch):
        count = rng.integers(0, rows + 1) if b else rows       # image 0 full
        for r in range(count):
            w, h = rng.uniform(5, 40, 2)
            x, y = rng.uniform(-4, SIZE - w + 4), rng.uniform(-4, SIZE - h + 4)
            boxes[b, r] = [x, y, x + w, y + h]
            labels[b, r] = rng.integers(0, classes)
    return boxes, labels


# ---------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------

def test_anchor_boxes_match_a_loop_in_output_order():
    anchors = small_anchors(3)
    got = anchor_boxes(anchors, grid_sizes(STRIDES, SIZE), SIZE)
    want = []
    for level, stride in enumerate(STRIDES):
        sizes = anchors[(2 - level) * 3:(3 - level) * 3]        # coarsest: the largest
        for row in range(SIZE // stride):
            for col in range(SIZE // stride):
                cx, cy = (col + 0.5) * stride, (row + 0.5) * stride
                for w, h in sizes:
                    want.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    np.testing.assert_allclose(got, np.float32(want), atol=1e-5)
    assert len(got) == (4 + 16 + 64) * 3


def test_level_anchors_and_generated_sizes():
    sizes = generated_anchor_sizes(STRIDES)
    assert sizes.shape == (27, 2)
    areas = sizes.prod(axis=1)
    assert np.all(np.diff(areas) >= -1e-6 * areas[1:])      # equal areas up to float32
    coarsest, middle, finest = level_anchors(sizes, 3)
    np.testing.assert_allclose(np.sqrt(finest.prod(axis=1)),
                               np.repeat([32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)], 3),
                               rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(coarsest.prod(axis=1)).min(), 128, rtol=1e-5)
    np.testing.assert_allclose(sorted((finest[:, 1] / finest[:, 0]).round(4))[:3], 0.5)
    with pytest.raises(ValueError, match="split evenly into 3 levels"):
        level_anchors(sizes[:26], 3)
    for name in ("retinanet", "rpn"):
        anchors, _ = get_family(name).resolve_anchors(None)
        # The packaged files are the generated sizes (one decimal).
        kwargs = {} if name == "retinanet" else {"scales": (1.0,)}
        np.testing.assert_allclose(np.sort(anchors.prod(axis=1)),
                                   np.sort(generated_anchor_sizes(STRIDES, **kwargs)
                                           .prod(axis=1)), rtol=2e-3)


def test_compact_rows_keeps_real_rows_in_order():
    boxes = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    classes = np.int32([[-1, 2, -1, 0], [1, -1, -1, -1]])
    got_boxes, got_classes = compact_rows(boxes, classes)
    np.testing.assert_array_equal(got_classes, [[2, 0], [1, -1]])
    np.testing.assert_array_equal(got_boxes[0], boxes[0, [1, 3]])
    _, empty = compact_rows(boxes, np.full((2, 4), -1))
    assert empty.shape == (2, 1)


# ---------------------------------------------------------------------------------------
# Matching (RetinaNet) against a loop reference
# ---------------------------------------------------------------------------------------

def reference_matching(anchor_xyxy, boxes, classes, pos=0.5, neg=0.4, size=SIZE):
    """Labels and deltas, one anchor and one box at a time."""
    batch = len(boxes)
    labels = np.zeros((batch, len(anchor_xyxy)), np.int64)
    deltas = np.zeros((batch, len(anchor_xyxy), 4), np.float64)
    for b in range(batch):
        valid = [(np.clip(box, 0, size), c) for box, c in zip(boxes[b], classes[b]) if c >= 0]
        best = []
        for anchor in anchor_xyxy:
            ious = [iou(anchor, box) for box, _ in valid]
            best.append((max(ious), int(np.argmax(ious))) if ious else (-1.0, 0))
        matched = []
        for value, index in best:
            matched.append(index if value >= pos else (IGNORED if value >= neg else NEGATIVE))
        for box, _ in valid:                        # force-match each box's best anchor
            ious = [iou(anchor, box) for anchor in anchor_xyxy]
            a = int(np.argmax(ious))
            if ious[a] > 0:
                matched[a] = best[a][1]
        for a, m in enumerate(matched):
            labels[b, a] = valid[m][1] if m >= 0 else m
            if m >= 0:
                box, anchor = valid[m][0], anchor_xyxy[a]
                w, h, wa, ha = box[2] - box[0], box[3] - box[1], anchor[2] - anchor[0], \
                    anchor[3] - anchor[1]
                deltas[b, a] = [((box[1] + box[3]) - (anchor[1] + anchor[3])) / 2 / ha,
                                ((box[0] + box[2]) - (anchor[0] + anchor[2])) / 2 / wa,
                                math.log(h / ha), math.log(w / wa)]
    return labels, deltas


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_equals_the_loop_reference(seed):
    anchors = small_anchors(9)
    assigner = AnchorMatchingAssigner(anchors, SIZE, 3, strides=STRIDES)
    boxes, classes = random_batch(seed)
    y = assigner(boxes, classes)
    labels, deltas = reference_matching(assigner.anchor_boxes, boxes, classes)
    np.testing.assert_array_equal(y["labels"], labels)
    np.testing.assert_allclose(y["deltas"], deltas, atol=2e-5)
    assert {NEGATIVE, IGNORED} <= set(np.unique(labels)) and labels.max() >= 0
    stats = assigner.stats
    assert stats.positives == (labels >= 0).sum() and stats.ignored == (labels == IGNORED).sum()


def test_matching_thresholds_and_force_match_by_hand():
    """One 8x8 anchor per cell of the 8x8 stride-8 grid (others far too big)."""
    anchors = np.float32([[8, 8]] + [[200, 200]] * 2)   # levels 32, 16 get the big ones
    assigner = AnchorMatchingAssigner(anchors, SIZE, 2, strides=STRIDES)
    fine = slice(4 + 16, None)                           # the stride-8 anchors
    # a box exactly on cell (row 1, col 2): IoU 1 there, 0 elsewhere
    y = assigner(np.float32([[[16, 8, 24, 16]]]), np.int32([[1]]))
    labels = y["labels"][0, fine].reshape(8, 8)
    assert labels[1, 2] == 1 and (labels == 1).sum() == 1
    # shifted by 2 px: IoU 6*8/(2*64-48) = 0.6 with cell (1, 2), 2*8/(128-16) = 0.14 with
    # (1, 3): a positive and a negative
    y = assigner(np.float32([[[18, 8, 26, 16]]]), np.int32([[0]]))
    labels = y["labels"][0, fine].reshape(8, 8)
    assert labels[1, 2] == 0 and labels[1, 3] == NEGATIVE
    # shifted by half a cell: IoU 1/3 with both (1, 2) and (1, 3), below 0.4: negatives,
    # but force-match makes the box's best anchor (the first of the tie) positive.
    y = assigner(np.float32([[[20, 8, 28, 16]]]), np.int32([[1]]))
    labels = y["labels"][0, fine].reshape(8, 8)
    assert labels[1, 2] == 1 and labels[1, 3] == NEGATIVE
    assert assigner.stats.forced == 1
    # with neg_iou 0.2, a 4 px box in cell (3, 4) has IoU 0.25: in the ignored band, and
    # force-matched (its best anchor)
    with_band = AnchorMatchingAssigner(anchors, SIZE, 2, strides=STRIDES, pos_iou=0.5,
                                       neg_iou=0.2)
    y = with_band(np.float32([[[16, 8, 24, 16], [34, 26, 38, 30]]]), np.int32([[0, 1]]))
    labels = y["labels"][0, fine].reshape(8, 8)
    assert labels[1, 2] == 0 and labels[3, 4] == 1


def test_matching_without_boxes_is_all_negative():
    assigner = AnchorMatchingAssigner(small_anchors(9), SIZE, 3, strides=STRIDES)
    y = assigner(np.zeros((2, 3, 4), np.float32), np.full((2, 3), -1, np.int32))
    assert np.all(y["labels"] == NEGATIVE) and np.all(y["deltas"] == 0)


# ---------------------------------------------------------------------------------------
# RPN sampling
# ---------------------------------------------------------------------------------------

def test_rpn_sample_is_balanced_and_neutral_is_exactly_the_rest():
    anchors = small_anchors(3)
    boxes, classes = random_batch(4, batch=4, rows=6)
    unsampled = AnchorMatchingAssigner(anchors, SIZE, 3, strides=STRIDES, pos_iou=0.7,
                                       neg_iou=0.3)(boxes, classes)["labels"]
    rpn = RpnAssigner(anchors, SIZE, 3, strides=STRIDES, sample_anchors=64,
                      positive_fraction=0.25, seed=3)
    y = rpn(boxes, classes)
    objectness = y["objectness"]
    assert set(np.unique(objectness)) <= {1.0, 0.0, NEUTRAL}
    for b in range(len(boxes)):
        pos, neg = unsampled[b] >= 0, unsampled[b] == NEGATIVE
        n_pos = min(pos.sum(), 16)
        n_neg = min(neg.sum(), 64 - n_pos)
        assert (objectness[b] == 1).sum() == n_pos
        assert (objectness[b] == 0).sum() == n_neg
        assert np.all(pos[objectness[b] == 1]) and np.all(neg[objectness[b] == 0])
        # deltas only where a sampled positive is
        assert np.all(y["deltas"][b][objectness[b] != 1] == 0)
    again = RpnAssigner(anchors, SIZE, 3, strides=STRIDES, sample_anchors=64,
                        positive_fraction=0.25, seed=3)(boxes, classes)
    np.testing.assert_array_equal(again["objectness"], objectness)


# ---------------------------------------------------------------------------------------
# Losses against loop references
# ---------------------------------------------------------------------------------------

def split_outputs(flat, grids, per_anchor):
    """``(B, N, V)`` -> per-level ``(B, H, W, A, V)`` (coarsest first)."""
    outputs, start = [], 0
    for height, width in grids:
        count = height * width * per_anchor
        outputs.append(flat[:, start:start + count].reshape(
            len(flat), height, width, per_anchor, flat.shape[-1]))
        start += count
    return outputs


def reference_retinanet(flat, labels, deltas, num_classes, alpha=0.25, gamma=2.0,
                        smoothing=0.0, delta=0.1, box_weight=50.0):
    batch, n, _ = flat.shape
    num_pos = (labels >= 0).sum()
    cls, box = np.zeros(batch), np.zeros(batch)
    for b in range(batch):
        for a in range(n):
            if labels[b, a] == IGNORED:
                continue
            for k in range(num_classes):
                z = 1.0 if labels[b, a] == k else 0.0
                z = z * (1 - smoothing) + 0.5 * smoothing
                x = float(flat[b, a, 4 + k])
                p = sigmoid(x)
                p_t = z * p + (1 - z) * (1 - p)
                a_t = z * alpha + (1 - z) * (1 - alpha)
                bce = -(z * math.log(p) + (1 - z) * math.log(1 - p))
                cls[b] += a_t * (1 - p_t) ** gamma * bce
            if labels[b, a] >= 0:
                for d in range(4):
                    e = abs(float(flat[b, a, d]) - float(deltas[b, a, d]))
                    box[b] += 0.5 * e * e if e <= delta else delta * (e - delta / 2)
    return {"cls": cls * batch / (num_pos + 1), "box": box_weight * box * batch / (num_pos + 1)}


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "focal_alpha": 0.4,
                                          "focal_gamma": 1.5, "huber_delta": 0.5,
                                          "box_weight": 2.0}])
def test_retinanet_loss_equals_the_loop_reference(options):
    anchors = small_anchors(9)
    assigner = AnchorMatchingAssigner(anchors, SIZE, 3, strides=STRIDES)
    boxes, classes = random_batch(5, batch=2)
    y = assigner(boxes, classes)
    rng = np.random.default_rng(0)
    flat = rng.normal(0, 1, (2, len(assigner.anchor_boxes), 4 + 3)).astype(np.float32)
    outputs = split_outputs(flat, grid_sizes(STRIDES, SIZE), 9)
    loss = RetinaNetLoss(anchors, 3, SIZE, **options)
    got = {k: keras.ops.convert_to_numpy(v) for k, v in loss.terms(y, outputs).items()}
    ref = reference_retinanet(flat, y["labels"], y["deltas"], 3,
                              alpha=options.get("focal_alpha", 0.25),
                              gamma=options.get("focal_gamma", 2.0),
                              smoothing=options.get("label_smoothing", 0.0),
                              delta=options.get("huber_delta", 0.1),
                              box_weight=options.get("box_weight", 50.0))
    for name in ("cls", "box"):
        np.testing.assert_allclose(got[name], ref[name], rtol=2e-5, err_msg=name)
    assert (y["labels"] == IGNORED).any()


def test_retinanet_loss_with_zero_positives_is_finite_and_divided_by_one():
    labels = np.full((2, 5), NEGATIVE, np.int32)
    labels[1, 2] = IGNORED
    flat = np.zeros((2, 5, 4 + 2), np.float32)
    flat[..., :4] = 3.0                           # box outputs: no positive, no loss
    loss = RetinaNetLoss(None, 2, SIZE)
    terms = loss.terms({"labels": labels, "deltas": np.zeros((2, 5, 4), np.float32)},
                       [flat.reshape(2, 1, 5, 1, 6)])
    per_anchor = 0.75 * 0.5 ** 2 * math.log(2) * 2       # two classes, p = 0.5, z = 0
    # sum over the batch of 5 + 4 counted anchors, divided by 0 + 1, as a batch mean:
    np.testing.assert_allclose(keras.ops.convert_to_numpy(terms["cls"]),
                               np.array([5, 4]) * per_anchor * 2, rtol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(terms["box"]), 0.0)


def reference_rpn(flat, objectness, deltas, delta=1 / 9, box_weight=1.0):
    batch = len(flat)
    counted = (objectness != NEUTRAL).sum()
    obj, box = np.zeros(batch), np.zeros(batch)
    hits = 0
    for b in range(batch):
        for a in range(flat.shape[1]):
            o = objectness[b, a]
            if o == NEUTRAL:
                continue
            p = sigmoid(float(flat[b, a, 4]))
            obj[b] -= o * math.log(p) + (1 - o) * math.log(1 - p)
            hits += (p > 0.5) == (o == 1)
            if o == 1:
                for d in range(4):
                    e = abs(float(flat[b, a, d]) - float(deltas[b, a, d]))
                    box[b] += 0.5 * e * e if e <= delta else delta * (e - delta / 2)
    positives = (objectness == 1).sum()
    return ({"obj": obj * batch / max(counted, 1),
             "box": box_weight * box * batch / (positives + 1)}, hits / max(counted, 1))


def test_rpn_loss_and_accuracy_equal_the_reference_and_skip_neutral_anchors():
    anchors = small_anchors(3)
    rpn = RpnAssigner(anchors, SIZE, 3, strides=STRIDES, sample_anchors=32, seed=1)
    boxes, classes = random_batch(6, batch=2)
    y = rpn(boxes, classes)
    rng = np.random.default_rng(1)
    flat = rng.normal(0, 2, (2, len(rpn.anchor_boxes), 5)).astype(np.float32)
    grids = grid_sizes(STRIDES, SIZE)
    loss = RpnLoss(anchors, 3, SIZE, box_weight=3.0)
    got = {k: keras.ops.convert_to_numpy(v)
           for k, v in loss.terms(y, split_outputs(flat, grids, 3)).items()}
    ref, accuracy = reference_rpn(flat, y["objectness"], y["deltas"], box_weight=3.0)
    for name in ("obj", "box"):
        np.testing.assert_allclose(got[name], ref[name], rtol=2e-5, err_msg=name)
    (metric,) = loss.make_metrics()
    loss.update_metrics([metric], y, split_outputs(flat, grids, 3))
    np.testing.assert_allclose(float(metric.result()), accuracy, rtol=1e-6)

    # Any change of the outputs at neutral anchors changes neither.
    neutral = y["objectness"] == NEUTRAL
    assert neutral.sum() > 0
    changed = flat.copy()
    changed[neutral] = rng.normal(0, 50, (int(neutral.sum()), 5))
    again = {k: keras.ops.convert_to_numpy(v)
             for k, v in loss.terms(y, split_outputs(changed, grids, 3)).items()}
    for name in ("obj", "box"):
        np.testing.assert_array_equal(again[name], got[name])
    metric.reset_state()
    loss.update_metrics([metric], y, split_outputs(changed, grids, 3))
    np.testing.assert_allclose(float(metric.result()), accuracy, rtol=1e-6)


def test_rpn_loss_without_counted_anchors_is_zero_not_nan():
    y = {"objectness": np.full((2, 6), NEUTRAL, np.float32),
         "deltas": np.zeros((2, 6, 4), np.float32)}
    flat = np.full((2, 1, 6, 1, 5), 7.0, np.float32)
    terms = RpnLoss().terms(y, [flat])
    for value in terms.values():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(value), 0.0)
    metric = MaskedBinaryAccuracy(ignore_label=NEUTRAL)
    metric.update_state(y["objectness"], flat.reshape(2, 6, 5)[..., 4])
    assert float(metric.result()) == 0.0


# ---------------------------------------------------------------------------------------
# Decoding and models
# ---------------------------------------------------------------------------------------

def test_decoder_inverts_the_encoded_deltas():
    anchors = small_anchors(9)
    boxes_xyxy = anchor_boxes(anchors, grid_sizes(STRIDES, SIZE), SIZE)
    rng = np.random.default_rng(2)
    targets = boxes_xyxy + rng.normal(0, 2, boxes_xyxy.shape).astype(np.float32)
    targets[:, 2:] = np.maximum(targets[:, 2:], targets[:, :2] + 1)
    deltas = encode_box_deltas(targets, boxes_xyxy)
    flat = np.concatenate([deltas, np.zeros((len(deltas), 2), np.float32)], axis=1)[None]
    got_boxes, got_scores = decode_anchor_outputs(
        split_outputs(flat, grid_sizes(STRIDES, SIZE), 9), anchors, SIZE)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got_boxes)[0], targets,
                               atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got_scores), 0.5)
    # wild deltas are clamped before exp: finite boxes
    wild, _ = decode_anchor_outputs([np.full((1, 2, 2, 9, 6), 1e4, np.float32)],
                                    anchors[-9:], SIZE)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(wild)))


def test_retinanet_prior_bias_and_shared_subnets():
    model = get_family("retinanet").build(4, 0.125, SIZE, 0.0)
    heads = model.get_layer("heads")
    bias = keras.ops.convert_to_numpy(heads.get_layer("head_out_cls").bias)
    np.testing.assert_allclose(bias, -math.log(0.99 / 0.01), rtol=1e-6)
    np.testing.assert_allclose(sigmoid(bias), 0.01, rtol=1e-5)
    # one conv per subnet position, whatever the number of levels
    names = [layer.name for layer in heads.layers]
    assert names.count("cls_tower1_conv") == 1 and names.count("head_out_box") == 1
    out = model(np.random.default_rng(0).random((1, SIZE, SIZE, 3), np.float32))
    probs = sigmoid(np.concatenate([keras.ops.convert_to_numpy(o)[..., 4:].ravel()
                                    for o in out]))
    assert 0.005 < probs.mean() < 0.02


@pytest.mark.parametrize("name", ["retinanet", "rpn"])
def test_bottleneck_split_all_but_heads_is_refused_clearly(name):
    from detkit.bottleneck_training import split_model
    from detkit.errors import UsageError

    model = get_family(name).build(2, 0.0625, SIZE, 0.0)
    with pytest.raises(UsageError, match="use --split body"):
        split_model(model, "all-but-heads")
    parts = split_model(model, "body")
    assert len(parts.frozen.outputs) == 3


# ---------------------------------------------------------------------------------------
# Distillation (RetinaNet <-> RetinaNet)
# ---------------------------------------------------------------------------------------

def test_anchor_distillation_loss_equals_the_reference_and_is_zero_on_itself():
    from detkit.distill.loss import AnchorDistillationLoss

    rng = np.random.default_rng(3)
    teacher = [rng.normal(0, 2, (2, g, g, 3, 4 + 2)).astype(np.float32) for g in (1, 2)]
    student = [rng.normal(0, 2, t.shape).astype(np.float32) for t in teacher]
    loss = AnchorDistillationLoss(temperature=2.0)
    got = {k: keras.ops.convert_to_numpy(v) for k, v in loss.terms(teacher, student).items()}
    cls, box, soft = np.zeros(2), np.zeros(2), 0.0
    for u_level, t_level in zip(teacher, student):
        for b in range(2):
            for u, t in zip(u_level[b].reshape(-1, 6), t_level[b].reshape(-1, 6)):
                q = sigmoid(u[4:].astype(np.float64)).max()
                soft += q
                box[b] += q * 0.5 * np.sum((t[:4] - u[:4]) ** 2)
                for uk, tk in zip(u[4:] / 2.0, t[4:] / 2.0):
                    p, s = sigmoid(uk), sigmoid(tk)
                    cls[b] += 4.0 * (p * math.log(p / s) + (1 - p) * math.log((1 - p) / (1 - s)))
    scale = 2 / (soft + 1)
    np.testing.assert_allclose(got["d_cls"], cls * scale, rtol=1e-4)
    np.testing.assert_allclose(got["d_box"], box * scale, rtol=1e-5)
    same = loss.terms(teacher, teacher)
    for value in same.values():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(value), 0.0, atol=1e-5)


def test_retinanet_scales_pair_by_level_anchors():
    from detkit.distill.scales import match_strides

    anchors = small_anchors(9)
    pairs, skipped = match_strides(anchors, anchors, STRIDES, STRIDES)
    assert [(p.stride, p.teacher_index, p.student_index) for p in pairs] == \
        [(32, 0, 0), (16, 1, 1), (8, 2, 2)] and not skipped
    other = anchors.copy()
    other[:9] *= 1.1                                     # the stride-8 level differs
    pairs, skipped = match_strides(anchors, other, STRIDES, STRIDES)
    assert [p.stride for p in pairs] == [32, 16] and "stride 8: other anchors" in skipped[0]


@pytest.mark.parametrize("backbone", [None, "darknet-small", "darknet-tiny", "mobilenetv2"])
def test_pyramid_families_take_a_registry_backbone(backbone):
    """retinanet / rpn sit on their own small Darknet body or on a ``--backbone`` one."""
    if backbone not in (None, "darknet-small"):
        pytest.importorskip("detkit.models.backbones")
    from detkit.models.retinanet import build_retinanet
    from detkit.models.rpn import build_rpn

    for build, values in ((build_retinanet, 4 + 3), (build_rpn, 5)):
        model = build(3, 0.25, SIZE, 0.0, backbone=backbone)
        assert [tuple(o.shape[1:]) for o in model.outputs] == [
            (2, 2, 9 if values == 7 else 3, values), (4, 4, 9 if values == 7 else 3, values),
            (8, 8, 9 if values == 7 else 3, values)]
        assert len(model.get_layer("body").outputs) == 3
