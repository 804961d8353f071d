"""IoU k-means anchors: core against loop references, hand cases, files and the CLI."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit import kmeans
from detkit.anchors import default_anchors_path, load_anchors
from detkit.artifacts import manifest_path
from detkit.cli import app
from detkit.data.records import ImageRecord
from detkit.errors import DataError, UsageError

runner = CliRunner()


# ------------------------------------------------------------------ loop references


def loop_iou(box, anchor):
    inter = min(box[0], anchor[0]) * min(box[1], anchor[1])
    return inter / (box[0] * box[1] + anchor[0] * anchor[1] - inter)


def loop_nearest(wh, anchors):
    labels, best, second = [], [], []
    for box in wh:
        ious = [loop_iou(box, anchor) for anchor in anchors]
        index = int(np.argmax(ious))  # first maximum
        labels.append(index)
        best.append(ious[index])
        second.append(max([v for i, v in enumerate(ious) if i != index], default=0.0))
    return np.array(labels), np.array(best), np.array(second)


def loop_lloyd(wh, centers, max_iter=300):
    """Plain median k-means: assign, stop when nothing changes, median update."""
    centers = np.array(centers, dtype=np.float64)
    previous = None
    for _ in range(max_iter):
        labels = loop_nearest(wh, centers)[0]
        if previous is not None and np.array_equal(labels, previous):
            break
        for c in range(len(centers)):
            members = wh[labels == c]
            if len(members):
                centers[c] = np.median(members, axis=0)
        previous = labels
    return centers


def lognormal(n, seed=0):
    rng = np.random.default_rng(seed)
    log_w = rng.normal(np.log(40), 0.8, n)
    return np.exp(np.stack([log_w, log_w + rng.normal(0, 0.6, n)], 1)).astype(np.float32)


def three_groups(per_group=30, seed=0):
    rng = np.random.default_rng(seed)
    groups = [(10, 10), (60, 20), (120, 240)]
    wh = np.concatenate([np.float32(g) * rng.uniform(0.97, 1.03, (per_group, 2))
                         for g in groups])
    return wh.astype(np.float32), groups


# ------------------------------------------------------------------ core


def test_three_separated_groups_give_their_centers():
    wh, groups = three_groups()
    result = kmeans.iou_kmeans(wh, 3, seed=0, refine=0)
    expected = np.array([np.median(wh[i * 30:(i + 1) * 30], axis=0) for i in range(3)])
    np.testing.assert_allclose(result.anchors, expected, rtol=1e-6)
    assert result.converged


def test_exact_groups_hand_case():
    wh = np.float32([[10, 10]] * 4 + [[60, 20]] * 3 + [[120, 240]] * 5)
    result = kmeans.iou_kmeans(wh, 3, seed=3)
    np.testing.assert_allclose(result.anchors, [[10, 10], [60, 20], [120, 240]])
    assert result.avg_iou == pytest.approx(1.0)


def test_nearest_matches_loop_reference_with_ties():
    wh = lognormal(300, seed=1)
    anchors = np.float32([[20, 30], [40, 40], [20, 30], [90, 60]])  # rows 0 and 2 tie
    labels, best, second = kmeans._nearest(wh, anchors)
    ref_labels, ref_best, ref_second = loop_nearest(wh.astype(np.float64), anchors)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(best, ref_best, rtol=1e-5)
    np.testing.assert_allclose(second, ref_second, rtol=1e-5)
    assert not np.any(labels == 2)  # a tie always goes to the lower index


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lloyd_with_bounds_equals_plain_lloyd(seed):
    wh = lognormal(400, seed=seed)
    unique, counts = kmeans.unique_sizes(wh)
    clusterer = kmeans._Clusterer(unique, counts)
    start = clusterer.seed_plus_plus(5, np.random.default_rng(seed))
    centers, score, _, converged = clusterer.lloyd(start, "median", 300)
    np.testing.assert_allclose(centers, loop_lloyd(wh.astype(np.float64), start), rtol=1e-6)
    assert converged
    expected = np.mean(loop_nearest(wh.astype(np.float64), centers)[1])
    assert score == pytest.approx(expected, rel=1e-5)


def test_iou_bound_used_by_pruning():
    rng = np.random.default_rng(0)
    boxes = np.exp(rng.normal(3, 1, (500, 2)))
    anchors = np.exp(rng.normal(3, 1, (500, 2)))
    drift = rng.uniform(0, 0.3, 500)
    moved = anchors * np.exp(rng.uniform(-1, 1, (500, 2)) * drift[:, None])
    before = np.array([loop_iou(b, a) for b, a in zip(boxes, anchors)])
    after = np.array([loop_iou(b, a) for b, a in zip(boxes, moved)])
    ratio = np.abs(np.log(after / before))
    assert np.all(ratio <= kmeans.IOU_DRIFT_POWER * drift + 1e-12)


def test_weighted_median_equals_median_of_expanded_data():
    rng = np.random.default_rng(0)
    wh = rng.integers(1, 8, (200, 2)).astype(np.float32) * 5  # many duplicates
    labels_expanded = rng.integers(0, 3, 200)
    unique, counts = kmeans.unique_sizes(wh)
    assert counts.sum() == 200 and len(unique) < 200
    # Give identical rows the same label so that the unique rows carry it.
    index = {tuple(row): i for i, row in enumerate(unique)}
    labels_unique = np.array([labels_expanded[np.flatnonzero((wh == row).all(1))[0]]
                              for row in unique])
    labels_full = labels_unique[[index[tuple(row)] for row in wh]]
    got = kmeans._Clusterer(unique, counts).centers(labels_unique, 3, "median")
    expected = [np.median(wh[labels_full == c], axis=0) for c in range(3)]
    np.testing.assert_allclose(got, expected)
    got_mean = kmeans._Clusterer(unique, counts).centers(labels_unique, 3, "mean")
    np.testing.assert_allclose(got_mean, [wh[labels_full == c].mean(0) for c in range(3)],
                               rtol=1e-6)


def test_unique_sizes_is_order_independent():
    wh = lognormal(50)
    wh = np.concatenate([wh, wh[:10]])
    a, ca = kmeans.unique_sizes(wh)
    b, cb = kmeans.unique_sizes(wh[::-1])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ca, cb)
    assert len(a) == 50 and ca.sum() == 60


def test_deterministic_sorted_k_rows():
    wh = lognormal(20_000, seed=4)  # larger than the sample: exercises the subsample
    first = kmeans.iou_kmeans(wh, 9, seed=7)
    second = kmeans.iou_kmeans(wh, 9, seed=7)
    assert first.anchors.tobytes() == second.anchors.tobytes()
    assert first.anchors.shape == (9, 2)
    area = first.anchors.prod(axis=1)
    assert np.all(np.diff(area) >= 0)
    assert first.avg_iou == pytest.approx(kmeans.avg_iou(wh, first.anchors), rel=1e-6)


def test_subsample_and_polish_match_clustering_all_boxes():
    # 20k float sizes (no duplicates): restarts on the 4096-box subsample, at most
    # POLISH_ITER Lloyd iterations on all boxes, then the IoU refinement, against the
    # same pipeline with the restarts and Lloyd iterations run on all boxes.
    wh = lognormal(20_000, seed=8)
    fast = kmeans.iou_kmeans(wh, 9, seed=0)
    exhaustive = kmeans.iou_kmeans(wh, 9, seed=0, sample_size=0)
    assert fast.avg_iou >= exhaustive.avg_iou - 1e-3  # seeds 8-13: -0.0008 to +0.0002
    assert fast.avg_iou == pytest.approx(kmeans.avg_iou(wh, fast.anchors), rel=1e-6)


def test_refine_never_lowers_mean_iou():
    wh = lognormal(3000, seed=5)
    plain = kmeans.iou_kmeans(wh, 6, seed=0, refine=0)
    refined = kmeans.iou_kmeans(wh, 6, seed=0, refine=3)
    assert refined.avg_iou >= plain.avg_iou


def test_restarts_do_not_lower_mean_iou():
    wh = lognormal(2000, seed=6)
    one = kmeans.iou_kmeans(wh, 9, seed=0, restarts=1, refine=0)
    many = kmeans.iou_kmeans(wh, 9, seed=0, restarts=8, refine=0)
    assert many.avg_iou >= one.avg_iou - 1e-12  # the first restart is the same run


def test_empty_cluster_is_reseeded():
    wh = np.float32([[10, 10]] * 5 + [[100, 100]] * 5 + [[30, 30]])
    clusterer = kmeans._Clusterer(*kmeans.unique_sizes(wh))
    # Center 2 attracts nothing at first; it must be re-seeded, not become NaN.
    centers, score, _, _ = clusterer.lloyd(np.array([[10., 10], [100, 100], [1000, 1000]]),
                                           "median", 50)
    assert np.isfinite(centers).all()
    np.testing.assert_allclose(sorted(centers.prod(1)), [100, 900, 10000])
    assert score == pytest.approx(1.0)


def test_ratio_metric_and_quality_hand_case():
    wh = np.float32([[10, 10], [40, 10], [100, 100]])
    anchors = np.float32([[10, 10], [20, 20]])
    ratio = kmeans.ratio_metric(wh, anchors)
    np.testing.assert_allclose(ratio, [[1, .5], [.25, .5], [.1, .2]])
    quality = kmeans.anchor_quality(wh, anchors, anchor_t=4.0)
    # best ratios 1, .5, .2; threshold .25: box 3 has no anchor.
    assert quality.bpr == pytest.approx(2 / 3)
    assert quality.anchors_per_target == pytest.approx((2 + 1 + 0) / 3)
    assert quality.fitness == pytest.approx((1 + .5 + 0) / 3)
    ious = [1.0, max(100 / 400, 200 / 600), 400 / 10000]
    assert quality.avg_iou == pytest.approx(np.mean(ious), rel=1e-6)
    assert kmeans.anchor_fitness(wh, anchors) == pytest.approx(quality.fitness)


def test_evolution_is_seeded_and_never_worse():
    wh = lognormal(2000, seed=8)
    start = kmeans.iou_kmeans(wh, 6, seed=0).anchors
    a = kmeans.evolve_anchors(wh, start, 150, seed=1)
    b = kmeans.evolve_anchors(wh, start, 150, seed=1)
    assert a.anchors.tobytes() == b.anchors.tobytes()
    assert a.fitness >= a.start_fitness
    assert a.fitness == pytest.approx(kmeans.anchor_fitness(wh, a.anchors))
    assert np.all(a.anchors >= kmeans.MIN_BOX_SIZE)
    assert np.all(np.diff(a.anchors.prod(1)) >= 0)


def test_input_box_sizes_letterbox_and_stretch():
    record = ImageRecord("a.png", 200, 100, [[0, 0, 50, 20], [10, 10, 110, 60]], [0, 0])
    letterbox = kmeans.input_box_sizes([record], 100, "letterbox")
    np.testing.assert_allclose(letterbox, [[25, 10], [50, 25]])
    stretch = kmeans.input_box_sizes([record], 100, "stretch")
    np.testing.assert_allclose(stretch, [[25, 20], [50, 50]])
    tiny, dropped = kmeans.drop_tiny(np.float32([[1, 5], [5, 5], [5, 1.9]]))
    np.testing.assert_allclose(tiny, [[5, 5]])
    assert dropped == 2


@pytest.mark.parametrize("wh, k, error, text", [
    (np.zeros((0, 2)), 3, DataError, "no boxes"),
    (np.float32([[5, 5], [0, 3]]), 1, DataError, "not positive"),
    (np.float32([[5, 5], [-1, 3]]), 1, DataError, "not positive"),
    (np.float32([[5, 5], [np.nan, 3]]), 1, DataError, "not positive"),
    (np.float32([[5, 5], [5, 5], [6, 6]]), 3, UsageError, "distinct"),
    (np.float32([[5, 5]]), 0, UsageError, "--k"),
])
def test_core_errors(wh, k, error, text):
    with pytest.raises(error, match=text):
        kmeans.iou_kmeans(wh, k)


def test_bad_options():
    wh = lognormal(50)
    with pytest.raises(UsageError, match="--center"):
        kmeans.iou_kmeans(wh, 3, center="mode")
    with pytest.raises(UsageError, match="--restarts"):
        kmeans.iou_kmeans(wh, 3, restarts=0)
    with pytest.raises(UsageError, match="--anchor-t"):
        kmeans.anchor_fitness(wh, wh[:3], anchor_t=1.0)
    with pytest.raises(UsageError, match="--resize"):
        kmeans.input_box_sizes([], 416, "crop")


# ------------------------------------------------------------------ files and CLI


def write_lines_dataset(root, boxes_per_image, size=(64, 48)):
    """A keras-yolo3 lines file with tiny PNG images; returns its path."""
    lines = []
    for index, boxes in enumerate(boxes_per_image):
        path = root / f"im{index}.png"
        cv2.imwrite(str(path), np.full((size[1], size[0], 3), 90, np.uint8))
        parts = [str(path)] + [",".join(str(v) for v in box) + ",0" for box in boxes]
        lines.append(" ".join(parts))
    data = root / "train.txt"
    data.write_text("\n".join(lines) + "\n")
    return data


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for _ in range(12):
        boxes = []
        for _ in range(4):
            w, h = rng.integers(4, 30), rng.integers(4, 30)
            x, y = rng.integers(0, 64 - w), rng.integers(0, 48 - h)
            boxes.append((x, y, x + w, y + h))
        images.append(boxes)
    return write_lines_dataset(tmp_path, images)


def test_cli_writes_anchors_json_and_manifest(dataset, tmp_path):
    out = tmp_path / "anchors" / "mine.txt"
    compare = default_anchors_path("yolov3-tiny")
    result = runner.invoke(app, ["kmeans-anchors", str(dataset), "--k", "6", "--input-size",
                                 "128", "--out", str(out), "--compare", str(compare)])
    assert result.exit_code == 0, result.output
    assert "stride" in result.output and "avg_iou" in result.output
    anchors = load_anchors(out)
    assert anchors.shape == (6, 2)
    assert np.all(np.diff(anchors.prod(1)) >= 0)
    np.testing.assert_array_equal(anchors, np.round(anchors))  # integers, keras-yolo3 style
    report = json.loads((tmp_path / "anchors" / "mine.json").read_text())
    np.testing.assert_allclose(report["anchors"], anchors)
    for key in ("avg_iou", "bpr", "anchors_per_target", "fitness", "n_boxes", "k",
                "input_size", "seed", "elapsed_s"):
        assert key in report
    assert report["n_boxes"] == 48 and report["k"] == 6 and report["input_size"] == 128
    assert 0 < report["compare"]["avg_iou"] < report["avg_iou"] <= 1
    manifest = json.loads((tmp_path / "anchors" / "mine.txt.manifest.json").read_text())
    assert manifest["command"] == "kmeans-anchors" and manifest["seed"] == 0
    # Same seed, same bytes.
    again = tmp_path / "again.txt"
    runner.invoke(app, ["kmeans-anchors", str(dataset), "--k", "6", "--input-size", "128",
                        "--out", str(again)])
    assert again.read_bytes() == out.read_bytes()


def test_cli_rerun_replaces_its_own_report_only(dataset, tmp_path):
    """A second run into the same --out replaces the report the first wrote; a report
    path held by another file (its anchors file's manifest does not name it) is refused."""
    out = tmp_path / "a.txt"
    args = ["kmeans-anchors", str(dataset), "--k", "3", "--input-size", "128",
            "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    first = (tmp_path / "a.json").read_text()
    result = runner.invoke(app, [*args, "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.json").read_text())["seed"] == 1
    assert json.loads(first)["seed"] == 0
    manifest_path(out).unlink()                    # now a.json is nobody's report
    out.unlink()                                   # (and a.txt would be refused too)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "a.json, which already exists" in result.output
    assert json.loads((tmp_path / "a.json").read_text())["seed"] == 1


def test_cli_evolve_and_decimals(dataset, tmp_path):
    out = tmp_path / "evolved.txt"
    result = runner.invoke(app, ["kmeans-anchors", str(dataset), "--k", "3", "--input-size",
                                 "64", "--evolve", "50", "--decimals", "2", "--center",
                                 "mean", "--resize", "stretch", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "evolution:" in result.output
    report = json.loads((tmp_path / "evolved.json").read_text())
    np.testing.assert_allclose(load_anchors(out), report["anchors"], rtol=1e-6)
    assert report["resize"] == "stretch" and report["evolve"] == 50


@pytest.mark.parametrize("args, text", [
    (["--k", "0"], "--k"),
    (["--input-size", "0"], "--input-size"),
    (["--center", "mode"], "--center"),
    (["--resize", "crop"], "--resize"),
    (["--anchor-t", "0.5"], "--anchor-t"),
    (["--k", "60"], "--k 60 is more anchors than the boxes have distinct sizes"),
])
def test_cli_usage_errors_exit_2(dataset, tmp_path, args, text):
    out = tmp_path / "a.txt"
    result = runner.invoke(app, ["kmeans-anchors", str(dataset), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert text in result.output
    assert not out.exists()


def test_cli_dataset_without_boxes_exit_1(tmp_path):
    data = write_lines_dataset(tmp_path, [[], []])
    result = runner.invoke(app, ["kmeans-anchors", str(data), "--out",
                                 str(tmp_path / "a.txt")])
    assert result.exit_code == 1, result.output
    assert "no boxes" in result.output
    assert "Traceback" not in result.output


def test_cli_tiny_boxes_counted(tmp_path):
    data = write_lines_dataset(tmp_path, [[(0, 0, 1, 1), (0, 0, 20, 30), (5, 5, 30, 20)]])
    result = runner.invoke(app, ["kmeans-anchors", str(data), "--k", "2", "--input-size",
                                 "64", "--out", str(tmp_path / "a.txt")])
    assert result.exit_code == 0, result.output
    assert "dropped 1 boxes" in result.output
    assert json.loads((tmp_path / "a.json").read_text())["n_tiny"] == 1


def test_cli_missing_compare_file_exit_1(dataset, tmp_path):
    result = runner.invoke(app, ["kmeans-anchors", str(dataset), "--out",
                                 str(tmp_path / "a.txt"), "--compare",
                                 str(tmp_path / "nope.txt")])
    assert result.exit_code == 1
    assert "nope.txt" in result.output
