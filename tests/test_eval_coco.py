"""COCO evaluation: exact agreement with pycocotools, hand-computed cases, helpers."""

import contextlib
import copy
import io

import numpy as np
import pytest

from detkit.errors import DataError, UsageError
from detkit.evaluate import (CocoParams, detections_from_list, evaluate_coco,
                             ground_truth_from_coco)
from detkit.evaluate.coco_accumulate import first_recall_index, segmented_suffix_max
from detkit.evaluate.groups import dense_rank, pairs_in_groups, stable_argsort
from detkit.evaluate.iou import coco_pair_iou

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def make_case(seed, images=24, classes=5, absent=(3,), crowd=0.15, empty=4, det_only=3,
              max_gt=7, max_dets=30, tied=True):
    """COCO ground truth and results with tied scores, crowd regions, empty images, images
    with only detections, a category without ground truth and areas unlike box areas."""
    rng = np.random.default_rng(seed)
    image_list = [{"id": 3 * i + 2, "width": 200, "height": 200, "file_name": f"{i}.jpg"}
                  for i in range(images)]
    rng.shuffle(image_list)                         # file order is not id order
    cats = [{"id": 2 * c + 1, "name": f"c{c}"} for c in range(classes)]
    present = [c for c in range(classes) if c not in absent]
    annotations, dets = [], []
    for index, image in enumerate(image_list):
        count = 0 if index < empty + det_only else int(rng.integers(0, max_gt + 1))
        boxes = []
        for _ in range(count):
            w, h = rng.uniform(2, 120, 2)
            x, y = rng.uniform(0, 150, 2)
            c = int(rng.choice(present))
            area = float(w * h * rng.uniform(0.4, 1.0)) if rng.random() < 0.5 else float(w * h)
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"],
                                "category_id": cats[c]["id"], "bbox": [x, y, w, h],
                                "area": area, "iscrowd": int(rng.random() < crowd)})
            boxes.append((x, y, w, h, c))
        if index < empty:
            continue
        for _ in range(int(rng.integers(0, max_dets + 1))):
            if boxes and rng.random() < 0.7:
                x, y, w, h, c = boxes[int(rng.integers(len(boxes)))]
                j = rng.normal(0, 0.1, 4) * [w, h, w, h]
                box = [x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1)]
                if rng.random() < 0.2:
                    c = int(rng.integers(classes))
                if rng.random() < 0.1:               # exact duplicates tie in IoU too
                    box = [x, y, w, h]
            else:
                box = list(rng.uniform(0, 150, 2)) + list(rng.uniform(2, 120, 2))
                c = int(rng.integers(classes))
            score = float(np.round(rng.random(), 1)) if tied else float(rng.random())
            dets.append({"image_id": image["id"], "category_id": cats[c]["id"],
                         "bbox": [float(v) for v in box], "score": score})
    return {"images": image_list, "annotations": annotations, "categories": cats}, dets


