"""`ompipe stage transpose atc` and `ompipe run transpose` with upstream's real network (random
weights) on a tiny COCO keypoint set: the fake toolchain (atc + two ais_bench runs) and the ONNX
Runtime backend, to an AP. Needs an upstream clone or mirror: OMPIPE_UPSTREAM_TRANSPOSE (skips
without; test_transpose_stand_in.py runs the same commands in CI with a stand-in network)."""
from __future__ import annotations

import json
import os

import pytest

from om_pipeline.data.transpose_synth import synthesize
from om_pipeline.testing.dry_run import closing_table
from test_transpose_stand_in import direct_metrics  # this directory is on sys.path (pytest's rootdir imports)

UPSTREAM = os.environ.get("OMPIPE_UPSTREAM_TRANSPOSE")
pytestmark = [pytest.mark.upstream, pytest.mark.skipif(not UPSTREAM, reason="set OMPIPE_UPSTREAM_TRANSPOSE to a TransPose clone or mirror")]


def test_stage_atc_builds_the_om_and_nothing_else(ompipe, tmp_path):
    result = ompipe("stage", "transpose", "atc", "--bs", "4", "--source", UPSTREAM, "--weights", "random",
                    "--toolchain", "fake", "--workdir", "work")
    assert result.code == 0, result.err
    ran = {stage for stage, status in closing_table(result.out).items() if status == "RUN"}
    assert ran == {"clone", "patch", "weights", "export-bs4-ascend", "simplify-bs4-ascend", "atc-bs4-ascend"}
    assert (tmp_path / "work/transpose/om/transpose_bs4.om").is_file()


@pytest.mark.parametrize("backend", ["ais_bench", "onnxruntime"])
def test_transpose_runs_to_an_ap_then_is_cached(ompipe, tmp_path, backend):
    data = synthesize(tmp_path / "coco", images=5, seed=1)
    # --to eval: the perf stage's 100 loops of the real network on a CPU take a minute
    args = ("run", "transpose", "--bs", "4", "--source", UPSTREAM, "--weights", "random", "--toolchain", "fake", "--data", data,
            "--limit", "8", "--backend", backend, "--workdir", "work", "--to", "eval")
    first = ompipe(*args)
    assert first.code == 0, first.err
    results = json.loads((tmp_path / f"work/transpose/results/transpose_{backend}_bs4.json").read_text())
    assert results["random_weights"] and results["samples"] == 8
    assert results["metrics"]["instances"] == 8
    target = "ascend" if backend == "ais_bench" else "onnxruntime"
    assert results["metrics"] == pytest.approx(direct_metrics(tmp_path / "work/transpose", target, data, 8), abs=1e-6)
    compare = json.loads((tmp_path / f"work/transpose/results/compare_{backend}_bs4.json").read_text())
    assert all(stats["output"]["cosine"] > 0.9999 for stats in compare["stats"].values())
    second = ompipe(*args)
    assert second.code == 0
    assert "RUN" not in closing_table(second.out).values()
