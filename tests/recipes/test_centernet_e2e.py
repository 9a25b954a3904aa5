"""`ompipe run centernet --bs 8` through every stage up to the COCO AP on a generated
COCO-format set of 8 images, with random weights: the fake toolchain (atc + ais_bench; the fake
runs the standard-op twin of the DeformableConv2D graph) and the ONNX Runtime backend; a second
run is all CACHED. The perf stage is left out (`--to eval`): 20 loops of DLA-34 at bs 8 and
512x512 take minutes on a CPU. Needs an upstream checkout or mirror: OMPIPE_UPSTREAM_CENTERNET
(skips without)."""
from __future__ import annotations

import json

import pytest

from om_pipeline.data.centernet_tinycoco import write_tiny_coco
from om_pipeline.testing.shards import merged_metrics, metrics_json, run_shards
from om_pipeline.testing.upstream import upstream_source

UPSTREAM = upstream_source("centernet")
pytestmark = [pytest.mark.upstream, pytest.mark.skipif(not UPSTREAM, reason="set OMPIPE_UPSTREAM_CENTERNET to a CenterNet clone or mirror")]


@pytest.mark.parametrize("backend", ["ais_bench", "onnxruntime"])
def test_centernet_runs_to_an_ap_then_is_cached(ompipe, tmp_path, backend):
    data = write_tiny_coco(tmp_path / "coco", images=10, seed=2)
    args = ("run", "centernet", "--bs", "8", "--source", UPSTREAM, "--weights", "random", "--toolchain", "fake",
            "--data", data, "--limit", "8", "--backend", backend, "--to", "eval", "--workdir", "work")
    first = ompipe(*args)
    assert first.code == 0, first.err
    results = json.loads((tmp_path / f"work/centernet/results/eval_{backend}_bs8.json").read_text())
    assert results["samples"] == 8 and results["bs"] == 8
    metrics = results["metrics"]
    assert metrics["images"] == 8 and 0 <= metrics["ap"] <= 1 and set(metrics) >= {"ap", "ap50", "ap75", "ar100"}
    outputs = sorted(p.name for p in (tmp_path / f"work/centernet/infer/{backend}_bs8").glob("*.bin"))
    assert len(outputs) == 8 * 3 and outputs[:3] == ["000000000001_0.bin", "000000000001_1.bin", "000000000001_2.bin"]
    second = ompipe(*args)
    assert second.code == 0
    assert "RUN " not in second.out.split("stage ")[1]  # the closing table holds no RUN row
    # 3 shards + merge: the unsharded metrics JSON, digit for digit (shards in any order)
    results_json = tmp_path / f"work/centernet/results/centernet_{backend}_bs8.json"
    expected = metrics_json(results_json)
    run_shards(ompipe, "centernet", args[2:], tmp_path / "work/centernet", order=(0, 2, 1))
    assert merged_metrics(ompipe, "centernet", args[2:], results_json) == expected
