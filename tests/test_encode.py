"""Encoders of detkit.encode against hand-computed cases and slow loop references."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.anchors import anchor_masks, default_anchors_path, load_anchors
from detkit.boxes import iou_matrix
from detkit.cli import app
from detkit.commands import encode_labels
from detkit.encode import (IGNORED, NEGATIVE, EncodeStats, Yolov3Encoder,
                           encode_anchor_targets, encode_box_deltas,
                           encode_yolov2, encode_yolov3, grid_anchors, sample_balanced)
from detkit.errors import DataError, UsageError

ANCHORS9 = load_anchors(default_anchors_path("yolov3"))
ANCHORS6 = load_anchors(default_anchors_path("yolov3-tiny"))
SIZE = 416


def random_batch(rng, batch=4, rows=12, size=SIZE, pad=3, min_wh=2.0, max_wh=300.0):
    """``(B, M, 4)`` boxes inside the input, the last ``pad`` rows padded (class -1)."""
    xy = rng.uniform(0, size - min_wh, (batch, rows, 2))
    wh = rng.uniform(min_wh, max_wh, (batch, rows, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, size)], -1).astype(np.float32)
    classes = rng.integers(0, 5, (batch, rows)).astype(np.int32)
    if pad:
        classes[:, -pad:] = -1
        boxes[:, -pad:] = 0
    return boxes, classes


def centered_iou(wh, anchor):
    inter = min(wh[0], anchor[0]) * min(wh[1], anchor[1])
    return inter / (wh[0] * wh[1] + anchor[0] * anchor[1] - inter)


def reference_yolov3(boxes, classes, anchors, size, multi=None):
    """Loop version of keras-yolo3's preprocess_true_boxes with its bugs fixed: exact
    centers, the edge cell kept inside the grid, larger IoU wins a shared slot."""
    masks = anchor_masks(len(anchors))
    grids = [size // (32 // 2 ** level) for level in range(len(masks))]
    out = [np.zeros((len(boxes), g, g, 3, 6), np.float32) for g in grids]
    for dense in out:
        dense[..., 5] = -1
    best_iou = [np.full(d.shape[:4], -1.0) for d in out]
    for b in range(len(boxes)):
        for t in range(boxes.shape[1]):
            x1, y1, x2, y2 = [float(v) for v in boxes[b, t]]
            w, h = x2 - x1, y2 - y1
            if classes[b, t] < 0 or w <= 0 or h <= 0:
                continue
            norm = np.float32([(x1 + x2) / 2 / size, (y1 + y2) / 2 / size, w / size,
                               h / size])
            ious = [centered_iou((w, h), a) for a in anchors]
            best = int(np.argmax(ious))
            chosen = [n for n in range(len(anchors))
                      if n == best or (multi is not None and ious[n] > multi)]
            for n in chosen:
                level = next(lv for lv, mask in enumerate(masks) if n in mask)
                g = grids[level]
                i = min(int(np.floor((x1 + x2) / 2 * g / size)), g - 1)
                j = min(int(np.floor((y1 + y2) / 2 * g / size)), g - 1)
                k = masks[level].index(n)
                if ious[n] > best_iou[level][b, j, i, k]:
                    best_iou[level][b, j, i, k] = ious[n]
                    out[level][b, j, i, k] = [*norm, 1.0, classes[b, t]]
    return out


@pytest.mark.parametrize("anchors", [ANCHORS9, ANCHORS6], ids=["9", "6"])
@pytest.mark.parametrize("multi", [None, 0.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_yolov3_matches_loop_reference(anchors, multi, seed):
    rng = np.random.default_rng(seed)
    boxes, classes = random_batch(rng, batch=3, rows=40)  # dense enough for collisions
    targets = encode_yolov3(boxes, classes, anchors, SIZE, multi_anchor_iou=multi)
    expected = reference_yolov3(boxes, classes, anchors, SIZE, multi)
    assert len(targets) == len(expected) == len(anchors) // 3
    for got, want in zip(targets, expected):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    filled = sum(int(t[..., 4].sum()) for t in expected)
    assert targets.stats.assignments == filled
    assert targets.stats.per_anchor.sum() == filled


def keras_yolo3_dense(boxes, classes, anchors, size, num_classes):
    """keras-yolo3 preprocess_true_boxes semantics (dense one-hot), loop over boxes."""
    masks = anchor_masks(len(anchors))
    grids = [size // (32 // 2 ** level) for level in range(len(masks))]
    y_true = [np.zeros((len(boxes), g, g, 3, 5 + num_classes), np.float32) for g in grids]
    for b in range(len(boxes)):
        for t in range(boxes.shape[1]):
            if classes[b, t] < 0:
                continue
            x1, y1, x2, y2 = boxes[b, t]
            wh = np.array([x2 - x1, y2 - y1])
            xywh = np.float32([(x1 + x2) / 2, (y1 + y2) / 2, *wh]) / np.float32(size)
            n = int(np.argmax([centered_iou(wh, a) for a in anchors]))
            for level, mask in enumerate(masks):
                if n in mask:
                    i = int(np.floor(np.float64(xywh[0]) * np.int32(grids[level])))
                    j = int(np.floor(np.float64(xywh[1]) * np.int32(grids[level])))
                    k = mask.index(n)
                    y_true[level][b, j, i, k, 0:4] = xywh
                    y_true[level][b, j, i, k, 4] = 1
                    y_true[level][b, j, i, k, 5 + classes[b, t]] = 1
    return y_true


def test_yolov3_equals_keras_yolo3_one_hot_without_collisions():
    rng = np.random.default_rng(3)
    num_classes = 5
    # Few, spread-out boxes with even integer coordinate sums (keras-yolo3's // 2 is exact).
    boxes, classes = random_batch(rng, batch=6, rows=4, pad=1)
    boxes = np.round(boxes / 2) * 2
    # keras-yolo3 floors the float32 normalized centre, which can fall a hair short of a
    # cell border that the exact centre lies on: keep centres off the stride-8 borders.
    on_border = ((boxes[..., 0] + boxes[..., 2]) / 2) % 8 == 0
    boxes[..., [0, 2]] += np.where(on_border, 2, 0)[..., None]
    on_border = ((boxes[..., 1] + boxes[..., 3]) / 2) % 8 == 0
    boxes[..., [1, 3]] += np.where(on_border, 2, 0)[..., None]
    boxes = np.minimum(boxes, SIZE)
    targets = encode_yolov3(boxes, classes, ANCHORS9, SIZE)
    assert targets.stats.collisions == 0
    for compact, dense in zip(targets, keras_yolo3_dense(boxes, classes, ANCHORS9, SIZE,
                                                         num_classes)):
        present = compact[..., 4] > 0
        one_hot = np.zeros(compact.shape[:4] + (num_classes,), np.float32)
        one_hot[present, compact[present, 5].astype(int)] = 1
        np.testing.assert_array_equal(compact[..., :5], dense[..., :5])
        np.testing.assert_array_equal(one_hot, dense[..., 5:])


def test_yolov3_hand_computed_box():
    # A 100x80 box centred at (208, 104): best anchor 116x90 is index 6 -> scale 0 slot 0.
    boxes = np.float32([[[158, 64, 258, 144]]])
    targets = encode_yolov3(boxes, np.int32([[2]]), ANCHORS9, SIZE)
    coarse = targets[0]
    assert coarse.shape == (1, 13, 13, 3, 6)
    # cell: col = floor(0.5 * 13) = 6, row = floor(0.25 * 13) = 3
    np.testing.assert_allclose(coarse[0, 3, 6, 0], [0.5, 0.25, 100 / 416, 80 / 416, 1, 2],
                               rtol=1e-6)
    assert coarse[..., 4].sum() == 1 and targets[1][..., 4].sum() == 0
    assert np.all(targets[2][..., 5] == -1)
    assert targets.stats.per_anchor.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0]


def test_yolov3_edge_boxes_land_in_last_cell():
    boxes = np.float32([[[400, 400, 416, 416], [0, 0, 8, 8], [416, 0, 416, 5]]])
    # the third box has zero width: degenerate; a box reaching the edge exactly:
    boxes[0, 0] = [396, 400, 416, 416]
    targets = encode_yolov3(boxes, np.int32([[0, 1, 0]]), ANCHORS9, SIZE)
    fine = targets[2]   # small boxes -> stride 8, 52x52
    assert fine[0, 51, 50:, :, 4].sum() == 1
    assert fine[0, 0, 0, :, 4].sum() == 1
    assert targets.stats.degenerate == 1 and targets.stats.assigned == 2
    # a box whose centre is exactly on the right/bottom edge (a line box clipped later)
    edge = encode_yolov3(np.float32([[[400, 400, 452, 452]]]), np.int32([[0]]), ANCHORS9,
                         SIZE)
    assert edge.stats.clipped == 1
    a = edge.assignment
    # clipped to 400..416: centre 408 = 51 * 8, the last cell of the 52 grid (stride 8)
    assert a.scale[0] == 2 and a.row[0] == a.col[0] == 51
    np.testing.assert_allclose(a.xywh[0], [408 / 416, 408 / 416, 16 / 416, 16 / 416],
                               rtol=1e-6)


def test_yolov3_centre_on_cell_border_takes_the_cell_it_starts():
    # centre (408, 104): 408 / 8 = 51 and 104 / 8 = 13 exactly, although the float32
    # normalized values 408/416 and 104/416 times 52 fall a hair short in float32.
    targets = encode_yolov3(np.float32([[[400, 96, 416, 112]]]), np.int32([[0]]), ANCHORS9,
                            SIZE)
    a = targets.assignment
    assert (a.scale[0], a.row[0], a.col[0]) == (2, 13, 51)


def test_yolov3_center_on_right_edge_is_in_range():
    # centre x == 416 exactly only for a zero-width box; use a box whose float center
    # normalizes to 1.0 after clipping rounding: [416 - tiny, 416]
    boxes = np.float32([[[415.99, 100, 416, 140]]])
    targets = encode_yolov3(boxes, np.int32([[0]]), ANCHORS9, SIZE)
    a = targets.assignment
    assert 0 <= a.col[0] < a.grid_sizes[a.scale[0]]
    assert np.all(np.isfinite(targets[a.scale[0]]))


def test_yolov3_degenerate_boxes_never_nan():
    boxes = np.float32([[[10, 10, 10, 50], [5, 5, 1, 1], [np.nan, 0, 4, 4],
                         [0, 0, np.inf, 9], [20, 20, 60, 60]]])
    classes = np.int32([[0, 0, 0, 0, 1]])
    targets = encode_yolov3(boxes, classes, ANCHORS9, SIZE)
    for t in targets:
        assert np.all(np.isfinite(t))
    assert targets.stats.degenerate == 4
    assert targets.stats.assigned == 1
    assert targets.stats.dropped == {"degenerate (zero size or non-finite)": 4}


def test_yolov3_collision_larger_iou_wins_and_is_counted():
    # Two boxes in the same cell whose best anchor is 116x90: the one closer to the
    # anchor shape wins; the other is lost and counted.
    close = [158, 64, 274, 154]     # 116x90: IoU 1
    far = [160, 66, 260, 150]       # 100x84
    boxes = np.float32([[far, close]])
    targets = encode_yolov3(boxes, np.int32([[1, 3]]), ANCHORS9, SIZE)
    assert targets.stats.collisions == 1 and targets.stats.lost == 1
    assert targets.stats.assigned == 1
    slot = targets[0][0][targets[0][0][..., 4] > 0]
    assert slot.shape == (1, 6) and slot[0, 5] == 3
    assert targets.stats.dropped == {"lost every slot to a larger-IoU box": 1}


def test_yolov3_tie_goes_to_lower_box_index():
    box = [100, 100, 150, 150]
    targets = encode_yolov3(np.float32([[box, box]]), np.int32([[4, 2]]), ANCHORS9, SIZE)
    assert targets.assignment.box.tolist() == [0]
    assert targets.assignment.cls.tolist() == [4]


def test_yolov3_every_valid_box_assigned_without_collisions():
    rng = np.random.default_rng(7)
    for _ in range(5):
        boxes, classes = random_batch(rng, batch=8, rows=5, pad=2)
        targets = encode_yolov3(boxes, classes, ANCHORS9, SIZE)
        s = targets.stats
        assert s.boxes == 8 * 3 and s.padding == 8 * 2
        assert s.assigned + s.lost == s.boxes
        if s.collisions == 0:
            assert s.assigned == s.boxes
        a = targets.assignment
        for key in ("row", "col"):
            grid = np.asarray(a.grid_sizes)[a.scale]
            assert np.all((getattr(a, key) >= 0) & (getattr(a, key) < grid))


def test_multi_anchor_assigns_extra_anchors():
    box = np.float32([[[100, 100, 216, 190]]])            # 116x90 = anchor 6 exactly
    single = encode_yolov3(box, np.int32([[0]]), ANCHORS9, SIZE)
    multi = encode_yolov3(box, np.int32([[0]]), ANCHORS9, SIZE, multi_anchor_iou=0.2)
    assert single.stats.assignments == 1
    wh_ious = [centered_iou((116, 90), a) for a in ANCHORS9]
    assert multi.stats.assignments == 1 + sum(i > 0.2 for i in wh_ious[:6] + wh_ious[7:])
    assert multi.stats.assigned == 1


def test_num_classes_drops_bad_class():
    boxes = np.float32([[[0, 0, 20, 20], [30, 30, 90, 90]]])
    targets = encode_yolov3(boxes, np.int32([[7, 1]]), ANCHORS9, SIZE, num_classes=3)
    assert targets.stats.bad_class == 1 and targets.stats.assigned == 1


def test_bad_settings_raise_usage_error():
    boxes, classes = np.zeros((1, 1, 4), np.float32), np.int32([[-1]])
    with pytest.raises(UsageError, match="multiple of 32"):
        encode_yolov3(boxes, classes, ANCHORS9, 400)
    with pytest.raises(UsageError, match="multiple of 3"):
        encode_yolov3(boxes, classes, ANCHORS9[:4], SIZE)
    with pytest.raises(UsageError, match="positive"):
        encode_yolov3(boxes, classes, -ANCHORS9, SIZE)
    with pytest.raises(ValueError, match=r"\(B, M\)"):
        encode_yolov3(np.zeros((2, 3, 4)), np.zeros((2, 4), int), ANCHORS9, SIZE)


def test_empty_batch_and_stats_sum():
    targets = encode_yolov3(np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.int32),
                            ANCHORS9, SIZE)
    assert [t.shape[0] for t in targets] == [2, 2, 2]
    assert all(np.all(t[..., 5] == -1) and np.all(t[..., :5] == 0) for t in targets)
    a = EncodeStats(boxes=2, per_anchor=np.array([1, 0, 1]))
    b = EncodeStats(boxes=3, collisions=1, per_anchor=np.array([0, 2, 0, 5]))
    total = a + b
    assert total.boxes == 5 and total.collisions == 1
    assert total.per_anchor.tolist() == [1, 2, 1, 5]
    assert EncodeStats.from_dict(total.to_dict()).to_dict() == total.to_dict()


def test_encoder_callable_accumulates_stats():
    rng = np.random.default_rng(2)
    encoder = Yolov3Encoder(ANCHORS6, 320)
    boxes, classes = random_batch(rng, batch=2, rows=6, size=320, pad=1)
    out = encoder(boxes, classes)
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 10, 10, 3, 6),
                                                                 (2, 20, 20, 3, 6)]
    encoder(boxes, classes)
    assert encoder.stats.boxes == 2 * 2 * 5
    np.testing.assert_array_equal(out[0], encode_yolov3(boxes, classes, ANCHORS6, 320)[0])


# ------------------------------------------------------------------------------ YOLOv2

def reference_yolov2(boxes, classes, anchors, size, stride=32):
    """YAD2K preprocess_true_boxes in a loop (edge cell clipped, larger IoU wins)."""
    grid = size // stride
    k = len(anchors)
    mask = np.zeros((len(boxes), grid, grid, k, 1), np.float32)
    targets = np.zeros((len(boxes), grid, grid, k, 5), np.float32)
    best_seen = np.full((len(boxes), grid, grid, k), -1.0)
    for b in range(len(boxes)):
        for t in range(boxes.shape[1]):
            x1, y1, x2, y2 = [float(v) / stride for v in boxes[b, t]]
            w, h = x2 - x1, y2 - y1
            if classes[b, t] < 0 or w <= 0 or h <= 0:
                continue
            x, y = (x1 + x2) / 2, (y1 + y2) / 2
            i, j = min(int(np.floor(y)), grid - 1), min(int(np.floor(x)), grid - 1)
            ious = [centered_iou((w, h), a) for a in anchors]
            n = int(np.argmax(ious))
            if ious[n] > best_seen[b, i, j, n]:
                best_seen[b, i, j, n] = ious[n]
                mask[b, i, j, n] = 1
                targets[b, i, j, n] = [x - j, y - i, np.log(w / anchors[n][0]),
                                       np.log(h / anchors[n][1]), classes[b, t]]
    return mask, targets


def test_yolov2_matches_loop_reference():
    rng = np.random.default_rng(11)
    anchors = ANCHORS9[::2] / 32.0                    # 5 anchors in grid units
    boxes, classes = random_batch(rng, batch=3, rows=30, pad=4)
    boxes[0, 0] = [380, 380, 416, 416]                 # bottom-right edge
    classes[0, 0] = 1
    got = encode_yolov2(boxes, classes, anchors, SIZE)
    mask, targets = reference_yolov2(boxes, classes, anchors, SIZE)
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_allclose(got.targets, targets, rtol=1e-5, atol=1e-6)
    assert got.stats.assignments == int(mask.sum())
    assert got.stats.assigned + got.stats.lost == got.stats.boxes


def test_yolov2_hand_case_with_negative_log_targets():
    anchors = np.float32([[2.0, 2.0]])                    # 64 px in grid units
    boxes = np.float32([[[80, 40, 112, 56]]])            # 32x16 px -> 1 x 0.5 cells
    got = encode_yolov2(boxes, np.int32([[3]]), anchors, SIZE)
    # centre (96, 48) px = (3, 1.5) cells -> cell (i=1, j=3), offsets (0, 0.5)
    assert got.mask[0, 1, 3, 0, 0] == 1 and got.mask.sum() == 1
    np.testing.assert_allclose(got.targets[0, 1, 3, 0],
                               [0.0, 0.5, np.log(0.5), np.log(0.25), 3], rtol=1e-6)


def test_yolov2_degenerate_boxes_never_nan():
    boxes = np.float32([[[10, 10, 10, 50], [np.inf, 0, 4, 4], [0, 0, 500, 500]]])
    got = encode_yolov2(boxes, np.int32([[0, 0, 1]]), ANCHORS9[:5] / 32, SIZE)
    assert np.all(np.isfinite(got.targets)) and got.mask.sum() == 1
    assert got.stats.degenerate == 2 and got.stats.clipped == 1
    # the clipped box is the whole input: centre (6.5, 6.5) cells
    np.testing.assert_allclose(got.targets[got.mask[..., 0] > 0][0, :2], [0.5, 0.5])


# --------------------------------------------------------------------- anchor matching

def test_batched_iou_matrix_matches_per_image():
    rng = np.random.default_rng(5)
    anchors = grid_anchors(128, 32, [32, 64])
    boxes, _ = random_batch(rng, batch=2, rows=5, size=128, pad=1)
    got = iou_matrix(anchors, boxes)
    for b in range(2):
        np.testing.assert_allclose(got[b], iou_matrix(anchors, boxes[b]), atol=1e-6)


def reference_match(anchors, boxes, classes, pos, neg, force):
    """torchvision-style Matcher in loops (force: each box's best anchor gets that
    anchor's own highest-IoU box)."""
    labels = np.zeros((len(boxes), len(anchors)), np.int64)
    matches = np.zeros_like(labels)
    for b in range(len(boxes)):
        valid = [m for m in range(boxes.shape[1]) if classes[b, m] >= 0 and
                 boxes[b, m, 2] > boxes[b, m, 0] and boxes[b, m, 3] > boxes[b, m, 1]]
        iou = iou_matrix(anchors, boxes[b])
        for a in range(len(anchors)):
            best_m, best = -1, -1.0
            for m in valid:
                if iou[a, m] > best:
                    best_m, best = m, iou[a, m]
            matches[b, a] = best_m if best >= pos else (IGNORED if best >= neg else NEGATIVE)
        if force:
            for m in valid:
                a = int(np.argmax(iou[:, m]))
                if iou[a, m] > 0:
                    matches[b, a] = max(valid, key=lambda v: (iou[a, v], -v))
        labels[b] = [classes[b, m] if m >= 0 else m for m in matches[b]]
    return matches, labels


@pytest.mark.parametrize("force", [False, True])
def test_anchor_matching_matches_loop_reference(force):
    rng = np.random.default_rng(21)
    anchors = grid_anchors(160, 32, [40, 80], ratios=(0.5, 1.0, 2.0))
    boxes, classes = random_batch(rng, batch=3, rows=8, size=160, pad=2, max_wh=120)
    got = encode_anchor_targets(anchors, boxes, classes, pos_iou=0.5, neg_iou=0.4,
                                force_match=force, image_size=(160, 160))
    matches, labels = reference_match(anchors, boxes, classes, 0.5, 0.4, force)
    np.testing.assert_array_equal(got.matches, matches)
    np.testing.assert_array_equal(got.labels, labels)
    positive = got.matches >= 0
    assert got.stats.positives == positive.sum()
    assert np.all(got.deltas[~positive] == 0)
    b, a = np.nonzero(positive)
    np.testing.assert_allclose(
        got.deltas[b, a],
        encode_box_deltas(boxes[b, got.matches[b, a]], anchors[a]), rtol=1e-5, atol=1e-5)
    if force:
        assert got.stats.unmatched == 0 or got.stats.unmatched < got.stats.boxes


def test_box_deltas_hand_case_and_scale_factors():
    anchor = np.float32([0, 0, 10, 20])           # centre (5, 10), 10 x 20
    box = np.float32([2, 4, 22, 14])              # centre (12, 9), 20 x 10
    np.testing.assert_allclose(encode_box_deltas(box, anchor),
                               [-1 / 20, 7 / 10, np.log(0.5), np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(encode_box_deltas(box, anchor, (10, 10, 5, 5)),
                               [-0.5, 7.0, 5 * np.log(0.5), 5 * np.log(2)], rtol=1e-6)


def test_force_match_gives_small_box_an_anchor():
    anchors = np.float32([[0, 0, 64, 64], [64, 0, 128, 64]])
    boxes = np.float32([[[70, 10, 80, 20]]])      # IoU 100 / 4096 with anchor 1
    classes = np.int32([[2]])
    plain = encode_anchor_targets(anchors, boxes, classes, force_match=False)
    forced = encode_anchor_targets(anchors, boxes, classes, force_match=True)
    assert plain.labels.tolist() == [[NEGATIVE, NEGATIVE]] and plain.stats.unmatched == 1
    assert forced.labels.tolist() == [[NEGATIVE, 2]] and forced.stats.forced == 1
    assert forced.stats.unmatched == 0


def test_degenerate_and_padding_never_match_or_nan():
    anchors = grid_anchors(64, 32, [32])
    boxes = np.float32([[[5, 5, 5, 30], [np.nan, 1, 2, 3], [0, 0, 0, 0], [0, 0, 32, 32]]])
    classes = np.int32([[0, 0, -1, 1]])
    got = encode_anchor_targets(anchors, boxes, classes, scale_factors=(10, 10, 5, 5))
    assert np.all(np.isfinite(got.deltas)) and np.all(np.isfinite(got.max_iou))
    assert set(got.matches[got.matches >= 0].tolist()) == {3}
    assert got.stats.degenerate == 2 and got.stats.padding == 1


def test_balanced_sampler_counts():
    rng = np.random.default_rng(0)
    labels = np.full((3, 1000), NEGATIVE, np.int32)
    labels[0, :300] = 1                   # many positives: capped at 128
    labels[1, :10] = 0                    # few positives: negatives fill up to 256
    labels[2, :] = IGNORED
    labels[2, :5] = NEGATIVE
    out = sample_balanced(labels, 256, 0.5, rng)
    assert ((out[0] >= 0).sum(), (out[0] == NEGATIVE).sum()) == (128, 128)
    assert ((out[1] >= 0).sum(), (out[1] == NEGATIVE).sum()) == (10, 246)
    assert ((out[2] >= 0).sum(), (out[2] == NEGATIVE).sum()) == (0, 5)
    kept = out != IGNORED
    np.testing.assert_array_equal(out[kept], labels[kept])   # sampling never relabels
    # the positives kept are a random subset, not the first ones
    assert not np.all(out[0, :128] >= 0)
    targets = encode_anchor_targets(grid_anchors(128, 16, [16, 32]),
                                    *random_batch(rng, batch=2, rows=6, size=128),
                                    num_samples=32, rng=rng)
    assert np.all((targets.labels != IGNORED).sum(axis=1) <= 32)
    assert np.all(targets.deltas[targets.labels == IGNORED] == 0)


def test_anchor_thresholds_checked():
    with pytest.raises(UsageError, match="neg_iou"):
        encode_anchor_targets(np.zeros((1, 4)), np.zeros((1, 1, 4)), np.zeros((1, 1), int),
                              pos_iou=0.3, neg_iou=0.5)


@pytest.mark.parametrize("num_samples", [None, 16])
def test_anchor_targets_of_a_batch_without_box_rows_are_all_negative(num_samples):
    anchors = grid_anchors(64, 16, [16, 32])
    targets = encode_anchor_targets(anchors, np.zeros((2, 0, 4)), np.zeros((2, 0), int),
                                    num_samples=num_samples, rng=np.random.default_rng(0))
    assert targets.labels.shape == (2, len(anchors))
    np.testing.assert_array_equal(targets.matches, targets.labels)
    if num_samples is None:
        assert np.all(targets.labels == NEGATIVE)
    else:
        assert np.all((targets.labels == NEGATIVE).sum(axis=1) == num_samples)
    assert not targets.deltas.any() and targets.stats.positives == 0


# ------------------------------------------------------------ encode-labels without boxes

def yolo_folder(root: Path, labels: str) -> Path:
    """A YOLO folder of one 32x32 image whose label file holds ``labels``."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    image = root / "images" / "train" / "a.png"
    assert cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    (root / "labels" / "train" / "a.txt").write_text(labels)
    return root


@pytest.mark.parametrize("model", ["yolov3", "retinanet"])
def test_encode_labels_refuses_a_dataset_without_boxes(tmp_path, model):
    data, out = yolo_folder(tmp_path / "ye", ""), tmp_path / "ye.npz"
    result = CliRunner().invoke(app, ["encode-labels", str(data), "--out", str(out),
                                      "--model", model])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"error: {data}: the dataset has no boxes to encode (1 image, none with a box): "
        "a wrong label folder or --format?")
    assert not list(tmp_path.glob("ye.npz*"))


def test_encode_labels_names_the_boxes_the_reader_dropped(tmp_path):
    assert cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "train.txt").write_text(f"{tmp_path / 'a.png'} 5,5,5,9,0\n")
    (tmp_path / "classes.txt").write_text("a\n")
    opts = encode_labels.Options(data=tmp_path / "train.txt", out=tmp_path / "l.npz",
                                 classes=tmp_path / "classes.txt")
    with pytest.raises(DataError, match=r"no boxes to encode: the reader dropped 1 box, "
                       r"all it had \(zero area or outside the image, e.g. .*train.txt:1\)"):
        encode_labels.run(opts)
    assert not (tmp_path / "l.npz").exists()
