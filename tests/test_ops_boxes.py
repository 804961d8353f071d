"""The keras.ops box geometry against the NumPy one (detkit.boxes)."""

import numpy as np
from keras import ops

from detkit.boxes import cxcywh_to_xyxy, iou_matrix
from detkit.ops_boxes import center_size_to_xyxy, interval_overlap, pairwise_iou


def random_boxes(rng, shape):
    xy = rng.uniform(0, 100, shape + (2,))
    return np.concatenate([xy, xy + rng.uniform(0.5, 50, shape + (2,))], axis=-1)


def test_pairwise_iou_matches_numpy_with_empty_boxes():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, (2, 7)), random_boxes(rng, (2, 5))
    b[:, -1] = 0.0                                         # padding rows: empty boxes
    got = ops.convert_to_numpy(pairwise_iou(ops.convert_to_tensor(a, "float32"),
                                            ops.convert_to_tensor(b, "float32")))
    assert got.shape == (2, 7, 5) and np.all(got[:, :, -1] == 0)
    for i in range(2):
        np.testing.assert_allclose(got[i], iou_matrix(a[i], b[i]), rtol=1e-5, atol=1e-6)


def test_interval_overlap_and_corners_hand_cases():
    np.testing.assert_allclose(ops.convert_to_numpy(
        interval_overlap(np.float32([0, 0]), np.float32([4, 4]), np.float32([2, 5]),
                         np.float32([9, 9]))), [2, 0])
    center, size = np.float32([[10, 20]]), np.float32([[4, 6]])
    np.testing.assert_allclose(ops.convert_to_numpy(center_size_to_xyxy(center, size)),
                               cxcywh_to_xyxy(np.concatenate([center, size], axis=-1)))
