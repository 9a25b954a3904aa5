"""Time SuperPoint's grid NMS: upstream's `nms_fast` (a Python loop over candidates) vs ours.

    PYTHONPATH=src python benchmarks/bench_superpoint_nms.py [--repeat 5]

Upstream's function is imported from a patched checkout made from OMPIPE_UPSTREAM_SUPERPOINT (a
clone or mirror of upstream) when that is set; otherwise a transcription of its algorithm (same
data structures, same loop) stands in.
Heatmaps are 240x320 like the network's, in the two regimes it produces: a trained-looking one
(dustbin high, a few thousand candidates) and an untrained one (near-uniform: every pixel is a
candidate). Both implementations must return the same points; only the times are compared.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from om_pipeline.models.superpoint_postprocess import CELL, candidates, grid_nms, heatmap_from_semi

SHAPE = (240, 320)
RADIUS = 4
THRESHOLD = 0.015


def transcribed_nms_fast(in_corners: np.ndarray, H: int, W: int, dist_thresh: int):
    """Upstream's algorithm on its 3 x N layout: grid of 1 (pending) / -1 (kept) / 0, visited by
    falling confidence, each kept point zeroing its square; survivors sorted by confidence."""
    grid = np.zeros((H, W), dtype=int)
    inds = np.zeros((H, W), dtype=int)
    order = np.argsort(-in_corners[2, :])
    corners = in_corners[:, order]
    rounded = corners[:2, :].round().astype(int)
    for i in range(rounded.shape[1]):
        grid[rounded[1, i], rounded[0, i]] = 1
        inds[rounded[1, i], rounded[0, i]] = i
    pad = dist_thresh
    grid = np.pad(grid, ((pad, pad), (pad, pad)), mode="constant")
    for i in range(rounded.shape[1]):
        x, y = rounded[0, i] + pad, rounded[1, i] + pad
        if grid[y, x] == 1:
            grid[y - pad:y + pad + 1, x - pad:x + pad + 1] = 0
            grid[y, x] = -1
    keepy, keepx = np.where(grid == -1)
    out = corners[:, inds[keepy - pad, keepx - pad]]
    return out[:, np.argsort(-out[-1, :])], None


def upstream_nms_fast():
    source = os.environ.get("OMPIPE_UPSTREAM_SUPERPOINT")
    if not source:
        return transcribed_nms_fast, "transcription of upstream nms_fast"
    from om_pipeline.models.superpoint import upstream_modules
    from om_pipeline.testing.upstream import patched_upstream

    with tempfile.TemporaryDirectory() as workdir, upstream_modules(patched_upstream("superpoint", source, Path(workdir) / "pytorch-superpoint")):
        from models.model_wrap import SuperPointFrontend_torch
    # nms_fast uses no instance state; call it unbound.
    return (lambda corners, H, W, dist: SuperPointFrontend_torch.nms_fast(None, corners, H, W, dist)), f"upstream nms_fast ({source})"


def heatmap(seed: int, trained_like: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # An untrained network's logits barely differ, so its softmax sits near 1/65 = 0.0154,
    # just above the threshold: most pixels are candidates.
    spread = 1.0 if trained_like else 0.1
    semi = rng.normal(0.0, spread, size=(65, SHAPE[0] // CELL, SHAPE[1] // CELL)).astype(np.float32)
    if trained_like:
        semi[64] += 4.0
        rows, cols = np.nonzero(rng.random(semi.shape[1:]) < 0.5)
        semi[rng.integers(0, 64, len(rows)), rows, cols] += 7.0
    return heatmap_from_semi(semi)


def best_time(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the best time is shown")
    args = parser.parse_args()
    reference, label = upstream_nms_fast()
    print(f"reference: {label}; radius {RADIUS}, threshold {THRESHOLD}, {SHAPE[1]}x{SHAPE[0]}, best of {args.repeat}")
    print(f"{'heatmap':<14}{'candidates':>11}{'kept':>7}{'upstream ms':>13}{'ours ms':>10}{'speed-up':>10}")
    for name, trained_like in (("trained-like", True), ("untrained", False)):
        points = candidates(heatmap(0, trained_like), THRESHOLD)
        theirs = reference(points.T.copy(), SHAPE[0], SHAPE[1], RADIUS)[0].T
        ours = grid_nms(points, SHAPE, RADIUS)
        if not np.array_equal(np.sort(theirs, axis=0), np.sort(ours, axis=0)):
            raise SystemExit(f"{name}: the two NMS disagree; fix that before timing")
        upstream_s = best_time(lambda: reference(points.T.copy(), SHAPE[0], SHAPE[1], RADIUS), args.repeat)
        ours_s = best_time(lambda: grid_nms(points, SHAPE, RADIUS), args.repeat)
        print(f"{name:<14}{len(points):>11}{len(ours):>7}{upstream_s * 1e3:>13.1f}{ours_s * 1e3:>10.1f}{upstream_s / ours_s:>9.1f}x")


if __name__ == "__main__":
    main()
