"""Time CenterNet's ctdet decoding: upstream (per image, as the Ascend guide's
CenterNet_postprocess_s1 does it: torch sigmoid, `ctdet_decode`, `CtdetDetector.post_process`,
`merge_outputs`) vs ours (NumPy, the whole batch at once: `centernet.decode_batch`).

    OMPIPE_UPSTREAM_CENTERNET=<clone or mirror> PYTHONPATH=src python benchmarks/bench_centernet_decode.py [--bs 1,8,32] [--repeat 3]

Upstream's code comes from a patched checkout of the pinned commit made from
OMPIPE_UPSTREAM_CENTERNET (or --source); without one only our times are printed.
Outputs are 80 x 128 x 128 heatmaps like the network's at 512 x 512, in the regime a trained
network produces (low logits, a few hundred clear peaks per image); both sides must return the
same boxes and classes before anything is timed. Times are the best of --repeat runs after a
warm-up; the
ratio is upstream / ours, side by side in one run (no assertion on time).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from om_pipeline.models import centernet
from om_pipeline.models import centernet_postprocess as post
from om_pipeline.plugin import Sample

SIZES = ((480, 640), (640, 427), (427, 640), (500, 375), (612, 612))  # (height, width), COCO-like


def outputs(bs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    hm = rng.normal(-6.0, 1.5, (bs, 80, 128, 128)).astype(np.float32)
    for i in range(bs):  # a few hundred objects-to-be
        n = 300
        hm[i, rng.integers(0, 80, n), rng.integers(0, 128, n), rng.integers(0, 128, n)] += rng.uniform(3, 9, n).astype(np.float32)
    wh = rng.uniform(1, 60, (bs, 2, 128, 128)).astype(np.float32)
    reg = rng.uniform(0, 1, (bs, 2, 128, 128)).astype(np.float32)
    samples = [Sample(f"image_{i}", None, {"image_id": i, "height": SIZES[i % len(SIZES)][0], "width": SIZES[i % len(SIZES)][1]})
               for i in range(bs)]
    return hm, wh, reg, samples


def ours(hm, wh, reg, samples, settings):
    return list(centernet.decode_batch(hm, wh, reg, samples, settings))


def theirs(upstream, hm, wh, reg, samples):
    from om_pipeline.models.centernet_upstream import upstream_postprocess

    results = []
    for i, sample in enumerate(samples):
        center, scale = post.center_and_scale(sample.meta["height"], sample.meta["width"])
        meta = {"c": center, "s": scale, "out_height": 128, "out_width": 128}
        results.append(upstream_postprocess(upstream, hm[i:i + 1], wh[i:i + 1], reg[i:i + 1], meta))
    return results


def same(our_results, their_results) -> None:
    for (boxes, scores, classes), per_class in zip(our_results, their_results):
        order = np.argsort(classes, kind="stable")
        want = np.concatenate([per_class[c + 1] for c in range(80)])
        want_classes = np.concatenate([np.full(len(per_class[c + 1]), c) for c in range(80)])
        assert np.array_equal(classes[order], want_classes), "classes differ"
        assert np.allclose(boxes[order], want[:, :4], rtol=0, atol=1e-3), "boxes differ"
        assert np.allclose(scores[order], want[:, 4], rtol=0, atol=1e-6), "scores differ"


def best(function, repeat: int) -> float:
    function()  # warm-up (first calls pay for allocations and torch's thread pool)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bs", default="1,8,32", help="batch sizes (comma-separated)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--source", default=os.environ.get("OMPIPE_UPSTREAM_CENTERNET"), help="upstream clone or mirror")
    parser.add_argument("--threads", type=int, help="torch and OpenCV threads (default: theirs)")
    args = parser.parse_args()
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    settings = centernet.Settings()
    with ExitStack() as stack:
        upstream = None
        if args.source:
            from om_pipeline.models.centernet_upstream import upstream_ctdet
            from om_pipeline.testing.upstream import patched_upstream

            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            upstream = stack.enter_context(upstream_ctdet(patched_upstream("centernet", args.source, workdir / "CenterNet")))
            print(f"upstream: patched checkout of {args.source}; torch threads {torch.get_num_threads()}")
        else:
            print("upstream: not available (set OMPIPE_UPSTREAM_CENTERNET or --source); ours only")
        print(f"{'bs':>4}  {'upstream ms/img':>16}  {'ours ms/img':>12}  {'upstream/ours':>14}")
        for bs in (int(b) for b in args.bs.split(",")):
            hm, wh, reg, samples = outputs(bs)
            our_time = best(lambda: ours(hm, wh, reg, samples, settings), args.repeat) / bs * 1000
            if upstream is None:
                print(f"{bs:>4}  {'-':>16}  {our_time:>12.2f}  {'-':>14}")
                continue
            same(ours(hm, wh, reg, samples, settings), theirs(upstream, hm, wh, reg, samples))
            their_time = best(lambda: theirs(upstream, hm, wh, reg, samples), args.repeat) / bs * 1000
            print(f"{bs:>4}  {their_time:>16.2f}  {our_time:>12.2f}  {their_time / our_time:>13.2f}x")


if __name__ == "__main__":
    main()