def run_pycocotools(gt, dets, use_cats=True, iou_thrs=None, max_dets=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.useCats = int(use_cats)
        if iou_thrs is not None:
            evaluator.params.iouThrs = np.asarray(iou_thrs)
        if max_dets is not None:
            evaluator.params.maxDets = list(max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def run_detkit(gt, dets, **params):
    ground_truth = ground_truth_from_coco(gt)
    return evaluate_coco(ground_truth, detections_from_list(dets, ground_truth),
                         CocoParams(**params))


def assert_same(ours, ref):
    np.testing.assert_allclose(ours.stats, ref.stats, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_matches_pycocotools(seed):
    gt, dets = make_case(seed, max_dets=120 if seed % 4 == 0 else 30, tied=seed % 2 == 0)
    assert_same(run_detkit(gt, dets), run_pycocotools(gt, dets))


@pytest.mark.parametrize("seed", range(3))
def test_class_agnostic_matches_pycocotools_use_cats_0(seed):
    gt, dets = make_case(seed + 100)
    ours = run_detkit(gt, dets, class_agnostic=True)
    assert_same(ours, run_pycocotools(gt, dets, use_cats=False))
    assert ours.class_names == ["all"]


@pytest.mark.parametrize("thresholds,max_dets", [((0.3, 0.5, 0.75, 0.9), (1, 5, 20)),
                                                 ((0.1, 1.0), (2, 3, 4))])
def test_custom_thresholds_and_max_dets_match_pycocotools(thresholds, max_dets):
    gt, dets = make_case(7, crowd=0.3, max_dets=60)
    ours = run_detkit(gt, dets, iou_thresholds=thresholds, max_dets=max_dets)
    ref = run_pycocotools(gt, dets, iou_thrs=thresholds, max_dets=max_dets)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-12)
    # AP50/AP75 stay defined when the threshold is present and are -1 when it is not.
    assert (ours.stats[1] > -1) == (0.5 in thresholds)
    assert (ours.stats[2] > -1) == (0.75 in thresholds)
    # The AR stats are named by their limits (pycocotools prints maxDets=N beside each).
    names = [f"AR{d}" for d in max_dets]
    assert [ours.stats_dict[name] for name in names] == [float(v) for v in ours.stats[6:9]]
    assert "AR100" not in ours.stats_dict


def test_category_without_ground_truth_is_minus_one():
    gt, dets = make_case(3, absent=(3,))
    ours = run_detkit(gt, dets)
    assert np.all(ours.precision[:, :, 3] == -1) and np.all(ours.recall[:, 3] == -1)
    assert ours.class_ap()[3].tolist() == [-1, -1, -1]
    assert ours.num_gt[0, 3] == 0


def _one_image(gt_boxes, det_boxes, scores, crowd=None):
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box,
                           "area": box[2] * box[3],
                           "iscrowd": int(crowd[i]) if crowd else 0}
                          for i, box in enumerate(gt_boxes)]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": box, "score": s}
            for box, s in zip(det_boxes, scores)]
    return gt, dets


def test_hand_computed_tp_fp_tp():
    """TP, duplicate FP, TP: precision 1 up to recall 0.5, then 2/3; AP by hand."""
    a, b = [10, 10, 20, 20], [50, 50, 20, 20]
    gt, dets = _one_image([a, b], [a, a, b], [0.9, 0.8, 0.7])
    ours = run_detkit(gt, dets)
    curve = ours.precision[0, :, 0, 0, 2]
    np.testing.assert_allclose(curve[:51], 1.0)
    np.testing.assert_allclose(curve[51:], 2 / (3 + np.spacing(1)))
    np.testing.assert_allclose(ours.stats[0], (51 + 50 * 2 / 3) / 101, atol=1e-12)
    np.testing.assert_allclose(ours.stats[8], 1.0)           # AR100: both found
    np.testing.assert_allclose(ours.stats[6], 0.5)           # AR1: one detection kept


def test_crowd_region_absorbs_detections_without_false_positives():
    person, crowd = [0, 0, 10, 10], [40, 40, 50, 50]
    inside = [[45, 45, 10, 10], [60, 60, 10, 10], [42, 70, 8, 8]]   # IoU 1 by det area
    gt, dets = _one_image([person, crowd], [person] + inside, [0.5, 0.9, 0.8, 0.7],
                          crowd=[0, 1])
    ours = run_detkit(gt, dets)
    np.testing.assert_allclose(ours.stats[0], 1.0)            # no FP from the crowd
    assert ours.num_gt[0, 0] == 1
    # Without the crowd flag the three boxes are false positives ahead of the TP.
    gt_plain, _ = _one_image([person, crowd], [], [])
    assert run_detkit(gt_plain, dets).stats[0] < 0.5


def test_pair_iou_is_bit_identical_to_pycocotools():
    rng = np.random.default_rng(0)
    dets = np.round(rng.uniform(0, 50, (300, 4)), 1)
    gts = np.round(rng.uniform(0, 50, (7, 4)), 1)
    crowd = np.array([0, 1, 0, 0, 1, 0, 0], np.uint8)
    ref = mask_utils.iou(dets.tolist(), gts.tolist(), crowd.tolist())
    d_i, g_i = np.meshgrid(np.arange(300), np.arange(7), indexing="ij")
    ours = coco_pair_iou(dets[d_i.ravel()], gts[g_i.ravel()], crowd[g_i.ravel()].astype(bool))
    assert np.array_equal(ours.reshape(300, 7), ref)


