"""Distillation: the loss against a loop reference, stride matching, teacher resolution,
the teacher cache, and ``detkit distill`` end to end (alpha 0 == train)."""

import csv
import json
import math

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.anchors import save_anchors
from detkit.distill import (DistillationLoss, StridePair, binary_kl_with_logits,
                            match_strides, require_pairs)
from detkit.errors import ArtifactMismatchError

ANCHORS = np.float32([[8, 8], [12, 16], [16, 12], [20, 24], [28, 28], [40, 40]])
SIZE = 64
runner = CliRunner()


# ---------------------------------------------------------------------------------------
# Loss: reference implementation (slow loops, plain math)
# ---------------------------------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _kl(u, t):
    """KL(Bernoulli(sigmoid(u)) || Bernoulli(sigmoid(t))), by its definition."""
    p, q = _sigmoid(u), _sigmoid(t)
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def reference_terms(teachers, students, temperature=1.0):
    """Per-image terms by looping over every image, cell, anchor and value."""
    batch = teachers[0].shape[0]
    out = {name: np.zeros(batch) for name in ("d_obj", "d_xy", "d_wh", "d_cls")}
    for teacher, student in zip(teachers, students):
        _, rows, cols, anchors, values = teacher.shape
        for b in range(batch):
            for i in range(rows):
                for j in range(cols):
                    for a in range(anchors):
                        u = teacher[b, i, j, a].astype(float)
                        t = student[b, i, j, a].astype(float)
                        p = _sigmoid(u[4])
                        out["d_obj"][b] += _kl(u[4], t[4])
                        out["d_xy"][b] += p * (_kl(u[0], t[0]) + _kl(u[1], t[1]))
                        out["d_wh"][b] += p * 0.5 * ((t[2] - u[2]) ** 2 + (t[3] - u[3]) ** 2)
                        for k in range(5, values):
                            out["d_cls"][b] += p * temperature ** 2 * _kl(
                                u[k] / temperature, t[k] / temperature)
    return out


def _random_outputs(rng, shapes, scale=2.0):
    return [rng.normal(0, scale, shape).astype(np.float32) for shape in shapes]


def _terms(loss, teachers, students):
    return {k: keras.ops.convert_to_numpy(v) for k, v in loss.terms(teachers, students).items()}


SHAPES = [(2, 2, 2, 3, 7), (2, 4, 4, 3, 7)]


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_loss_matches_loop_reference(temperature):
    rng = np.random.default_rng(0)
    teachers, students = _random_outputs(rng, SHAPES), _random_outputs(rng, SHAPES)
    loss = DistillationLoss(temperature=temperature)
    got = _terms(loss, teachers, students)
    ref = reference_terms(teachers, students, temperature)
    assert list(got) == list(loss.term_names)
    for name in ref:
        assert got[name].shape == (2,)
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, err_msg=name)
    total = keras.ops.convert_to_numpy(loss.call(teachers, students))
    np.testing.assert_allclose(total, sum(ref.values()), rtol=1e-4)
    # Keras' reduction: the batch mean.
    np.testing.assert_allclose(float(loss(teachers, students)), np.mean(sum(ref.values())),
                               rtol=1e-4)


def test_loss_hand_computed_single_cell():
    teacher = np.zeros((1, 1, 1, 1, 6), np.float32)
    student = np.zeros((1, 1, 1, 1, 6), np.float32)
    teacher[..., 4] = 0.0          # p = 0.5
    student[..., 4] = math.log(3)  # q = 0.75
    student[..., 2] = 1.0          # wh error 1 and 0
    got = _terms(DistillationLoss(), [teacher], [student])
    # KL(0.5 || 0.75) = 0.5 log(0.5/0.75) + 0.5 log(0.5/0.25) = 0.5 log(4/3)
    np.testing.assert_allclose(got["d_obj"], [0.5 * math.log(4 / 3)], rtol=1e-6)
    np.testing.assert_allclose(got["d_wh"], [0.5 * 0.5 * 1.0], rtol=1e-6)
    np.testing.assert_allclose(got["d_xy"], [0.0], atol=1e-7)
    np.testing.assert_allclose(got["d_cls"], [0.0], atol=1e-7)


