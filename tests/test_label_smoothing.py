"""YOLOv3 class label smoothing: the loss against a slow NumPy reference, the option."""

from __future__ import annotations

import math

import numpy as np
import pytest
from keras import ops

from detkit.commands.train import Options
from detkit.errors import UsageError
from detkit.families import get_family
from detkit.losses import YoloV3Loss
from test_losses import ANCHORS_6, _loss_terms, random_case


def reference_class_term(raws, targets, num_classes, smoothing):
    """Batch mean of ``sum over assigned cells of sum_k BCE(z_k, t_c_k)``, one element
    at a time, with ``z = onehot (1 - s) + s / 2``."""
    total = 0.0
    batch = raws[0].shape[0]
    for raw, target in zip(raws, targets):
        for index in np.ndindex(*target.shape[:4]):
            if target[index][4] != 1:
                continue
            for k in range(num_classes):
                z = (1.0 if k == int(target[index][5]) else 0.0) * (1 - smoothing)
                z += smoothing / 2
                x = float(raw[index][5 + k])
                p = 1.0 / (1.0 + math.exp(-x))
                total += -(z * math.log(p) + (1 - z) * math.log(1 - p))
    return total / batch


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_class_term_matches_reference_and_other_terms_do_not_change(smoothing, seed):
    raws, targets, gt = random_case(seed, num_classes=4, boxes_per_image=4)
    smoothed = YoloV3Loss(ANCHORS_6, num_classes=4, input_size=64,
                          label_smoothing=smoothing)
    plain = YoloV3Loss(ANCHORS_6, num_classes=4, input_size=64)
    terms, total = _loss_terms(smoothed, raws, targets, gt)
    plain_terms, _ = _loss_terms(plain, raws, targets, gt)
    np.testing.assert_allclose(terms["cls"],
                               reference_class_term(raws, targets, 4, smoothing),
                               rtol=1e-4)
    for name in ("xy", "wh", "obj"):
        np.testing.assert_allclose(terms[name], plain_terms[name], rtol=1e-6)
    np.testing.assert_allclose(total, sum(terms.values()), rtol=1e-5)


def test_smoothing_penalizes_a_confident_right_answer():
    # A confident, correct class logit costs more with smoothing (its target is < 1).
    raws, targets, gt = random_case(3, num_classes=2, boxes_per_image=2)
    for raw, target in zip(raws, targets):
        cls = np.maximum(target[..., 5], 0).astype(int)
        raw[..., 5:] = np.where(np.eye(2)[cls] > 0, 8.0, -8.0)
    cls_plain = _loss_terms(YoloV3Loss(ANCHORS_6, 2, 64), raws, targets, gt)[0]["cls"]
    cls_smooth = _loss_terms(YoloV3Loss(ANCHORS_6, 2, 64, label_smoothing=0.2), raws,
                             targets, gt)[0]["cls"]
    assert cls_plain < 0.01 < cls_smooth


def test_config_round_trip_and_bounds():
    loss = YoloV3Loss(ANCHORS_6, 3, 64, label_smoothing=0.1)
    clone = YoloV3Loss.from_config(loss.get_config())
    assert clone.label_smoothing == pytest.approx(0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        YoloV3Loss(ANCHORS_6, 3, 64, label_smoothing=1.0)


@pytest.mark.parametrize("model", ["yolov3", "yolov3-tiny", "retinanet"])
def test_label_smoothing_is_a_family_option_of_yolov3(model):
    family = get_family(model)
    assert "label_smoothing" in family.option_names()
    anchors, _ = family.resolve_anchors(None)
    loss = family.make_loss(anchors, 3, 64, label_smoothing=0.1)
    assert loss.label_smoothing == pytest.approx(0.1)
    Options(data="d.txt", model=model, label_smoothing=0.1).check_family_options()


def test_label_smoothing_still_refused_where_no_loss_reads_it():
    with pytest.raises(UsageError, match="--label-smoothing does not apply to --model yolov2"):
        Options(data="d.txt", model="yolov2", label_smoothing=0.1).check_family_options()


def test_label_smoothing_tensor_shapes_unchanged():
    raws, targets, gt = random_case(5)
    loss = YoloV3Loss(ANCHORS_6, 3, 64, label_smoothing=0.1)
    y_true = {"targets": [ops.convert_to_tensor(t) for t in targets],
              "boxes": ops.convert_to_tensor(gt)}
    value = loss.call(y_true, [ops.convert_to_tensor(r) for r in raws])
    assert tuple(value.shape) == (2,)
    assert np.all(np.isfinite(ops.convert_to_numpy(value)))
