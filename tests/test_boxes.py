"""Box geometry against loop references and hand-computed values."""

import numpy as np
import pytest

from detkit.boxes import (box_area, clip_boxes, cxcywh_to_xyxy, intersection_area,
                          interval_overlap, iou_matrix, wh_iou, xyxy_to_cxcywh)
from detkit.data.letterbox import Letterbox


def iou_loop(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def random_boxes(rng, n):
    xy = rng.uniform(0, 100, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0.5, 50, (n, 2))], axis=1)


def test_iou_hand_case():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 10, 10]])
    np.testing.assert_allclose(iou_matrix(a, b), [[25 / 175, 0.0, 1.0]])


def test_iou_matches_loop_symmetric_and_one_on_self():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 30), random_boxes(rng, 20)
    np.testing.assert_allclose(iou_matrix(a, b), iou_loop(a, b), rtol=1e-12)
    np.testing.assert_allclose(iou_matrix(a, b), iou_matrix(b, a).T)
    np.testing.assert_allclose(np.diag(iou_matrix(a, a)), 1.0)


def test_degenerate_boxes_give_zero_not_nan():
    a = np.array([[1, 1, 1, 1], [0, 0, 0, 5]])
    out = iou_matrix(a, a)
    assert np.isfinite(out).all() and (out == 0).all()


def test_wh_iou_is_centered_iou():
    rng = np.random.default_rng(1)
    wh_a, wh_b = rng.uniform(1, 50, (15, 2)), rng.uniform(1, 50, (9, 2))
    centered = lambda wh: np.concatenate([-wh / 2, wh / 2], axis=1)
    np.testing.assert_allclose(wh_iou(wh_a, wh_b),
                               iou_loop(centered(wh_a), centered(wh_b)), rtol=1e-12)
    np.testing.assert_allclose(wh_iou([[10, 20]], [[20, 10]]), [[100 / 300]])


def test_intersection_hand_cases_and_pixel_offset():
    a = np.array([[0.0, 0, 10, 10], [0, 0, 4, 4]])
    b = np.array([[5.0, 5, 15, 15], [4, 0, 8, 4]])                  # second pair: touching
    np.testing.assert_allclose(intersection_area(a, b), [25, 0])
    np.testing.assert_allclose(intersection_area(a, b, pixel_offset=1), [36, 5])
    np.testing.assert_allclose(interval_overlap(0.0, 3.0, np.array([1.0, 5.0]), 9.0), [2, 0])


def test_iou_matrix_broadcasts_leading_dimensions():
    rng = np.random.default_rng(4)
    anchors, batch = random_boxes(rng, 6), np.stack([random_boxes(rng, 5) for _ in range(3)])
    got = iou_matrix(anchors, batch)
    assert got.shape == (3, 6, 5)
    for b in range(3):
        np.testing.assert_allclose(got[b], iou_loop(anchors, batch[b]), rtol=1e-12)
    np.testing.assert_allclose(iou_matrix([0, 0, 2, 2], [[1, 1, 3, 3]]), [[1 / 7]])


def test_wh_iou_empty_boxes_and_float32():
    np.testing.assert_array_equal(wh_iou([[0, 5], [0, 0]], [[0, 3], [2, 2]]), [[0, 0], [0, 0]])
    rng = np.random.default_rng(6)
    wh_a, wh_b = rng.uniform(1, 50, (4, 2)), rng.uniform(1, 50, (7, 2))
    got = wh_iou(wh_a, wh_b, dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, wh_iou(wh_a, wh_b), rtol=1e-6)


def test_conversions_round_trip_and_area_clip():
    rng = np.random.default_rng(2)
    boxes = random_boxes(rng, 10).astype(np.float32)
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes, atol=1e-4)
    np.testing.assert_allclose(box_area([[0, 0, 2, 3], [5, 5, 4, 4]]), [6, 0])
    np.testing.assert_allclose(clip_boxes([[-5, 2, 120, 50]], 100, 40), [[0, 2, 100, 40]])


@pytest.mark.parametrize("width,height", [(640, 480), (300, 500), (416, 416), (1000, 7)])
def test_letterbox_round_trip_and_placement(width, height):
    box = Letterbox(width, height, 416)
    new_w, new_h = box.new_size
    dx, dy = box.offset
    assert max(new_w, new_h) == 416 and dx + new_w <= 416 and dy + new_h <= 416
    corners = np.array([[0, 0, width, height]], np.float32)
    np.testing.assert_allclose(box.to_input(corners), [[dx, dy, dx + new_w, dy + new_h]],
                               atol=1e-3)
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 5) * np.array([width, height, width, height]) / 150
    boxes = clip_boxes(boxes, width, height)
    np.testing.assert_allclose(box.to_image(box.to_input(boxes)), boxes, atol=1e-2)


def test_letterbox_hand_case():
    box = Letterbox(640, 480, 416)
    assert box.new_size == (416, 312) and box.offset == (0, 52)
    np.testing.assert_allclose(box.to_input([[0, 0, 320, 240]]), [[0, 52, 208, 208]])
