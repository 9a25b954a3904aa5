"""Streaming mode: the same plugins and batching as the files mode, in memory: the same metric
to the last digit, and not one input .bin written."""
from __future__ import annotations

import json

import pytest

from om_pipeline.stream import bounded_imap


@pytest.mark.parametrize("backend,workers", [("onnxruntime", "2"), ("ais_bench", "0")])
def test_stream_and_files_mode_give_the_same_metric(ompipe, toy, tmp_path, backend, workers):
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--backend", backend,
              "--bs", "8")  # 12 samples at bs 8: the last batch is padded in both modes
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
    files_metrics = json.loads((tmp_path / f"work/toy/results/toy_{tool}_bs8.json").read_text())["metrics"]
    stream_results = json.loads((tmp_path / f"work/toy/results/toy_{tool}_bs8_stream.json").read_text())
    assert stream_results["mode"] == "stream"
    assert stream_results["metrics"] == files_metrics  # exactly, not approximately
    again = ompipe(*common, "--stream")
    assert "RUN " not in again.out.split("stage ")[1]


def test_bounded_imap_keeps_order_and_bounds_the_work_ahead():
    submitted = []

    class Pool:
        def apply_async(self, function, args):
            submitted.append(args[0])

            class Result:
                def get(self_inner):
                    return function(*args)
            return Result()

    consumed = []
    for value in bounded_imap(Pool(), lambda x: x * 10, range(10), ahead=3):
        assert len(submitted) - len(consumed) <= 3
        consumed.append(value)
    assert consumed == [x * 10 for x in range(10)]