def test_loss_is_zero_when_student_equals_teacher_and_positive_otherwise():
    rng = np.random.default_rng(1)
    teachers = _random_outputs(rng, SHAPES, scale=5.0)
    same = _terms(DistillationLoss(2.0), teachers, teachers)
    for name, value in same.items():
        np.testing.assert_allclose(value, 0.0, atol=1e-5, err_msg=name)
    students = _random_outputs(rng, SHAPES)
    assert all(np.all(v > 0) for v in _terms(DistillationLoss(), teachers, students).values())


def test_box_and_class_terms_are_scaled_by_teacher_objectness():
    rng = np.random.default_rng(2)
    teacher, student = _random_outputs(rng, [(1, 2, 2, 3, 7)] * 2)
    teacher[..., 4] = -30.0                        # the teacher sees background everywhere
    moved = student.copy()
    moved[..., :4] += 5.0
    moved[..., 5:] -= 5.0
    loss = DistillationLoss()
    a, b = _terms(loss, [teacher], [student]), _terms(loss, [teacher], [moved])
    for name in ("d_xy", "d_wh", "d_cls"):
        np.testing.assert_allclose(a[name], 0.0, atol=1e-9)
        np.testing.assert_allclose(b[name], 0.0, atol=1e-9)
    np.testing.assert_allclose(a["d_obj"], b["d_obj"], rtol=1e-6)
    assert a["d_obj"][0] > 1.0   # objectness is distilled everywhere


