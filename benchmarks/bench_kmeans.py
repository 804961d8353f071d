"""k-means anchors: detkit vs. keras-yolo3's ``kmeans.py`` on log-normal box sizes.

The reference below re-implements keras-yolo3's algorithm step by step: ``k`` rows drawn at
random from the boxes as initial clusters, assignment by the ``1 - IoU`` distance computed
with the same ``(N, k)`` repeat/tile matrices, ``np.median`` cluster updates, and a loop
that stops when no box changes cluster; one run has no restarts. Where a cluster empties
(keras-yolo3 would produce NaN), the reference keeps the old center so that runs finish.

Figures: mean IoU of detkit vs. one reference run and vs. the best of 10 runs, the time
ratio (reference single run / detkit with its restarts), BPR of both, and determinism.
As a ceiling, mean IoU is also maximized directly (Powell's method over the 2k log anchor
sides, from detkit's and from the best reference run's anchors, fitted on a subsample and
scored on all boxes): no method can gain more over the reference than that optimum does.

Run: ``python -m benchmarks.bench_kmeans [--quick]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from detkit.kmeans import DEFAULT_RESTARTS, anchor_quality, iou_kmeans

#: Number of boxes of the full benchmark and of ``quick=True``.
FULL_BOXES = 100_000
QUICK_BOXES = 10_000
K = 9
INPUT_SIZE = 416
#: Log-normal box sizes: log width ~ N(log 50, 1), log aspect ratio ~ N(0, 1).
LOG_MEAN_WIDTH = np.log(50.0)
LOG_STD_WIDTH = 1.0
LOG_STD_ASPECT = 1.0
#: Reference runs whose best mean IoU detkit must reach.
REFERENCE_RUNS = 10
#: Boxes and function evaluations of the direct maximization (the ceiling).
CEILING_SAMPLE = 20_000
CEILING_EVALS = 4000


def lognormal_boxes(n: int, seed: int = 0, input_size: int = INPUT_SIZE) -> np.ndarray:
    """``(n, 2)`` float64 box sizes in input pixels, log-normal, clipped to [2, input]."""
    rng = np.random.default_rng(seed)
    log_w = rng.normal(LOG_MEAN_WIDTH, LOG_STD_WIDTH, n)
    log_h = log_w + rng.normal(0.0, LOG_STD_ASPECT, n)
    return np.clip(np.exp(np.stack([log_w, log_h], axis=1)), 2.0, input_size)


# ----------------------------------------------------------------- keras-yolo3 reference


def reference_iou(boxes: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """keras-yolo3's IoU: ``(n, k)`` matrices built with repeat and tile, then combined."""
    n, k = boxes.shape[0], clusters.shape[0]
    box_area = np.reshape((boxes[:, 0] * boxes[:, 1]).repeat(k), (n, k))
    cluster_area = np.reshape(np.tile(clusters[:, 0] * clusters[:, 1], [1, n]), (n, k))
    box_w = np.reshape(boxes[:, 0].repeat(k), (n, k))
    cluster_w = np.reshape(np.tile(clusters[:, 0], (1, n)), (n, k))
    min_w = np.minimum(cluster_w, box_w)
    box_h = np.reshape(boxes[:, 1].repeat(k), (n, k))
    cluster_h = np.reshape(np.tile(clusters[:, 1], (1, n)), (n, k))
    min_h = np.minimum(cluster_h, box_h)
    inter = np.multiply(min_w, min_h)
    return inter / (box_area + cluster_area - inter)


def reference_avg_iou(boxes: np.ndarray, clusters: np.ndarray) -> float:
    """keras-yolo3's accuracy: mean over boxes of the best IoU."""
    return float(np.mean(np.max(reference_iou(boxes, clusters), axis=1)))


def reference_kmeans(boxes: np.ndarray, k: int, rng: np.random.Generator,
                     dist=np.median) -> np.ndarray:
    """keras-yolo3's k-means: random rows as init, median updates, until stable."""
    box_number = boxes.shape[0]
    last_nearest = np.zeros((box_number,))
    clusters = boxes[rng.choice(box_number, k, replace=False)].copy()
    while True:
        distances = 1 - reference_iou(boxes, clusters)
        current_nearest = np.argmin(distances, axis=1)
        if (last_nearest == current_nearest).all():
            break
        for cluster in range(k):
            members = boxes[current_nearest == cluster]
            if len(members):  # keras-yolo3 would write NaN here
                clusters[cluster] = dist(members, axis=0)
        last_nearest = current_nearest
    return clusters


