"""Where anchors sit: per-level anchor sizes and the anchor boxes of a pyramid of grids.

Both the anchor-matching assigners and the decoders of anchor heads use these, so the
order of anchors is written once: levels coarsest stride first, then grid rows, columns,
and the level's anchors (the order in which a head's outputs ``(B, H, W, A, V)`` are
flattened).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def level_anchors(anchors: np.ndarray, num_levels: int) -> list[np.ndarray]:
    """Split ``(K, 2)`` anchor sizes sorted by area into ``num_levels`` groups.

    Level ``i`` (coarsest stride first) gets rows ``[(L - 1 - i) A, (L - i) A)`` with
    ``A = K / L``: the largest anchors serve the coarsest stride (YOLOv3's
    ``anchor_masks`` for ``A = 3``).

    Raises:
        ValueError: ``K`` is not a positive multiple of ``num_levels``.
    """
    anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
    if num_levels < 1 or len(anchors) == 0 or len(anchors) % num_levels:
        raise ValueError(f"anchors must split evenly into {num_levels} levels, got "
                         f"{len(anchors)} anchors")
    per_level = len(anchors) // num_levels
    return [anchors[(num_levels - 1 - i) * per_level:(num_levels - i) * per_level]
            for i in range(num_levels)]


def anchor_boxes(anchors: np.ndarray, grids: Sequence[tuple[int, int]],
                 input_size: int) -> np.ndarray:
    """Every anchor box of a pyramid of grids, xyxy in input pixels.

    Anchors of level ``i`` are centered on the cells of its ``(H_i, W_i)`` grid, at
    ``((col + 0.5) S / W_i, (row + 0.5) S / H_i)`` with ``S = input_size``.

    Args:
        anchors: ``(K, 2)`` anchor sizes ``(w, h)`` in input pixels, sorted by area.
        grids: ``(H, W)`` per level, coarsest first (``K`` splits evenly over them).
        input_size: input side ``S`` in pixels.

    Returns:
        ``(N, 4)`` float32, ``N = sum_i H_i W_i A``, ordered level, row, column, anchor.
    """
    per_level = level_anchors(anchors, len(grids))
    out = []
    for (height, width), sizes in zip(grids, per_level):
        cy = (np.arange(height, dtype=np.float64) + 0.5) * (input_size / height)
        cx = (np.arange(width, dtype=np.float64) + 0.5) * (input_size / width)
        cy, cx = np.meshgrid(cy, cx, indexing="ij")                  # (H, W)
        centers = np.stack([cx, cy], axis=-1)[:, :, None, :]         # (H, W, 1, 2)
        half = sizes.astype(np.float64)[None, None, :, :] / 2        # (1, 1, A, 2)
        boxes = np.concatenate([centers - half, centers + half], axis=-1)
        out.append(boxes.reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def grid_sizes(strides: Sequence[int], input_size: int) -> list[tuple[int, int]]:
    """``(H, W)`` of each output grid of a square input (strides divide it)."""
    for stride in strides:
        if input_size % stride:
            raise ValueError(f"input size {input_size} is not a multiple of stride {stride}")
    return [(input_size // stride, input_size // stride) for stride in strides]


def generated_anchor_sizes(strides: Sequence[int], anchor_scale: float = 4.0,
                           scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
                           ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> np.ndarray:
    """RetinaNet-style anchor sizes: per stride ``s``, ``anchor_scale * s * scale`` sides
    for each scale and aspect ratio ``h / w`` (area kept), sorted by area.

    The default gives RetinaNet's 9 anchors per level (sides 32 to 50.8 at stride 8, 64
    to 101.6 at 16, 128 to 203.2 at 32). Each level's anchors stay together after the
    sort (the largest anchor of a level is smaller than the smallest of the next
    when ``max(scales) < 2``), so :func:`level_anchors` gives them back per level.

    Returns:
        ``(len(strides) * len(scales) * len(ratios), 2)`` float32 ``(w, h)``.
    """
    sizes = []
    for stride in sorted(strides):
        for scale in scales:
            side = anchor_scale * stride * scale
            for ratio in ratios:
                sizes.append((side / np.sqrt(ratio), side * np.sqrt(ratio)))
    sizes = np.asarray(sizes, np.float64)
    order = np.lexsort((sizes[:, 0], np.round(sizes[:, 0] * sizes[:, 1], 6)))
    return sizes[order].astype(np.float32)