def test_gradients_reach_only_the_student():
    import tensorflow as tf  # test-only: gradients on the default backend

    rng = np.random.default_rng(3)
    teacher = tf.Variable(rng.normal(0, 2, (1, 2, 2, 3, 7)).astype(np.float32))
    student = tf.Variable(rng.normal(0, 2, (1, 2, 2, 3, 7)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        value = DistillationLoss(temperature=2.0)([teacher], [student])
    assert tape.gradient(value, teacher) is None
    grad = tape.gradient(value, student).numpy()
    u, t = teacher.numpy(), student.numpy()
    p = 1 / (1 + np.exp(-u[..., 4]))
    # d/dt of the objectness KL is sigmoid(t) - sigmoid(u); of the wh term p (t - u);
    # of the class KL at temperature T: p T (sigmoid(t/T) - sigmoid(u/T)).
    np.testing.assert_allclose(grad[..., 4], 1 / (1 + np.exp(-t[..., 4])) - p, atol=1e-5)
    np.testing.assert_allclose(grad[..., 2:4], p[..., None] * (t[..., 2:4] - u[..., 2:4]),
                               rtol=1e-4, atol=1e-6)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(grad[..., 5:], p[..., None] * 2.0 *
                               (sig(t[..., 5:] / 2) - sig(u[..., 5:] / 2)), atol=1e-5)


def test_binary_kl_is_finite_for_extreme_logits():
    u = np.float32([-100, -20, 0, 20, 100])
    t = np.float32([100, 20, 0, -20, -100])
    value = keras.ops.convert_to_numpy(binary_kl_with_logits(u, t))
    assert np.all(np.isfinite(value)) and np.all(value >= -1e-6)
    np.testing.assert_allclose(value[2], 0.0, atol=1e-7)
    # p ~ 0, q ~ 1: KL ~ log(1 / sigmoid(-100)) = 100.
    np.testing.assert_allclose(value[[0, 4]], 100.0, rtol=1e-3)


def test_loss_rejects_mismatched_inputs_and_round_trips_config():
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        DistillationLoss(temperature=0)
    loss = DistillationLoss(temperature=2.5)
    a = np.zeros((1, 2, 2, 3, 7), np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        loss.terms([a], [np.zeros((1, 4, 4, 3, 7), np.float32)])
    with pytest.raises(ValueError, match="one teacher output per student output"):
        loss.terms([a, a], [a])
    clone = DistillationLoss.from_config(loss.get_config())
    assert clone.temperature == 2.5


def _softmax_kl(u, t):
    """KL(softmax(u) || softmax(t)) by its definition, in float64."""
    p = np.exp(u - u.max()) / np.exp(u - u.max()).sum()
    q = np.exp(t - t.max()) / np.exp(t - t.max()).sum()
    return float(np.sum(p * np.log(p / q)))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_yolov2_loss_takes_the_softmax_class_divergence(temperature):
    """YOLOv2's classes are one softmax: the class term is the KL of the two class
    distributions; the objectness and box terms are YOLOv3's."""
    from detkit.distill.loss import SoftmaxDistillationLoss

    rng = np.random.default_rng(4)
    shapes = [(2, 3, 3, 5, 8)]                           # one stride-32 output, 5 anchors
    teachers, students = _random_outputs(rng, shapes), _random_outputs(rng, shapes)
    loss = SoftmaxDistillationLoss(temperature=temperature)
    got = _terms(loss, teachers, students)
    ref = reference_terms(teachers, students, temperature)
    for name in ("d_obj", "d_xy", "d_wh"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, err_msg=name)
    cls = np.zeros(2)
    for b in range(2):
        for u, t in zip(teachers[0][b].reshape(-1, 8).astype(float),
                        students[0][b].reshape(-1, 8).astype(float)):
            cls[b] += _sigmoid(u[4]) * temperature ** 2 * _softmax_kl(
                u[5:] / temperature, t[5:] / temperature)
    np.testing.assert_allclose(got["d_cls"], cls, rtol=1e-4)
    assert not np.allclose(cls, ref["d_cls"])           # not the per-class sigmoid KL
    for value in _terms(loss, teachers, teachers).values():
        np.testing.assert_allclose(value, 0.0, atol=1e-5)
    extreme = np.zeros((1, 1, 1, 1, 8), np.float32)
    extreme[..., 4:] = 1e4
    flipped = -extreme
    assert all(np.all(np.isfinite(v)) for v in _terms(loss, [extreme], [flipped]).values())
    assert SoftmaxDistillationLoss.from_config(loss.get_config()).temperature == temperature


# ---------------------------------------------------------------------------------------
# Stride matching
# ---------------------------------------------------------------------------------------

YOLOV3_ANCHORS = np.float32([[4, 4], [5, 6], [6, 5], [8, 8], [12, 16], [16, 12],
                             [20, 24], [28, 28], [40, 40]])


def test_same_architecture_pairs_every_scale():
    pairs, skipped = match_strides(ANCHORS, ANCHORS)
    assert pairs == [StridePair(32, 0, 0), StridePair(16, 1, 1)] and skipped == []


def test_yolov3_teacher_and_tiny_student_share_the_scales_with_equal_anchors():
    # yolov3's stride-32 and stride-16 anchors are anchors[6:9] and [3:6] of its file,
    # which are the tiny student's [3:6] and [0:3]: both scales pair, stride 8 is skipped.
    pairs, skipped = match_strides(YOLOV3_ANCHORS, ANCHORS)
    assert pairs == [StridePair(32, 0, 0), StridePair(16, 1, 1)]
    assert skipped == ["stride 8: the student has no output at this stride"]
    # A tiny teacher for a yolov3 student: stride 8 has no teacher.
    pairs, skipped = match_strides(ANCHORS, YOLOV3_ANCHORS)
    assert pairs == [StridePair(32, 0, 0), StridePair(16, 1, 1)]
    assert skipped == ["stride 8: the teacher has no output at this stride"]


def test_other_anchors_skip_a_scale_and_none_shared_is_an_error():
    other = ANCHORS.copy()
    other[0] = [9, 9]                                 # changes the stride-16 set only
    pairs, skipped = match_strides(other, ANCHORS)
    assert pairs == [StridePair(32, 0, 0)]
    assert skipped == ["stride 16: other anchors (teacher 9,9 12,16 16,12, "
                       "student 8,8 12,16 16,12)"]
    pairs, skipped = match_strides(ANCHORS * 2, ANCHORS)
    assert pairs == [] and len(skipped) == 2
    with pytest.raises(ArtifactMismatchError, match="share no output stride") as err:
        require_pairs(pairs, skipped)
    assert "stride 32: other anchors" in str(err.value)
    assert "\n" not in str(err.value)                  # one line, the strides joined
    assert str(err.value).endswith("; ".join(skipped) + "): give the student --anchors "
                                   "holding the teacher's anchors at the strides both have "
                                   "(a yolov3 student of a yolov3-tiny teacher: 9 anchors "
                                   "whose 6 largest are the teacher's)")


# ---------------------------------------------------------------------------------------
# Teacher files and the training model (no fit)
# ---------------------------------------------------------------------------------------

TEACHER_WIDTH = 0.125
STUDENT_WIDTH = "0.0625"


@pytest.fixture(scope="module")
def dataset(synth_with_anchors):
    return synth_with_anchors(ANCHORS)


@pytest.fixture(scope="module")
def teacher(dataset, tmp_path_factory):
    """A random yolov3-tiny width 0.125 teacher: a bare weights file (no manifest) and a
    run directory whose manifest names it."""
    from detkit.artifacts import write_json
    from detkit.models import build_model

    root = tmp_path_factory.mktemp("teacher")
    keras.utils.set_random_seed(7)
    model = build_model("yolov3-tiny", 2, TEACHER_WIDTH, SIZE)
    bare = root / "bare.weights.h5"
    model.save_weights(bare)
    run = root / "run"
    run.mkdir()
    model.save_weights(run / "best.weights.h5")
    write_json(run / "manifest.json", {
        "command": "train", "model": "yolov3-tiny", "width": TEACHER_WIDTH,
        "input_size": SIZE, "anchors": ANCHORS.tolist(),
        "class_names": (dataset / "classes.txt").read_text().split()})
    return {"bare": bare, "run": run, "model": model}


def test_resolve_teacher_from_flags_and_from_a_run_directory(teacher, dataset, tmp_path):
    from detkit.distill import resolve_teacher
    from detkit.errors import ArtifactError, UsageError

    spec = resolve_teacher(teacher["run"], student_anchors=ANCHORS)
    assert (spec.model, spec.width, spec.weights) == ("yolov3-tiny", TEACHER_WIDTH,
                                                      teacher["run"] / "best.weights.h5")
    assert spec.class_names == (dataset / "classes.txt").read_text().split()
    np.testing.assert_allclose(spec.anchors, ANCHORS)
    assert spec.anchors_source == "the teacher's manifest"

    spec = resolve_teacher(teacher["bare"], model="yolov3-tiny", width=0.125,
                           student_anchors=ANCHORS)
    assert spec.class_names is None and spec.anchors_source == "the student's anchors"
    # A yolov3 teacher cannot use the tiny student's 6 anchors: its defaults.
    spec = resolve_teacher(teacher["bare"], model="yolov3", student_anchors=ANCHORS)
    assert len(spec.anchors) == 9 and spec.anchors_source.endswith("yolov3_coco.txt")
    with pytest.raises(UsageError, match="--teacher-model is required"):
        resolve_teacher(teacher["bare"], student_anchors=ANCHORS)
    with pytest.raises(ArtifactMismatchError, match="--teacher-model yolov3 but the "
                                                    "teacher's manifest says yolov3-tiny"):
        resolve_teacher(teacher["run"], model="yolov3")
    with pytest.raises(ArtifactMismatchError, match="--teacher-width 0.5 but"):
        resolve_teacher(teacher["run"], width=0.5)
    with pytest.raises(ArtifactError, match="teacher not found"):
        resolve_teacher(tmp_path / "nope.weights.h5", model="yolov3")
    with pytest.raises(ArtifactError, match="no best.weights.h5 or last.weights.h5"):
        resolve_teacher(tmp_path, model="yolov3")


def test_build_teacher_requires_every_layer(teacher):
    from detkit.distill import TeacherSpec, build_teacher

    spec = TeacherSpec(teacher["bare"], "yolov3-tiny", TEACHER_WIDTH, ANCHORS)
    model, report = build_teacher(spec, 2, SIZE)
    assert report.complete and not model.trainable
    images = np.random.default_rng(0).uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    for a, b in zip(model(images, training=False), teacher["model"](images, training=False)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a),
                                   keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-5)
    with pytest.raises(ArtifactMismatchError, match="--teacher-width 0.25.*does not match"):
        build_teacher(TeacherSpec(teacher["bare"], "yolov3-tiny", 0.25, ANCHORS), 2, SIZE)
    with pytest.raises(ArtifactMismatchError, match="3 classes"):
        build_teacher(spec, 3, SIZE)


def _distill_model(teacher, alpha):
    from detkit.distill import (DistillationLoss, DistillationTrainingModel, TeacherSpec,
                                build_teacher)
    from detkit.losses import YoloV3Loss
    from detkit.models import build_model

    keras.utils.set_random_seed(1)
    student = build_model("yolov3-tiny", 2, 0.0625, SIZE)
    frozen, _ = build_teacher(TeacherSpec(teacher["bare"], "yolov3-tiny", TEACHER_WIDTH,
                                          ANCHORS), 2, SIZE)
    pairs, _ = match_strides(ANCHORS, ANCHORS)
    loss = YoloV3Loss(ANCHORS, 2, SIZE)
    model = DistillationTrainingModel(student, loss, frozen, DistillationLoss(2.0), pairs,
                                      alpha)
    return model, loss, frozen


def _batch():
    from detkit.training.targets import YoloTrainingTargets

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.zeros((2, 4, 4), np.float32)
    classes = np.full((2, 4), -1, np.int32)
    boxes[0, :2] = [[4, 4, 30, 40], [30, 20, 60, 60]]
    classes[0, :2] = [0, 1]
    return images, YoloTrainingTargets(ANCHORS, SIZE, 2)(boxes, classes)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_training_model_mixes_ground_truth_and_teacher_terms(teacher, alpha):
    model, loss, frozen = _distill_model(teacher, alpha)
    images, y = _batch()
    y_pred = model(images)
    reg = float(sum(float(keras.ops.sum(l)) for l in model.losses))
    gt = float(loss(y, y_pred))
    distill = float(DistillationLoss(2.0)(list(frozen(images, training=False)), y_pred))
    assert distill > 0 and reg > 0
    total = float(model.compute_loss(images, y, y_pred))
    np.testing.assert_allclose(total, (1 - alpha) * gt + alpha * distill + reg, rtol=1e-5)
    logged = {m.name: float(m.result()) for m in model.term_trackers}
    assert list(logged) == ["xy", "wh", "obj", "cls", "d_obj", "d_xy", "d_wh", "d_cls",
                            "reg"]
    np.testing.assert_allclose(sum(logged[n] for n in ("d_obj", "d_xy", "d_wh", "d_cls")),
                               distill, rtol=1e-5)
    # Evaluation (val_loss) is the ground-truth loss alone (no teacher, no weight decay).
    evaluated = float(model.compute_loss(images, y, y_pred, training=False))
    np.testing.assert_allclose(evaluated, gt, rtol=1e-5)
    # Cached teacher outputs in the targets replace the in-graph teacher.
    cached = {**y, "teacher": tuple(np.zeros_like(keras.ops.convert_to_numpy(o))
                                    for o in y_pred)}
    zero_teacher = float(DistillationLoss(2.0)(list(cached["teacher"]), y_pred))
    np.testing.assert_allclose(float(model.compute_loss(images, cached, y_pred)),
                               (1 - alpha) * gt + alpha * zero_teacher + reg, rtol=1e-5)


def test_teacher_stays_frozen_through_a_training_step(teacher):
    model, _, frozen = _distill_model(teacher, 0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = [v.numpy().copy() for v in frozen.weights]
    student_before = [v.numpy().copy() for v in model.network.trainable_weights]
    assert not any(v is w for v in model.trainable_weights for w in frozen.weights)
    images, y = _batch()
    model.train_on_batch(images, y)
    for value, variable in zip(before, frozen.weights):   # BN statistics included
        np.testing.assert_array_equal(value, variable.numpy(), err_msg=variable.path)
    assert any(not np.allclose(a, b.numpy())
               for a, b in zip(student_before, model.network.trainable_weights))


def test_teacher_cache_rows_are_the_teachers_outputs(teacher, dataset, tmp_path):
    from detkit.data.dataset import load_dataset
    from detkit.data.loader import DetectionBatches
    from detkit.distill import (TeacherCache, TeacherSpec, cache_settings,
                                write_teacher_cache)

    records = load_dataset(dataset / "train.txt").records
    spec = TeacherSpec(teacher["bare"], "yolov3-tiny", TEACHER_WIDTH, ANCHORS)
    pairs, _ = match_strides(ANCHORS, ANCHORS)
    settings = cache_settings(spec, input_size=SIZE, num_classes=2, pairs=pairs,
                              image_paths=[r.image_path for r in records])
    path = tmp_path / "teacher.h5"
    write_teacher_cache(path, teacher["model"], records, input_size=SIZE, batch_size=4,
                        pairs=pairs, settings=settings, inputs=[teacher["bare"]])
    assert (tmp_path / "teacher.h5.manifest.json").is_file()
    images, _ = DetectionBatches(records, SIZE, len(records))[0]
    expected = [keras.ops.convert_to_numpy(o) for o in teacher["model"](images,
                                                                      training=False)]
    cache = TeacherCache(path)
    assert len(cache) == len(records)
    cache.check(settings)
    indices = [5, 0, 5, 3]                              # any order, repeats allowed
    for got, want in zip(cache.read(indices), expected):
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), want[indices], rtol=2e-3,
                                   atol=2e-3)
    with pytest.raises(ArtifactMismatchError, match="input_size: .* has 64, this run "
                                                    "has 96"):
        cache.check({**settings, "input_size": 96})
    cache.close()


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------

def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def distill_args(dataset, teacher_path, out, *extra):
    return ["distill", str(dataset / "train.txt"), "--teacher", str(teacher_path),
            "--model", "yolov3-tiny", "--width", STUDENT_WIDTH,
            "--anchors", str(dataset / "anchors.txt"), "--input-size", str(SIZE),
            "--batch-size", "4", "--steps-per-epoch", "2", "--freeze", "none",
            "--out", str(out), *extra]


@pytest.mark.parametrize("extra,code,message", [
    (["--alpha", "1.5"], 2, "--alpha must be in [0, 1], got 1.5"),
    (["--temperature", "0"], 2, "--temperature must be a positive number"),
    (["--teacher-model", "yolov5"], 2, "--teacher-model must be one of"),
    (["--teacher-cache", "t.h5"], 2, "--teacher-cache needs --no-augment"),
    (["--schedule", "linear"], 2, "--schedule must be one of"),       # train's checks
    # train's options distill cannot honour are none of its own
    (["--bottlenecks", "b.h5"], 2, "No such option: --bottlenecks"),
    (["--multi-scale", "0.5"], 2, "No such option: --multi-scale"),
])
def test_cli_rejects_bad_options(dataset, teacher, tmp_path, extra, code, message):
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], tmp_path / "run",
                                               *extra))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (tmp_path / "run").exists()


