"""VOC mAP: against a slow loop port of the devkit's VOCevaldet, and hand-computed cases."""

import numpy as np
import pytest

from detkit.errors import UsageError
from detkit.evaluate import Detections, GroundTruth, evaluate_voc
from detkit.evaluate.iou import voc_pair_iou
from detkit.evaluate.voc import voc_ap


def make_gt(image, category, boxes_xyxy, difficult=None, num_images=None, num_classes=None):
    boxes_xyxy = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    n = len(boxes_xyxy)
    num_images = num_images or int(np.max(image, initial=0)) + 1
    num_classes = num_classes or int(np.max(category, initial=0)) + 1
    return GroundTruth(
        image_ids=np.arange(num_images), category_ids=np.arange(1, num_classes + 1),
        class_names=[f"c{k}" for k in range(num_classes)],
        image=np.asarray(image, np.int64), category=np.asarray(category, np.int64),
        boxes=np.c_[boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]],
        area=np.zeros(n), iscrowd=np.zeros(n, bool),
        difficult=np.zeros(n, bool) if difficult is None else np.asarray(difficult, bool))


def make_dets(image, category, boxes_xyxy, scores):
    boxes_xyxy = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    return Detections(image=np.asarray(image, np.int64), category=np.asarray(category, np.int64),
                      boxes=np.c_[boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]],
                      scores=np.asarray(scores, np.float64))


def reference_voc(gt, dets, iou, use_07):
    """Loop port of VOCevaldet.m (one class at a time, detections by score)."""
    aps = []
    g_xyxy = np.c_[gt.boxes[:, :2], gt.boxes[:, :2] + gt.boxes[:, 2:]]
    d_xyxy = np.c_[dets.boxes[:, :2], dets.boxes[:, :2] + dets.boxes[:, 2:]]
    for k in range(gt.num_classes):
        npos = int(np.sum((gt.category == k) & ~gt.difficult))
        taken = {}
        order = [i for i in np.argsort(-dets.scores, kind="stable") if dets.category[i] == k]
        tp, fp = [], []
        for d in order:
            ovmax, jmax = -np.inf, None
            for j in range(len(gt)):
                if gt.category[j] != k or gt.image[j] != dets.image[d]:
                    continue
                bb, bbgt = d_xyxy[d], g_xyxy[j]
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
                if iw > 0 and ih > 0:
                    ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                          + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            if ovmax >= iou:
                if gt.difficult[jmax]:
                    continue
                if not taken.get(jmax):
                    taken[jmax] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        if npos == 0:
            aps.append(-1.0)
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        if use_07:
            ap = 0.0
            for t in np.arange(0.0, 1.1, 0.1):
                ap += (np.max(prec[rec >= t]) if np.any(rec >= t) else 0.0) / 11
        else:
            mrec, mpre = np.r_[0, rec, 1], np.r_[0, prec, 0]
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = max(mpre[i], mpre[i + 1])
            i = np.flatnonzero(mrec[1:] != mrec[:-1])
            ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
        aps.append(ap)
    return np.array(aps)


def random_case(seed, images=15, classes=4):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 50))
    g_img, g_cat = rng.integers(0, images, n), rng.integers(0, classes - 1, n)
    xy = rng.integers(0, 80, (n, 2)).astype(float)
    g_box = np.c_[xy, xy + rng.integers(3, 40, (n, 2))]
    gt = make_gt(g_img, g_cat, g_box, rng.random(n) < 0.2, images, classes)
    m = int(rng.integers(20, 120))
    src = rng.integers(0, n, m)
    near = rng.random(m) < 0.7
    d_box = np.where(near[:, None], g_box[src] + rng.integers(-4, 5, (m, 4)),
                     np.c_[xy[src] + 30, xy[src] + 50])
    d_img = np.where(near, g_img[src], rng.integers(0, images, m))
    d_cat = np.where(rng.random(m) < 0.85, g_cat[src], rng.integers(0, classes, m))
    return gt, make_dets(d_img, d_cat, d_box, np.round(rng.random(m), 1))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("metric", ["voc07", "voc12"])
def test_matches_loop_reference(seed, metric):
    gt, dets = random_case(seed)
    iou = 0.5 if seed % 2 else 0.3
    ours = evaluate_voc(gt, dets, metric=metric, iou=iou)
    expected = reference_voc(gt, dets, iou, metric == "voc07")
    np.testing.assert_allclose(ours.ap, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.mAP, expected[expected > -1].mean(), atol=1e-12)
    assert ours.ap[-1] == -1                     # last class never has ground truth


def test_plus_one_pixel_iou():
    a = np.array([[0.0, 0, 9, 9]])
    np.testing.assert_allclose(voc_pair_iou(a, a), [1.0])
    np.testing.assert_allclose(voc_pair_iou(a, np.array([[5.0, 0, 14, 9]])), [50 / 150])
    assert voc_pair_iou(a, np.array([[10.0, 0, 20, 9]]))[0] == -np.inf   # touching: none


def test_hand_computed_difficult_and_duplicates():
    """Class 0: boxes A and B (B difficult). Detections: on B (ignored), duplicate on A
    after the first one (FP), a miss (FP), on A (TP)."""
    box_a, box_b = [0, 0, 9, 9], [50, 50, 59, 59]
    gt = make_gt([0, 0], [0, 0], [box_a, box_b], difficult=[False, True])
    dets = make_dets([0, 0, 0, 0], [0, 0, 0, 0],
                     [box_b, box_a, [30, 30, 39, 39], box_a], [0.95, 0.9, 0.85, 0.8])
    result = evaluate_voc(gt, dets, metric="voc12")
    # Kept in score order: TP (0.9), FP (0.85), FP (0.8): precision 1 at recall 1.
    np.testing.assert_allclose(result.ap, [1.0])
    assert result.matches.tp.tolist() == [True, False, False]
    # 11-point: the same here.
    np.testing.assert_allclose(evaluate_voc(gt, dets, metric="voc07").ap, [1.0])


def test_best_overlap_is_taken_even_when_already_matched():
    """VOC checks only the best-overlapping box: a second detection whose best box is
    taken is a false positive, even though another box would fit (unlike COCO)."""
    gt = make_gt([0, 0], [0, 0], [[0, 0, 9, 9], [3, 0, 12, 9]])
    dets = make_dets([0, 0], [0, 0], [[0, 0, 9, 9], [1, 0, 10, 9]], [0.9, 0.8])
    result = evaluate_voc(gt, dets, metric="voc12")
    assert result.matches.tp.tolist() == [True, False]
    np.testing.assert_allclose(result.ap, [0.5])


def test_voc_ap_hand_computed():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(voc_ap(recall, precision, False), 0.5 * 1 + 0.5 * 2 / 3)
    # 11-point: recall >= 0..0.5 -> 1 (6 points), 0.6..1.0 -> 2/3 (5 points).
    np.testing.assert_allclose(voc_ap(recall, precision, True), (6 + 5 * 2 / 3) / 11)


def test_bad_options():
    gt, dets = random_case(0)
    with pytest.raises(UsageError, match="unknown VOC metric"):
        evaluate_voc(gt, dets, metric="voc10")
    with pytest.raises(UsageError, match="--iou must be in"):
        evaluate_voc(gt, dets, iou=0)