def direct_optimum(boxes: np.ndarray, starts: list[np.ndarray], sample: int = CEILING_SAMPLE,
                   evals: int = CEILING_EVALS, seed: int = 1) -> float:
    """Mean IoU on all ``boxes`` of anchors that maximize it directly on a subsample.

    Powell's method (derivative-free) on the log sides of ``(k, 2)`` anchors, from each
    of ``starts``; the best result scored on all boxes is returned.
    """
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    fit = boxes[rng.choice(len(boxes), min(sample, len(boxes)), replace=False)]

    def loss(log_sides: np.ndarray) -> float:
        return -reference_avg_iou(fit, np.exp(log_sides.reshape(-1, 2)))

    best = 0.0
    for start in starts:
        found = minimize(loss, np.log(start).ravel(), method="Powell",
                         options={"maxfev": evals, "xtol": 1e-3, "ftol": 1e-6})
        best = max(best, reference_avg_iou(boxes, np.exp(found.x.reshape(-1, 2))))
    return best


# ----------------------------------------------------------------------------- main


#: Timed repeats of detkit's run (the median counts; the machine may be shared).
DETKIT_REPEATS = 5


def _timed(fn, *args, **kwargs):
    """``(value, wall seconds, CPU seconds of this process)``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start, time.process_time() - start_cpu


def main(quick: bool = False) -> dict:
    """Run the comparison; returns the figures (IoU points, ratios, seconds)."""
    n = QUICK_BOXES if quick else FULL_BOXES
    runs = 3 if quick else REFERENCE_RUNS
    boxes = lognormal_boxes(n)

    timings = [_timed(iou_kmeans, boxes, K, seed=0) for _ in range(DETKIT_REPEATS)]
    ours = timings[0][0]
    ours_s = float(np.median([t[1] for t in timings]))
    ours_cpu = float(np.median([t[2] for t in timings]))
    deterministic = all(t[0].anchors.tobytes() == ours.anchors.tobytes() for t in timings)
    ours_iou = reference_avg_iou(boxes, ours.anchors)

    rng = np.random.default_rng(0)
    ref_ious, ref_times, ref_cpu, ref_anchors = [], [], [], []
    for _ in range(runs):
        clusters, seconds, cpu = _timed(reference_kmeans, boxes, K, rng)
        ref_ious.append(reference_avg_iou(boxes, clusters))
        ref_times.append(seconds)
        ref_cpu.append(cpu)
        ref_anchors.append(clusters)
    single_iou, single_s = ref_ious[0], ref_times[0]
    best = int(np.argmax(ref_ious))
    ceiling = direct_optimum(boxes, [ours.anchors, ref_anchors[best]],
                             evals=400 if quick else CEILING_EVALS)

    figures = {
        "n_boxes": n, "k": K, "restarts": DEFAULT_RESTARTS,
        "detkit_s": ours_s, "reference_single_run_s": single_s,
        "reference_median_run_s": float(np.median(ref_times)),
        "speedup_vs_single_run": single_s / ours_s,
        "speedup_vs_median_run": float(np.median(ref_times)) / ours_s,
        "detkit_cpu_s": ours_cpu, "reference_median_run_cpu_s": float(np.median(ref_cpu)),
        "cpu_speedup_vs_median_run": float(np.median(ref_cpu)) / ours_cpu,
        "detkit_avg_iou": ours_iou, "reference_single_avg_iou": single_iou,
        "reference_best_of_runs_avg_iou": ref_ious[best], "reference_runs": runs,
        "iou_points_over_single_run": 100 * (ours_iou - single_iou),
        "iou_points_over_best_run": 100 * (ours_iou - ref_ious[best]),
        "direct_optimum_avg_iou": ceiling,
        "ceiling_points_over_single_run": 100 * (ceiling - single_iou),
        "detkit_bpr": anchor_quality(boxes, ours.anchors).bpr,
        "reference_best_bpr": anchor_quality(boxes, ref_anchors[best]).bpr,
        "deterministic": deterministic,
    }
    print(f"kmeans-anchors, {n} log-normal boxes, k={K}")
    print(f"  detkit ({DEFAULT_RESTARTS} restarts): {ours_s:.3f} s (median of "
          f"{DETKIT_REPEATS}), mean IoU {ours_iou:.4f}, "
          f"BPR {figures['detkit_bpr']:.4f}, same seed same bytes: {deterministic}")
    print(f"  keras-yolo3 kmeans.py: first run {single_s:.3f} s (median of {runs} "
          f"{figures['reference_median_run_s']:.3f} s), mean IoU first {single_iou:.4f}, "
          f"best of {runs} {ref_ious[best]:.4f}, BPR {figures['reference_best_bpr']:.4f}")
    print(f"  speedup {figures['speedup_vs_single_run']:.1f}x vs the first run, "
          f"{figures['speedup_vs_median_run']:.1f}x vs the median run "
          f"(CPU time: {figures['cpu_speedup_vs_median_run']:.1f}x)")
    print(f"  mean IoU {figures['iou_points_over_single_run']:+.2f} points over one run, "
          f"{figures['iou_points_over_best_run']:+.2f} over the best of {runs}")
    print(f"  ceiling: mean IoU maximized directly {ceiling:.4f}, "
          f"{figures['ceiling_points_over_single_run']:+.2f} points over one run")
    return figures


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