def test_cli_config_file_sets_distill_and_train_options(dataset, teacher, tmp_path):
    config = tmp_path / "distill.yaml"
    config.write_text("alpha: 2\nteacher-model: yolov3-tiny\nbatch_size: 4\n")
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], tmp_path / "run",
                                               "--config", str(config)))
    assert result.exit_code == 2 and "--alpha must be in [0, 1], got 2.0" in result.output
    # Flags override the file.
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], tmp_path / "run",
                                               "--config", str(config), "--alpha", "0.5",
                                               "--temperature", "-1"))
    assert result.exit_code == 2 and "--temperature must be a positive" in result.output
    config.write_text("alphaa: 0.5\n")
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], tmp_path / "run",
                                               "--config", str(config)))
    assert result.exit_code == 2 and "unknown key 'alphaa' (did you mean 'alpha'?)" in \
        result.output


def test_api_refuses_bottlenecks(dataset, teacher, tmp_path):
    from detkit.errors import UsageError

    with pytest.raises(UsageError, match="--bottlenecks is not supported"):
        _api_distill(dataset, teacher["run"], tmp_path / "run", epochs=1,
                     bottlenecks=tmp_path / "b.h5", labels=tmp_path / "l.npz")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        _api_distill(dataset, teacher["run"], tmp_path / "run", epochs=1, alhpa=0.5)
    assert not (tmp_path / "run").exists()


