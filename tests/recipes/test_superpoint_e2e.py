"""`ompipe run superpoint` through every stage on a synthetic HPatches set, with random
weights: the fake toolchain (atc + ais_bench) and the ONNX Runtime backend; a second run is all
CACHED. Needs an upstream checkout or mirror: OMPIPE_UPSTREAM_SUPERPOINT (skips without)."""
from __future__ import annotations

import json
import os

import pytest

from om_pipeline.data.synth_hpatches import synthesize
from om_pipeline.testing.shards import merged_metrics, metrics_json, run_shards

UPSTREAM = os.environ.get("OMPIPE_UPSTREAM_SUPERPOINT")
pytestmark = [pytest.mark.upstream,
              pytest.mark.skipif(not UPSTREAM, reason="set OMPIPE_UPSTREAM_SUPERPOINT to a pytorch-superpoint clone or mirror")]


@pytest.mark.parametrize("backend", ["ais_bench", "onnxruntime"])
def test_superpoint_runs_all_stages_then_is_cached(ompipe, tmp_path, backend):
    data = synthesize(tmp_path / "hpatches", sequences=2, seed=1)
    args = ("run", "superpoint", "--source", UPSTREAM, "--weights", "random", "--toolchain", "fake", "--data", data,
            "--limit", "10", "--backend", backend, "--workdir", "work")
    first = ompipe(*args)
    assert first.code == 0, first.err
    results = json.loads((tmp_path / f"work/superpoint/results/superpoint_{backend}_bs1.json").read_text())
    assert results["random_weights"] and results["samples"] == 10
    assert results["metrics"]["pairs"] == 8 and 0 <= results["metrics"]["nn_map"] <= 1
    second = ompipe(*args)
    assert second.code == 0
    assert "RUN " not in second.out.split("stage ")[1]  # the closing table holds no RUN row
    # 3 shards + merge (a sequence's images stay together): the unsharded metrics JSON, digit for digit
    results_json = tmp_path / f"work/superpoint/results/superpoint_{backend}_bs1.json"
    expected = metrics_json(results_json)
    run_shards(ompipe, "superpoint", args[2:], tmp_path / "work/superpoint", order=(2, 0, 1))
    assert merged_metrics(ompipe, "superpoint", args[2:], results_json) == expected
