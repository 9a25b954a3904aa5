"""Streaming mode: the same plugins and batching as the files mode, in memory: the same metric
to the last digit, and not one input .bin written."""
from __future__ import annotations

import json

import pytest


# 12 samples: at bs 8 the last batch is padded in both modes; at bs 2 the stream's 3 ring slots
# are each reused, so a slot refilled too early would change the metric.
@pytest.mark.parametrize("backend,workers,bs", [("onnxruntime", "2", "8"), ("ais_bench", "0", "8"), ("onnxruntime", "2", "2")])
def test_stream_and_files_mode_give_the_same_metric(ompipe, toy, tmp_path, backend, workers, bs):
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--backend", backend,
              "--bs", bs)
    files = ompipe(*common)
    assert files.code == 0, files.err
    inputs = tmp_path / "work/toy/inputs"
    written = sorted(inputs.rglob("*.bin"))
    assert len(written) == 12
    for path in written:
        path.unlink()  # the stream must not need them (nor write any)
    stream = ompipe(*common, "--stream", "--workers", workers)  # a pool, or in this process
    assert stream.code == 0, stream.err
    assert not list(inputs.rglob("*.bin"))
    tool = "onnxruntime" if backend == "onnxruntime" else "ais_bench"
    files_metrics = json.loads((tmp_path / f"work/toy/results/toy_{tool}_bs{bs}.json").read_text())["metrics"]
    stream_results = json.loads((tmp_path / f"work/toy/results/toy_{tool}_bs{bs}_stream.json").read_text())
    assert stream_results["mode"] == "stream"
    assert stream_results["metrics"] == files_metrics  # exactly, not approximately
    again = ompipe(*common, "--stream")
    assert "RUN " not in again.out.split("stage ")[1]