def test_cli_requires_a_teacher(dataset, tmp_path):
    args = distill_args(dataset, "x", tmp_path / "run")
    del args[2:4]
    result = runner.invoke(app(), args)
    assert result.exit_code == 2 and "--teacher is required" in result.output


def test_cli_reports_unusable_teachers(dataset, teacher, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app(), distill_args(dataset, tmp_path / "missing.weights.h5", out))
    assert result.exit_code == 1 and "teacher not found" in result.output
    result = runner.invoke(app(), distill_args(dataset, teacher["bare"], out))
    assert result.exit_code == 2 and "--teacher-model is required" in result.output
    result = runner.invoke(app(), distill_args(dataset, teacher["bare"], out,
                                               "--teacher-model", "yolov3-tiny",
                                               "--teacher-width", "0.25"))
    assert result.exit_code == 1, result.output
    assert "--teacher-width 0.25, 2 classes) does not match its weights" in result.output
    other = tmp_path / "other.txt"
    save_anchors(other, ANCHORS * 2)
    result = runner.invoke(app(), distill_args(dataset, teacher["bare"], out,
                                               "--teacher-model", "yolov3-tiny",
                                               "--teacher-width", "0.125",
                                               "--teacher-anchors", str(other)))
    assert result.exit_code == 1 and "share no output stride" in result.output
    assert "stride 32: other anchors (teacher 40,48 56,56 80,80, student 20,24" in result.output
    classes = tmp_path / "classes.txt"    # the dataset's names and one more: not the teacher's
    classes.write_text((dataset / "classes.txt").read_text().rstrip("\n") + "\nfox\n")
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], out,
                                               "--classes", str(classes)))
    assert result.exit_code == 1, result.output
    assert "class_names" in result.output and "disagree" in result.output


