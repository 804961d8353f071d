"""keras.ops decoders of detkit.decode: inverses of the encoders, raw-output decoding."""

import keras
import numpy as np
import pytest
from keras import ops

from detkit.anchors import anchor_masks, default_anchors_path, load_anchors
from detkit.decode import (BBOX_XFORM_CLIP, MAX_BOX_TO_INPUT, decode_box_deltas,
                           decode_yolov2_targets, decode_yolov3_outputs,
                           decode_yolov3_targets, yolov3_target_logits)
from detkit.encode import (encode_anchor_targets, encode_box_deltas, encode_yolov2,
                           encode_yolov3, grid_anchors)

ANCHORS9 = load_anchors(default_anchors_path("yolov3"))
SIZE = 416


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def random_batch(rng, batch=3, rows=10, size=SIZE, pad=2, min_wh=1.0, max_wh=300.0):
    xy = rng.uniform(-20, size, (batch, rows, 2))
    wh = rng.uniform(min_wh, max_wh, (batch, rows, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    classes = rng.integers(0, 7, (batch, rows)).astype(np.int32)
    classes[:, rows - pad:] = -1
    return boxes, classes


@pytest.mark.parametrize("multi", [None, 0.25])
def test_yolov3_targets_decode_to_the_clipped_boxes(multi):
    rng = np.random.default_rng(0)
    boxes, classes = random_batch(rng)
    targets = encode_yolov3(boxes, classes, ANCHORS9, SIZE, multi_anchor_iou=multi)
    a = targets.assignment
    clipped = np.clip(boxes, 0, SIZE)
    found = 0
    for level, dense in enumerate(targets):
        decoded, present, cls = (np_(t) for t in decode_yolov3_targets(dense, SIZE))
        assert decoded.shape == dense.shape[:4] + (4,)
        here = a.scale == level
        np.testing.assert_array_equal(np.argwhere(present),
                                      np.argwhere(dense[..., 4] > 0))
        got = decoded[a.image[here], a.row[here], a.col[here], a.slot[here]]
        np.testing.assert_allclose(got, clipped[a.image[here], a.box[here]], atol=1e-3)
        np.testing.assert_array_equal(cls[a.image[here], a.row[here], a.col[here],
                                          a.slot[here]], a.cls[here])
        assert np.all(cls[~present] == -1)
        found += int(present.sum())
    assert found == targets.stats.assignments
    # every box not lost to a collision comes back
    assert targets.stats.assigned == targets.stats.boxes - targets.stats.degenerate - \
        targets.stats.lost


def reference_yolo_head(raw, anchors, size):
    """keras-yolo3 yolo_head, in loops over the grid."""
    b, h, w, k, _ = raw.shape
    xy = np.zeros((b, h, w, k, 2))
    wh = np.zeros((b, h, w, k, 2))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for i in range(h):
        for j in range(w):
            for n in range(k):
                xy[:, i, j, n, 0] = (sig(raw[:, i, j, n, 0]) + j) / w
                xy[:, i, j, n, 1] = (sig(raw[:, i, j, n, 1]) + i) / h
                wh[:, i, j, n] = np.exp(raw[:, i, j, n, 2:4]) * anchors[n] / size
    return xy, wh


def test_decode_yolov3_outputs_matches_loop_reference():
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 1.0, (2, 4, 5, 3, 5 + 3)).astype(np.float32)   # non-square grid
    anchors = ANCHORS9[0:3]                     # sizes stay well below the clamp
    xy, wh, obj, cls = decode_yolov3_outputs(raw, anchors, SIZE)
    ref_xy, ref_wh = reference_yolo_head(raw, anchors, SIZE)
    assert ref_wh.max() < MAX_BOX_TO_INPUT
    np.testing.assert_allclose(np_(xy), ref_xy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(wh), ref_wh, rtol=1e-5)
    np.testing.assert_array_equal(np_(obj), raw[..., 4:5])
    np.testing.assert_array_equal(np_(cls), raw[..., 5:])


def test_decode_yolov3_outputs_clamps_size_logits():
    raw = np.zeros((1, 2, 2, 3, 6), np.float32)
    raw[..., 2:4] = 1e4                       # exp would overflow to inf
    _, wh, _, _ = decode_yolov3_outputs(raw, ANCHORS9[:3], SIZE)
    wh = np_(wh)
    assert np.all(np.isfinite(wh))
    np.testing.assert_allclose(wh, MAX_BOX_TO_INPUT, rtol=1e-5)


def test_target_logits_invert_output_decoding():
    rng = np.random.default_rng(2)
    boxes, classes = random_batch(rng, batch=2, rows=12, min_wh=4)
    targets = encode_yolov3(boxes, classes, ANCHORS9, SIZE)
    for level, mask in enumerate(anchor_masks(9)):
        dense = targets[level]
        t_xy, t_wh = (np_(t) for t in yolov3_target_logits(dense, ANCHORS9[mask], SIZE))
        present = dense[..., 4] > 0
        assert np.all(t_xy[~present] == 0) and np.all(t_wh[~present] == 0)
        assert np.all((t_xy[present] > -1e-5) & (t_xy[present] < 1 + 1e-5))
        eps = 1e-6
        p = np.clip(t_xy, eps, 1 - eps)
        raw = np.zeros(dense.shape[:4] + (6,), np.float32)
        raw[..., 0:2] = np.log(p / (1 - p))
        raw[..., 2:4] = t_wh
        xy, wh, _, _ = decode_yolov3_outputs(raw, ANCHORS9[mask], SIZE)
        np.testing.assert_allclose(np_(xy)[present], dense[present][:, 0:2], atol=2e-5)
        np.testing.assert_allclose(np_(wh)[present], dense[present][:, 2:4], rtol=1e-4)


def test_a_tensor_side_decodes_as_the_int_side():
    """A multi-scale batch passes its side as a scalar tensor: the same boxes, the same
    clamp and the same target logits as the int side (up to float32 rounding)."""
    rng = np.random.default_rng(3)
    raw = rng.normal(0, 1.0, (2, 4, 4, 3, 8)).astype(np.float32)
    raw[0, 0, 0, 0, 2:4] = 1e4                                  # clamped at both sides
    boxes, classes = random_batch(rng, batch=2, rows=6, min_wh=4)
    targets = encode_yolov3(boxes, classes, ANCHORS9, SIZE)[0]
    anchors = ANCHORS9[anchor_masks(9)[0]]
    side = ops.convert_to_tensor(SIZE, "int32")
    for got, want in zip(decode_yolov3_outputs(raw, anchors, side),
                         decode_yolov3_outputs(raw, anchors, SIZE)):
        np.testing.assert_allclose(np_(got), np_(want), rtol=1e-6)
    for got, want in zip(yolov3_target_logits(targets, anchors, side),
                         yolov3_target_logits(targets, anchors, SIZE)):
        np.testing.assert_allclose(np_(got), np_(want), rtol=1e-6, atol=1e-7)


def test_decoders_run_in_a_graph_with_unknown_grid():
    anchors = ANCHORS9[3:6]
    inputs = keras.Input((None, None, 3, 7))
    xy = keras.layers.Lambda(lambda t: decode_yolov3_outputs(t, anchors, 64)[0])(inputs)
    model = keras.Model(inputs, xy)
    raw = np.zeros((1, 2, 3, 3, 7), np.float32)
    out = model.predict(raw, verbose=0)
    np.testing.assert_allclose(out[0, 1, 2, 0], [(0.5 + 2) / 3, (0.5 + 1) / 2], rtol=1e-6)


def test_yolov2_targets_decode_to_the_boxes():
    rng = np.random.default_rng(3)
    anchors = ANCHORS9[::2] / 32.0
    boxes, classes = random_batch(rng, batch=2, rows=15)
    encoded = encode_yolov2(boxes, classes, anchors, SIZE)
    decoded, present, cls = (np_(t) for t in decode_yolov2_targets(encoded.mask,
                                                                   encoded.targets, anchors))
    assert present.sum() == encoded.stats.assignments
    got = decoded[present]
    clipped = np.clip(boxes, 0, SIZE)
    # every decoded box is one of its image's clipped input boxes, with its class
    images = np.argwhere(present)[:, 0]
    for box, image, c in zip(got, images, cls[present]):
        distance = np.abs(clipped[image] - box).max(axis=1)
        match = int(np.argmin(distance))
        assert distance[match] < 1e-3 and classes[image, match] == c
    assert np.all(np.isfinite(decoded))


@pytest.mark.parametrize("scale", [None, (10.0, 10.0, 5.0, 5.0)])
def test_box_deltas_round_trip(scale):
    rng = np.random.default_rng(4)
    anchors = grid_anchors(128, 16, [16, 48])
    xy = rng.uniform(0, 100, (len(anchors), 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 60, (len(anchors), 2))], 1)
    deltas = encode_box_deltas(boxes, anchors, scale)
    np.testing.assert_allclose(np_(decode_box_deltas(deltas, anchors, scale)), boxes,
                               rtol=1e-4, atol=1e-3)
    batched = np.stack([deltas, deltas])
    assert np_(decode_box_deltas(batched, anchors, scale)).shape == (2, len(anchors), 4)


def test_anchor_targets_decode_to_matched_boxes():
    rng = np.random.default_rng(5)
    anchors = grid_anchors(160, 16, [24, 48, 96])
    boxes, classes = random_batch(rng, batch=2, rows=6, size=160, max_wh=100)
    scale = (10.0, 10.0, 5.0, 5.0)
    t = encode_anchor_targets(anchors, boxes, classes, scale_factors=scale,
                              image_size=(160, 160))
    decoded = np_(decode_box_deltas(t.deltas, anchors, scale))
    b, a = np.nonzero(t.matches >= 0)
    assert len(b) > 0
    np.testing.assert_allclose(decoded[b, a], np.clip(boxes, 0, 160)[b, t.matches[b, a]],
                               rtol=1e-4, atol=1e-3)


def test_delta_decoder_clamps_before_exp():
    anchors = np.float32([[0, 0, 16, 16]])
    deltas = np.float32([[[0, 0, 1e4, 1e4]]])
    out = np_(decode_box_deltas(deltas, anchors))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0, 0, 2] - out[0, 0, 0], 16 * np.exp(BBOX_XFORM_CLIP),
                               rtol=1e-5)
