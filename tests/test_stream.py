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


class MergeableTop1:
    """The toy's top-1, kept per sample so that partial states merge in the dataset's order (as
    the evaluators' state/merge do); each sample notes the process that scored it."""

    def __init__(self):
        self.samples: dict[str, tuple] = {}

    def add(self, sample, outputs):
        import os

        self.samples[sample.id] = (int(outputs[0].argmax() == sample.meta["label"]), float(outputs[0].max()), os.getpid())

    def state(self):
        return {"samples": self.samples}

    def merge(self, states, order):
        merged = {key: value for state in states for key, value in state["samples"].items()}
        self.samples = {sample_id: merged[sample_id] for sample_id in order if sample_id in merged}

    def result(self):
        values = list(self.samples.values())
        return {"top1": sum(v[0] for v in values) / len(values), "max_logit_sum": sum(v[1] for v in values),
                "processes": len({v[2] for v in values})}


def test_a_mergeable_evaluator_runs_in_worker_processes_with_the_same_metric(ompipe, toy, tmp_path, monkeypatch):
    import os

    from om_pipeline.testing import toy_plugin

    monkeypatch.setattr(toy_plugin, "evaluator", lambda data, params: MergeableTop1())
    monkeypatch.setattr(toy_plugin, "EVALUATE_IN_WORKERS", True, raising=False)
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--backend", "onnxruntime", "--bs", "2")
    assert ompipe(*common).code == 0
    files = json.loads((tmp_path / "work/toy/results/toy_onnxruntime_bs2.json").read_text())["metrics"]
    for workers, processes in (("2", 2), ("0", 1)):
        for record in (tmp_path / "work/toy/.ompipe/stages").glob("eval-*stream.json"):
            record.unlink()  # the stream's eval reruns, nothing else
        stream = ompipe(*common, "--stream", "--workers", workers)
        assert stream.code == 0, stream.err
        metrics = json.loads((tmp_path / "work/toy/results/toy_onnxruntime_bs2_stream.json").read_text())["metrics"]
        assert metrics["processes"] == processes
        assert {k: v for k, v in metrics.items() if k != "processes"} == {k: v for k, v in files.items() if k != "processes"}
    assert files["processes"] == 1 and os.getpid()  # files mode scores here


def test_the_models_queue_is_sized_by_memory_and_never_longer_than_the_run():
    """queued_batches: up to MAX_QUEUED_BATCHES batches of NPU work ahead of the evaluator, fewer
    when twice that many batches of inputs would pass RING_BYTES, never fewer than 2 (one running,
    one waiting), never more than the run has."""
    from types import SimpleNamespace

    from om_pipeline import stream
    from om_pipeline.recipe import TensorSpec

    def run(shape, bs=4, views=(None,)):
        return SimpleNamespace(bs=bs, views=views, recipe=SimpleNamespace(model=SimpleNamespace(inputs=[TensorSpec(name="x", shape=shape)])))

    assert stream.queued_batches(run([3, 256, 192], views=("normal", "flip")), 10_000) == stream.MAX_QUEUED_BATCHES
    big = run([3, 1024, 2048], bs=8)  # 201 MB a batch
    assert stream.queued_batches(big, 10_000) == 2
    medium = run([3, 512, 1024], bs=8)  # 50 MB a batch: 5 batches of 100 MB fit in 512 MiB
    assert stream.queued_batches(medium, 10_000) == stream.RING_BYTES // (2 * 8 * 3 * 512 * 1024 * 4) == 5
    assert stream.queued_batches(run([3, 8, 8]), 5) == 2  # 2 batches in all
    assert stream.queued_batches(run([3, 8, 8]), 3) == 1