def app():
    from detkit.cli import app as detkit_app

    return detkit_app


def _history(run_dir):
    return read_csv(run_dir / "history.csv")


GT_COLUMNS = ("loss", "xy", "wh", "obj", "cls", "reg")


@pytest.mark.slow
def test_alpha_zero_reproduces_train_and_alpha_half_distills(dataset, teacher, tmp_path):
    """The issue's proof: with --alpha 0 and the same seed, distill's loss history is
    train's; with --alpha 0.5 the teacher terms move it."""
    common = ["--epochs", "2", "--seed", "3", "--val", str(dataset / "val.txt")]
    plain = tmp_path / "plain"
    args = distill_args(dataset, teacher["run"], plain, *common)
    train_args = ["train", *args[1:2], *args[4:]]
    result = runner.invoke(app(), train_args)
    assert result.exit_code == 0, result.output
    zero = tmp_path / "zero"
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], zero, "--alpha", "0",
                                               *common))
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "note: teacher: yolov3-tiny --width 0.125" in said      # before the epochs
    assert said.index("note: teacher:") < said.index("epoch 1/2")
    expected, got = _history(plain), _history(zero)
    assert len(expected) == len(got) == 2
    for column in GT_COLUMNS + ("val_loss",):
        np.testing.assert_allclose([float(r[column]) for r in got],
                                   [float(r[column]) for r in expected], rtol=1e-5,
                                   err_msg=column)
    assert all(float(r["d_obj"]) > 0 for r in got)          # measured, not used
    manifest = json.loads((zero / "manifest.json").read_text())
    assert manifest["command"] == "distill" and manifest["alpha"] == 0.0
    assert manifest["teacher_model"] == "yolov3-tiny" and manifest["distill_strides"] == [32, 16]

    half = tmp_path / "half"
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], half, "--alpha",
                                               "0.5", "--temperature", "2", *common))
    assert result.exit_code == 0, result.output
    rows = _history(half)
    assert list(rows[0])[:12] == ["epoch", "lr", "loss", "xy", "wh", "obj", "cls", "d_obj",
                                  "d_xy", "d_wh", "d_cls", "reg"]
    first = rows[0]
    gt = sum(float(first[c]) for c in ("xy", "wh", "obj", "cls"))
    distilled = sum(float(first[c]) for c in ("d_obj", "d_xy", "d_wh", "d_cls"))
    # Per-batch running means: the logged loss is the mix of the logged terms.
    np.testing.assert_allclose(float(first["loss"]),
                               0.5 * gt + 0.5 * distilled + float(first["reg"]), rtol=1e-3)
    assert not np.allclose(float(rows[1]["loss"]), float(expected[1]["loss"]), rtol=1e-3)
    for row in rows:
        assert all(math.isfinite(float(v)) for v in row.values())