def test_stable_argsort_equals_lexsort():
    rng = np.random.default_rng(1)
    keys = (np.round(rng.random(500), 1), rng.integers(0, 4, 500), rng.integers(-3, 3, 500))
    assert np.array_equal(stable_argsort(*keys), np.lexsort(keys))
    huge = (rng.integers(0, 2 ** 40, 50), rng.integers(0, 2 ** 40, 50))
    assert np.array_equal(stable_argsort(*huge), np.lexsort(huge))   # lexsort fallback


def test_dense_rank_and_pairs_in_groups():
    ranks, count = dense_rank(np.array([0.5, 0.1, 0.5, 0.9]))
    assert ranks.tolist() == [1, 0, 1, 2] and count == 3
    i, j = pairs_in_groups(np.array([1, 1, 2, 5]), np.array([0, 1, 1, 1, 5]))
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2),
                                                (1, 3), (3, 4)]


def test_segmented_suffix_max_against_loop():
    rng = np.random.default_rng(2)
    values = np.round(rng.random(200), 2)
    segment = np.sort(rng.integers(0, 9, 200))
    expected = np.array([values[i:][segment[i:] == segment[i]].max() for i in range(200)])
    np.testing.assert_array_equal(segmented_suffix_max(values, segment, 9), expected)


def test_first_recall_index_uses_float_division():
    points = np.linspace(0, 1, 101)
    for n in (1, 3, 7, 10, 49):
        expected = [min(k for k in range(n + 1) if k / n >= p) for p in points]
        assert first_recall_index(n, points).tolist() == expected


def test_detection_errors_name_the_entry():
    gt, dets = make_case(0)
    ground_truth = ground_truth_from_coco(gt, source="gt.json")
    cases = [
        ([{**dets[0], "image_id": 999_999}], "unknown image id 999999"),
        ([{**dets[0], "category_id": 4}], "unknown category id 4"),
        ([dets[0], {k: v for k, v in dets[0].items() if k != "score"}], "detection 2: "
                                                                        "missing 'score'"),
        ([{**dets[0], "bbox": [1, 2, 3]}], "'bbox' must be four finite numbers"),
        ([{**dets[0], "score": float("nan")}], "'score' must be a finite number"),
        (gt, "got a COCO dataset"),
        ({"a": 1}, "expected a COCO results list"),
    ]
    for entries, message in cases:
        with pytest.raises(DataError, match=message) as info:
            detections_from_list(entries, ground_truth, source="dets.json")
        assert "dets.json" in str(info.value)


def test_ground_truth_errors():
    gt, _ = make_case(0)
    with pytest.raises(DataError, match="no images"):
        ground_truth_from_coco({**gt, "images": []})
    bad = copy.deepcopy(gt)
    bad["annotations"][0]["category_id"] = 1000
    with pytest.raises(DataError, match="unknown category id 1000"):
        ground_truth_from_coco(bad)
    with pytest.raises(DataError, match="not a COCO dataset"):
        ground_truth_from_coco([])


def test_class_names_as_category_ids_in_detections():
    gt, dets = make_case(5)
    by_name = [{**d, "category_id": f"c{(d['category_id'] - 1) // 2}"} for d in dets]
    np.testing.assert_array_equal(run_detkit(gt, by_name).stats, run_detkit(gt, dets).stats)


@pytest.mark.parametrize("kwargs,message", [
    ({"iou_thresholds": (0.5, 1.5)}, "IoU thresholds must be in"),
    ({"max_dets": (1, 10)}, "three increasing"),
    ({"max_dets": (10, 1, 100)}, "three increasing"),
])
def test_bad_params_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        CocoParams(**kwargs)


def test_no_detections_gives_zero_not_minus_one():
    gt, _ = make_case(1)
    ours = run_detkit(gt, [])
    present = ours.num_gt[0] > 0
    assert np.all(ours.precision[:, :, present, 0] == 0) and ours.stats[0] == 0
    assert np.all(ours.recall[:, present, 0] == 0)
