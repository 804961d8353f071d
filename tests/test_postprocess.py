"""Decoding, per-class NMS and letterbox mapping, against slow loop-based references."""

import math

import numpy as np
import pytest
from keras import ops

from detkit.anchors import anchor_masks
from detkit.decode import MAX_BOX_TO_INPUT
from detkit.ops_boxes import pairwise_iou
from detkit.postprocess import (PAD_CLASS, decode_outputs, detect, nms_keep, select_detections,
                                to_image_coords)

ANCHORS9 = np.float32([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119],
                       [116, 90], [156, 198], [373, 326]])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _iou(a, b):
    """IoU of two xyxy boxes, float64."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    return inter / union if union > 0 else 0.0


def reference_decode(outputs, anchors, input_size):
    """Loop over scales, rows, columns, anchors: boxes ``(N, 4)``, scores ``(N, C)``."""
    boxes, scores = [], []
    for raw, mask in zip(outputs, anchor_masks(len(anchors))):
        raw = np.asarray(raw, np.float64)[0]
        grid_h, grid_w = raw.shape[:2]
        for row in range(grid_h):
            for col in range(grid_w):
                for a, anchor_index in enumerate(mask):
                    t = raw[row, col, a]
                    cx = (_sigmoid(t[0]) + col) / grid_w * input_size
                    cy = (_sigmoid(t[1]) + row) / grid_h * input_size
                    # Sizes are capped (the decoder's overflow guard).
                    cap = MAX_BOX_TO_INPUT * input_size
                    w = min(math.exp(t[2]) * anchors[anchor_index][0], cap)
                    h = min(math.exp(t[3]) * anchors[anchor_index][1], cap)
                    boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                    scores.append(_sigmoid(t[4]) * _sigmoid(t[5:]))
    return np.array(boxes), np.array(scores)


def reference_detect(boxes, scores, conf, iou, max_det, max_candidates=None,
                     agnostic=False):
    """Greedy per-class NMS, one candidate at a time: list of (box index, class, score)."""
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    if max_candidates is not None:
        order = order[:max_candidates]
    kept = []
    for index in order:
        if flat[index] < conf:
            continue
        box, cls = divmod(int(index), num_classes)
        if any((agnostic or k_cls == cls) and _iou(boxes[k_box], boxes[box]) > iou
               for k_box, k_cls, _ in kept):
            continue
        kept.append((box, cls, float(flat[index])))
    return kept[:max_det]


def _random_outputs(rng, input_size, num_classes, batch=1, scale=2.0):
    outputs = []
    for stride in (32, 16, 8):
        grid = input_size // stride
        outputs.append(rng.normal(0, scale, (batch, grid, grid, 3, 5 + num_classes))
                       .astype(np.float32))
    return outputs


def test_decode_matches_loop_reference():
    rng = np.random.default_rng(0)
    outputs = _random_outputs(rng, 64, 4, scale=1.0)
    boxes, scores = decode_outputs(outputs, ANCHORS9, 64)
    ref_boxes, ref_scores = reference_decode(outputs, ANCHORS9, 64)
    assert tuple(boxes.shape) == (1, 4 * 3 + 16 * 3 + 64 * 3, 4)
    np.testing.assert_allclose(ops.convert_to_numpy(boxes)[0], ref_boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(ops.convert_to_numpy(scores)[0], ref_scores, rtol=1e-5,
                               atol=1e-7)


def test_decode_hand_computed_cell():
    # Zero logits at row 1, column 0 of the stride-32 grid of a 64 px input, anchor 7.
    outputs = [np.full((1, 2, 2, 3, 6), -20.0, np.float32),
               np.full((1, 4, 4, 3, 6), -20.0, np.float32),
               np.full((1, 8, 8, 3, 6), -20.0, np.float32)]
    outputs[0][0, 1, 0, 1, :] = 0.0
    boxes, scores = decode_outputs(outputs, ANCHORS9, 64)
    index = (1 * 2 + 0) * 3 + 1
    cx, cy, (w, h) = 0.5 * 32, 1.5 * 32, ANCHORS9[7]
    np.testing.assert_allclose(ops.convert_to_numpy(boxes)[0, index],
                               [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-3)
    np.testing.assert_allclose(ops.convert_to_numpy(scores)[0, index], [0.25], atol=1e-6)


def test_decode_rejects_wrong_anchor_count():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="6 anchors make 2 scales"):
        decode_outputs(_random_outputs(rng, 64, 2), ANCHORS9[:6], 64)


def test_decode_clamps_huge_logits():
    outputs = [np.full((1, g, g, 3, 6), 1e4, np.float32) for g in (2, 4, 8)]
    boxes, scores = decode_outputs(outputs, ANCHORS9, 64)
    assert np.all(np.isfinite(ops.convert_to_numpy(boxes)))


def test_pairwise_iou_against_reference():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 50, (1, 7, 4)).astype(np.float32)
    a[..., 2:] = a[..., :2] + rng.uniform(0, 20, (1, 7, 2))
    a[0, 0, 2:] = a[0, 0, :2]  # zero area
    got = ops.convert_to_numpy(pairwise_iou(a, a))[0]
    want = np.array([[_iou(p, q) for q in a[0]] for p in a[0]])
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.diag(got)[1:], 1.0, atol=1e-6)
    np.testing.assert_allclose(got, got.T, atol=1e-7)


def test_nms_keep_hand_computed_chain():
    # A suppresses B (IoU 70/130 > 0.5); B would suppress C (same IoU), but B is gone
    # and A-C is only 40/160, so C stays.
    boxes = np.float32([[[0, 0, 10, 10], [0, 3, 10, 13], [0, 6, 10, 16]]])
    classes = np.int32([[0, 0, 0]])
    keep = ops.convert_to_numpy(nms_keep(boxes, classes, np.ones((1, 3), bool), 0.5))
    np.testing.assert_array_equal(keep, [[True, False, True]])
    other_class = ops.convert_to_numpy(nms_keep(boxes, np.int32([[0, 1, 1]]),
                                                np.ones((1, 3), bool), 0.5))
    np.testing.assert_array_equal(other_class, [[True, True, False]])
    invalid_first = ops.convert_to_numpy(nms_keep(boxes, classes,
                                                  np.array([[False, True, True]]), 0.5))
    np.testing.assert_array_equal(invalid_first, [[False, True, False]])


def _detections_as_list(det, image=0):
    n = int(ops.convert_to_numpy(det.valid)[image])
    boxes = ops.convert_to_numpy(det.boxes)[image]
    scores = ops.convert_to_numpy(det.scores)[image]
    classes = ops.convert_to_numpy(det.classes)[image]
    assert np.all(classes[n:] == PAD_CLASS) and np.all(scores[n:] == 0)
    assert np.all(boxes[n:] == 0)
    return boxes[:n], scores[:n], classes[:n]


def _check_against_reference(boxes, scores, det, conf, iou, max_det, **kwargs):
    for image in range(boxes.shape[0]):
        ref = reference_detect(boxes[image], scores[image], conf, iou, max_det, **kwargs)
        got_boxes, got_scores, got_classes = _detections_as_list(det, image)
        assert len(got_scores) == len(ref)
        np.testing.assert_array_equal(got_classes, [c for _, c, _ in ref])
        np.testing.assert_allclose(got_scores, [s for _, _, s in ref], rtol=1e-6)
        np.testing.assert_allclose(got_boxes, boxes[image][[b for b, _, _ in ref]],
                                   rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_detections_matches_greedy_reference(seed):
    rng = np.random.default_rng(seed)
    batch, n, num_classes = 2, 60, 3
    centers = rng.uniform(10, 90, (batch, n, 2))
    sizes = rng.uniform(5, 40, (batch, n, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (batch, n, num_classes)).astype(np.float32)
    det = select_detections(boxes, scores, conf=0.2, iou=0.45, max_det=25)
    _check_against_reference(boxes, scores, det, 0.2, 0.45, 25)


def test_select_detections_with_tied_scores():
    # Scores on a coarse grid (many exact ties); clusters of near-duplicate boxes.
    rng = np.random.default_rng(3)
    n, num_classes = 80, 2
    base = rng.uniform(0, 100, (8, 2))
    centers = base[rng.integers(0, 8, n)] + rng.normal(0, 3, (n, 2))
    boxes = np.concatenate([centers - 10, centers + 10], -1)[None].astype(np.float32)
    scores = (rng.integers(1, 5, (1, n, num_classes)) / 4).astype(np.float32)
    det = select_detections(boxes, scores, conf=0.25, iou=0.5, max_det=30)
    _check_against_reference(boxes, scores, det, 0.25, 0.5, 30)
    agnostic = select_detections(boxes, scores, conf=0.25, iou=0.5, max_det=30,
                                 agnostic=True)
    _check_against_reference(boxes, scores, agnostic, 0.25, 0.5, 30, agnostic=True)


def test_select_detections_candidate_limit_and_padding():
    rng = np.random.default_rng(4)
    boxes = rng.uniform(0, 50, (1, 10, 4)).astype(np.float32)
    boxes[..., 2:] = boxes[..., :2] + 5
    scores = rng.uniform(0.5, 1, (1, 10, 2)).astype(np.float32)
    det = select_detections(boxes, scores, conf=0.0, iou=0.5, max_det=50, max_candidates=7)
    assert tuple(det.boxes.shape) == (1, 50, 4)
    _check_against_reference(boxes, scores, det, 0.0, 0.5, 50, max_candidates=7)


def test_select_detections_nothing_above_threshold():
    boxes = np.zeros((2, 5, 4), np.float32)
    scores = np.full((2, 5, 3), 0.01, np.float32)
    det = select_detections(boxes, scores, conf=0.5, max_det=4)
    np.testing.assert_array_equal(ops.convert_to_numpy(det.valid), [0, 0])
    np.testing.assert_array_equal(ops.convert_to_numpy(det.classes), np.full((2, 4), -1))


def test_detect_end_to_end_matches_reference():
    rng = np.random.default_rng(5)
    outputs = _random_outputs(rng, 64, 3, batch=2, scale=1.5)
    det = detect(outputs, ANCHORS9, 64, conf=0.3, iou=0.45, max_det=20)
    for image in range(2):
        single = [o[image:image + 1] for o in outputs]
        ref_boxes, ref_scores = reference_decode(single, ANCHORS9, 64)
        ref = reference_detect(ref_boxes, ref_scores, 0.3, 0.45, 20)
        got_boxes, got_scores, got_classes = _detections_as_list(det, image)
        assert len(ref) > 3
        np.testing.assert_array_equal(got_classes, [c for _, c, _ in ref])
        np.testing.assert_allclose(got_scores, [s for _, _, s in ref], rtol=1e-5)
        np.testing.assert_allclose(got_boxes, ref_boxes[[b for b, _, _ in ref]], atol=1e-3)


def test_to_image_coords_hand_computed():
    # 200 x 100 image into 64 px: scale 0.32, resized 64 x 32 at offset (0, 16).
    got = to_image_coords(np.float32([[10, 20, 30, 40], [-5, 0, 70, 64]]), 200, 100, 64)
    np.testing.assert_allclose(got, [[31.25, 12.5, 93.75, 75.0], [0, 0, 200, 100]],
                               atol=1e-4)


def test_detection_maps_back_to_original_image():
    # One confident anchor decodes to a known input box; it must land on the right
    # pixels of a 100 x 300 (portrait) image.
    input_size, width, height = 64, 100, 300
    outputs = [np.full((1, g, g, 3, 6), -20.0, np.float32) for g in (2, 4, 8)]
    outputs[1][0, 2, 1, 0, :] = [0.0, 0.0, 0.0, 0.0, 10.0, 10.0]  # anchor 3: 30 x 61
    det = detect(outputs, ANCHORS9, input_size, conf=0.5)
    boxes, scores, classes = _detections_as_list(det)
    cx, cy = 1.5 * 16, 2.5 * 16
    expected_input = np.float32([[cx - 15, cy - 30.5, cx + 15, cy + 30.5]])
    np.testing.assert_allclose(boxes, expected_input, atol=1e-3)
    scale = min(input_size / width, input_size / height)
    new_w = int(width * scale)
    dx = (input_size - new_w) // 2
    sx, sy = new_w / width, int(height * scale) / height
    want = (expected_input - np.float32([dx, 0, dx, 0])) / np.float32([sx, sy, sx, sy])
    want = np.clip(want, 0, [width, height, width, height])
    np.testing.assert_allclose(to_image_coords(boxes, width, height, input_size), want,
                               atol=1e-3)