@pytest.mark.slow
def test_teacher_cache_is_computed_once_and_matches_the_in_graph_teacher(dataset, teacher,
                                                                         tmp_path):
    common = ["--epochs", "2", "--seed", "1", "--no-augment", "--alpha", "0.5"]
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], tmp_path / "graph",
                                               *common))
    assert result.exit_code == 0, result.output
    cache = tmp_path / "teacher.h5"
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], tmp_path / "cached",
                                               *common, "--teacher-cache", str(cache)))
    assert result.exit_code == 0, result.output
    assert "cached the teacher's outputs in" in result.output and cache.is_file()
    stamp = cache.stat().st_mtime_ns
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], tmp_path / "again",
                                               *common, "--teacher-cache", str(cache)))
    assert result.exit_code == 0, result.output
    assert "reusing the teacher's outputs" in result.output
    assert cache.stat().st_mtime_ns == stamp
    graph, cached, again = (_history(tmp_path / name) for name in ("graph", "cached", "again"))
    for column in GT_COLUMNS + ("d_obj", "d_xy", "d_wh", "d_cls"):
        values = [float(r[column]) for r in cached]
        np.testing.assert_allclose([float(r[column]) for r in again], values, rtol=1e-6,
                                   err_msg=column)
        # float16 storage of the teacher's logits: agreement to ~3 digits.
        np.testing.assert_allclose(values, [float(r[column]) for r in graph], rtol=5e-3,
                                   atol=1e-4, err_msg=column)
    result = runner.invoke(app(), distill_args(dataset, teacher["run"], tmp_path / "other",
                                               *common, "--teacher-cache", str(cache),
                                               "--seed", "1", "--input-size", "96"))
    assert result.exit_code == 1, result.output
    assert "computed for another run" in result.output and "input_size" in result.output


