"""Time TransPose's DARK decoding: upstream's `get_final_preds` (a Python loop over people and
joints) vs ours (vectorised over the batch), on the same heatmaps, side by side.

    OMPIPE_UPSTREAM_TRANSPOSE=/path/to/TransPose python benchmarks/bench_transpose_decode.py [--people 64]

Upstream's function comes from a patched checkout made from OMPIPE_UPSTREAM_TRANSPOSE (a clone
or mirror). Both must give the same confidences and keypoints within 1e-4 heatmap px (float32
Taylor steps); only the times are compared.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np

from om_pipeline.models import transpose
from om_pipeline.models.transpose_postprocess import final_preds
from om_pipeline.testing.upstream import patched_upstream


def heatmaps(rng, people: int) -> np.ndarray:
    """Gaussian peaks at random places on a little noise: what a trained model's output looks like."""
    ys, xs = np.mgrid[0:64, 0:48]
    maps = rng.random((people, 17, 64, 48), dtype=np.float32) * 0.01
    centers = rng.uniform([4, 4], [60, 44], (people, 17, 2))
    maps += np.exp(-((ys - centers[..., :1, None]) ** 2 + (xs - centers[..., 1:, None]) ** 2) / 8).astype(np.float32)
    return maps


def best_of(repeat: int, function) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=64, help="heatmaps per batch (the guide's largest bs is 64)")
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    source = os.environ.get("OMPIPE_UPSTREAM_TRANSPOSE")
    if not source:
        sys.exit("set OMPIPE_UPSTREAM_TRANSPOSE to a TransPose clone or mirror: upstream's get_final_preds is the reference")
    rng = np.random.default_rng(0)
    maps = heatmaps(rng, options.people)
    centers = rng.uniform(50, 600, (options.people, 2)).astype(np.float32)
    scales = rng.uniform(0.1, 3, (options.people, 2)).astype(np.float32)
    sys.modules.setdefault("json_tricks", types.SimpleNamespace(dump=json.dump, load=json.load))  # only imported by lib/
    with tempfile.TemporaryDirectory() as workdir, \
            transpose.upstream_modules(patched_upstream("transpose", source, Path(workdir) / "TransPose")), \
            warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # upstream's np.matrix
        get_final_preds = importlib.import_module("core.inference").get_final_preds
        config = types.SimpleNamespace(TEST=types.SimpleNamespace(BLUR_KERNEL=11))
        want, want_scores = get_final_preds(config, maps.copy(), centers, scales)
        got, got_scores = final_preds(maps, centers, scales, 11)
        assert np.array_equal(got_scores, want_scores)
        pixel = (200 * scales[:, 0].astype(np.float64) - 1) / 47
        assert (np.abs(got - want).max(axis=2) / pixel[:, None]).max() < 1e-4
        upstream_ms = best_of(options.repeat, lambda: get_final_preds(config, maps.copy(), centers, scales))
    ours_ms = best_of(options.repeat, lambda: final_preds(maps, centers, scales, 11))
    print(f"DARK decoding of {options.people} people x 17 joints (64x48 heatmaps, blur 11), best of {options.repeat}")
    print(f"upstream get_final_preds {upstream_ms:.1f} ms, ours {ours_ms:.1f} ms -> {upstream_ms / ours_ms:.1f}x")


if __name__ == "__main__":
    main()
