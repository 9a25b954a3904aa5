"""`--executor ray` on a local Ray cluster with the fake toolchain: the shared stages once, one
Ray task per shard, each seeing exactly one NPU (Ray's ASCEND_RT_VISIBLE_DEVICES), merged to
the serial run's metric. Skipped without Ray (`pip install 'om-pipeline[ray]'`); the version
refusal is tested without it."""
from __future__ import annotations

import json
import sys
import types

import pytest

from om_pipeline import ray_executor
from om_pipeline.errors import UserError
from om_pipeline.testing.shards import metrics_json


def test_ray_older_than_the_one_that_sets_ascend_rt_visible_devices_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(__version__="2.9.3"))
    with pytest.raises(UserError, match="Ray 2.9.3 is too old.*ASCEND_VISIBLE_DEVICES, which the ACL runtime ignores"):
        ray_executor.require_ray()
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(__version__="2.10.0"))
    assert ray_executor.require_ray().__version__ == "2.10.0"


def test_tasks_ask_ray_for_one_npu_or_for_cpus():
    from om_pipeline.runtimes import RUNTIMES

    assert ray_executor.task_resources(RUNTIMES["ais_bench"].ray_resource) == {"resources": {"NPU": 1}, "num_cpus": 0}
    assert ray_executor.task_resources(RUNTIMES["msame"].ray_resource) == {"resources": {"NPU": 1}, "num_cpus": 0}
    assert ray_executor.task_resources(RUNTIMES["onnxruntime"].ray_resource) == {"num_cpus": 1}


def start_cluster(**env_vars: str):
    """A local cluster with 2 CPUs and 2 NPUs; `env_vars` reach every task (Ray's runtime_env)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, resources={"NPU": 2}, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env_vars} if env_vars else None)
    return ray


@pytest.fixture
def local_cluster():
    yield start_cluster()
    pytest.importorskip("ray").shutdown()


@pytest.mark.ray
def test_shards_as_ray_tasks_see_one_npu_each_and_merge_to_the_serial_metric(local_cluster, ompipe, toy, tmp_path):
    args = ("--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake")
    serial = ompipe("run", "toy", *args, "--workdir", "serial", "--to", "eval")
    assert serial.code == 0, serial.err
    result = ompipe("run", "toy", *args, "--workdir", "work", "--executor", "ray")
    assert result.code == 0, result.err + result.out
    records = [json.loads((tmp_path / f"work/toy/shards/{i}-of-2/device.json").read_text()) for i in range(2)]
    assert sorted(r["visible_devices"] for r in records) == ["0", "1"]  # one NPU each, as Ray assigned them
    assert all(r["device"] == 0 for r in records)  # inside the task its NPU is device 0
    for i in range(2):
        infer = json.loads((tmp_path / f"work/toy/shards/{i}-of-2/.ompipe/stages/infer-bs4-ais_bench.json").read_text())
        assert infer["argv"][-2:] == ["--device", "0"]
    assert metrics_json(tmp_path / "work/toy/results/toy_ais_bench_bs4.json") == \
        metrics_json(tmp_path / "serial/toy/results/toy_ais_bench_bs4.json")


@pytest.mark.ray
def test_a_task_that_fails_once_is_retried_and_one_that_fails_twice_is_named(ompipe, toy, tmp_path):
    """Each shard's first ais_bench finds its device failing (the fake's OMPIPE_FAKE_NPU_FLAKY):
    Ray runs the task again and the merge equals the serial run; with every device failing
    (OMPIPE_FAKE_NPU_COUNT=0) both tries fail and the shards are named."""
    args = ("--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake")
    serial = ompipe("run", "toy", *args, "--workdir", "serial", "--to", "eval")
    assert serial.code == 0, serial.err
    ray = start_cluster(OMPIPE_FAKE_NPU_FLAKY=str(tmp_path / "flaky"))
    try:
        result = ompipe("run", "toy", *args, "--workdir", "work", "--executor", "ray")
    finally:
        ray.shutdown()
    assert result.code == 0, result.err + result.out
    assert len(list((tmp_path / "flaky").iterdir())) == 2  # each shard's first try failed
    assert metrics_json(tmp_path / "work/toy/results/toy_ais_bench_bs4.json") == \
        metrics_json(tmp_path / "serial/toy/results/toy_ais_bench_bs4.json")
    ray = start_cluster(OMPIPE_FAKE_NPU_COUNT="0")
    try:
        failed = ompipe("run", "toy", *args, "--workdir", "broken", "--executor", "ray")
    finally:
        ray.shutdown()
    ours = failed.err[failed.err.index("error: "):]  # before it, Ray's own logging (its NPU probe's traceback)
    assert failed.code == 1 and "2 of 2 Ray tasks failed twice" in ours
    assert "shard 0/2" in ours and "shard 1/2" in ours and "Traceback" not in ours