def _api_distill(dataset, teacher, out, **options):
    from detkit.commands.distill import Options, run

    base = dict(model="yolov3-tiny", width=0.0625, anchors=dataset / "anchors.txt",
                input_size=SIZE, batch_size=4, steps_per_epoch=2, freeze="none", out=out,
                alpha=0.5)
    base.update(options)
    return run(Options(data=dataset / "train.txt", teacher=teacher, **base))


@pytest.mark.slow
def test_resume_continues_a_distillation_exactly(dataset, teacher, tmp_path):
    from detkit.errors import ArtifactMismatchError as Mismatch

    straight = _api_distill(dataset, teacher["run"], tmp_path / "straight", epochs=2)
    first = _api_distill(dataset, teacher["run"], tmp_path / "resumed", epochs=1)
    assert first.total_epochs == 1
    resumed = _api_distill(dataset, teacher["run"], tmp_path / "resumed", epochs=2,
                           resume=True)
    assert (resumed.start_epoch, resumed.epochs_run) == (1, 1)
    for column in ("loss", "d_obj", "obj"):
        np.testing.assert_allclose([r[column] for r in resumed.history],
                                   [r[column] for r in straight.history], rtol=1e-4,
                                   err_msg=column)
    with pytest.raises(Mismatch, match="alpha"):
        _api_distill(dataset, teacher["run"], tmp_path / "resumed", epochs=3, resume=True,
                     alpha=0.25)


@pytest.mark.slow
def test_yolov3_teacher_mixed_precision_skips_the_stride_it_does_not_share(dataset,
                                                                            tmp_path):
    from detkit.models import build_model

    keras.utils.set_random_seed(2)
    path = tmp_path / "v3.weights.h5"
    build_model("yolov3", 2, 0.0625, SIZE).save_weights(path)
    save_anchors(tmp_path / "v3.txt", YOLOV3_ANCHORS)
    result = runner.invoke(app(), distill_args(
        dataset, path, tmp_path / "run", "--teacher-model", "yolov3", "--teacher-width",
        "0.0625", "--teacher-anchors", str(tmp_path / "v3.txt"), "--epochs", "1",
        "--steps-per-epoch", "1", "--mixed-precision"))
    assert result.exit_code == 0, result.output
    assert ("distilling at stride 32, 16 only; skipped stride 8: the student has no "
            "output at this stride") in " ".join(result.output.split())
    row = _history(tmp_path / "run")[0]
    assert all(math.isfinite(float(v)) for v in row.values())
    assert keras.config.dtype_policy().name == "float32"


def test_student_without_anchors_takes_the_teachers_when_its_model_takes_as_many(
        dataset, teacher, tmp_path):
    """Without --anchors the student takes the anchors the teacher's manifest records
    (then every stride pairs); not when its model takes another count, nor over
    --anchors, nor from a teacher without a manifest."""
    from detkit.commands.distill import Options

    def recorded(teacher_path, **options):
        opts = Options(data=dataset / "train.txt", teacher=teacher_path, out=tmp_path / "r",
                       **{"model": "yolov3-tiny", **options})
        start = opts.recorded_start()
        return None if start is None else start.anchors

    np.testing.assert_array_equal(recorded(teacher["run"]), ANCHORS)
    # with the input size those anchors are in pixels of (used when not given)
    start = Options(data=dataset / "train.txt", teacher=teacher["run"], out=tmp_path / "r",
                    model="yolov3-tiny").recorded_start()
    assert start.values["input_size"] == SIZE
    assert recorded(teacher["run"], model="yolov3") is None            # 9 anchors
    assert recorded(teacher["run"], anchors=dataset / "anchors.txt") is None
    assert recorded(teacher["bare"]) is None
    assert recorded(tmp_path / "missing") is None         # the teacher's check reports it
    args = distill_args(dataset, teacher["run"], tmp_path / "run", "--epochs", "1")
    del args[args.index("--anchors"):args.index("--anchors") + 2]
    result = runner.invoke(app(), args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "best.weights.h5.manifest.json").read_text())
    np.testing.assert_allclose(manifest["anchors"], ANCHORS)
    assert "share no output stride" not in result.output
