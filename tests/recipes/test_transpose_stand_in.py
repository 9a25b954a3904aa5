"""The TransPose recipe through the real runner without upstream: a stand-in checkout (our own
tiny network behind upstream's `lib/models/transpose_r.py:get_pose_net` and the experiment
YAML path) replaces yangsenius/TransPose, so CI runs `ompipe stage transpose atc` and
`ompipe run transpose` with the fake toolchain and with ONNX Runtime: the recipe's argv, the
fusion switch file beside the recipe, the two views, the evaluator and the metric. With
upstream itself: test_transpose_e2e.py (OMPIPE_UPSTREAM_TRANSPOSE)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest

from om_pipeline.data.transpose_synth import synthesize
from om_pipeline.plugin import settings_from_params
from om_pipeline.recipe import find_recipe
from om_pipeline.testing.atc_gate import gate_failures
from om_pipeline.testing.dry_run import closing_table
from om_pipeline.testing.shards import merged_metrics, run_shards

STAND_IN_MODEL = '''\
import torch
from torch import nn


class StandIn(nn.Module):
    """Not TransPose: its input and output shapes (N x 3 x 256 x 192 -> N x 17 x 64 x 48)."""

    def __init__(self, cfg):
        super().__init__()
        self.pool = nn.AvgPool2d(4)
        self.head = nn.Conv2d(3, cfg.MODEL.NUM_JOINTS, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.head(self.pool(x)))


def get_pose_net(cfg, is_train, **kwargs):
    return StandIn(cfg)
'''

STAND_IN_EXPERIMENT = """\
MODEL:
  NAME: transpose_r
  IMAGE_SIZE: [192, 256]
  HEATMAP_SIZE: [48, 64]
  NUM_JOINTS: 17
"""


def git(repo, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """(checkout, recipes dir): a git repository laid out like upstream, and a copy of the shipped
    recipe pinned to its commit, without the patch (it is for upstream's files)."""
    root = tmp_path_factory.mktemp("stand-in")
    repo = root / "TransPose"
    (repo / "lib" / "models").mkdir(parents=True)
    (repo / "experiments" / "coco" / "transpose_r").mkdir(parents=True)
    (repo / "lib" / "models" / "__init__.py").write_text("")
    (repo / "lib" / "models" / "transpose_r.py").write_text(STAND_IN_MODEL)
    (repo / "experiments" / "coco" / "transpose_r" / "TP_R_256x192_d256_h1024_enc3_mh8.yaml").write_text(STAND_IN_EXPERIMENT)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "stand-in")
    commit = git(repo, "rev-parse", "HEAD")
    shipped = find_recipe("transpose")
    text = shipped.text.replace("dab9007b6f61c9c8dce04d61669a04922bbcd148", commit)
    text, removed = re.subn(r"\n  patch:\n(    .*\n)+", "\n", text)
    assert removed == 1
    recipes = root / "recipes"
    recipes.mkdir()
    (recipes / "transpose.yaml").write_text(text)
    shutil.copytree(shipped.directory / "transpose", recipes / "transpose")
    return repo, recipes


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("coco"), images=5, seed=2)


def test_stage_atc_runs_only_what_atc_needs(ompipe, stand_in, tmp_path):
    repo, recipes = stand_in
    result = ompipe("stage", "transpose", "atc", "--bs", "4", "--toolchain", "fake", "--source", repo, "--weights", "random",
                    "--recipes", recipes, "--workdir", "work")
    assert result.code == 0, result.err
    table = closing_table(result.out)
    assert {stage for stage, status in table.items() if status == "RUN"} == {
        "clone", "weights", "export-bs4-ascend", "simplify-bs4-ascend", "atc-bs4-ascend"}
    assert all(table[stage] == "SKIPPED" for stage in table if stage.split("-")[0] in ("dataset", "preprocess", "infer", "eval", "perf", "compare"))
    work = tmp_path / "work" / "transpose"
    assert (work / "om" / "transpose_bs4.om").is_file()
    exported = onnx.load(work / "onnx" / "transpose_bs4.ascend.onnx")
    assert exported.opset_import[0].version == 11
    assert [i.name for i in exported.graph.input] == ["input"] and [o.name for o in exported.graph.output] == ["output"]
    assert [d.dim_value for d in exported.graph.input[0].type.tensor_type.shape.dim] == [4, 3, 256, 192]
    assert gate_failures(onnx.load(work / "onnx" / "transpose_bs4.ascend.sim.onnx"), "transpose") == []  # every bs's flags
    log = (work / "logs" / "atc-bs4-ascend.log").read_text()
    assert f"--fusion_switch_file={recipes / 'transpose' / 'fusion_switch.cfg'}" in log and "--log=error" in log


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_checkpoint_given_with_weights_is_loaded_and_recorded(ompipe, stand_in, tmp_path, wrapped):
    """The release asset has no published checksum: --weights PATH is recorded (sha256), and the
    export loads it strictly, as a plain state dict or as {'state_dict': {'module.' + key}}."""
    import hashlib

    import torch
    from onnx import numpy_helper

    repo, recipes = stand_in
    torch.manual_seed(42)
    state = {"head.weight": torch.randn(17, 3, 3, 3), "head.bias": torch.randn(17)}
    checkpoint = tmp_path / "tp_r_256x192_enc3_d256_h1024_mh8.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrapped else state, checkpoint)
    result = ompipe("stage", "transpose", "export", "--bs", "1", "--source", repo, "--weights", checkpoint,
                    "--recipes", recipes, "--workdir", "work")
    assert result.code == 0, result.err
    work = tmp_path / "work" / "transpose"
    record = json.loads((work / "weights.json").read_text())
    assert record["mode"] == "file" and record["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    (onnx_file,) = (work / "onnx").glob("transpose_bs1.*.onnx")  # the target follows the backend
    exported = {t.name: numpy_helper.to_array(t) for t in onnx.load(onnx_file).graph.initializer}
    assert np.array_equal(exported["head.weight"], state["head.weight"].numpy())
    torch.save({"head.weight": torch.zeros(1)}, checkpoint)  # does not fit: a clear error, not random weights
    failed = ompipe("stage", "transpose", "export", "--bs", "1", "--source", repo, "--weights", checkpoint,
                    "--recipes", recipes, "--workdir", "work")
    assert failed.code == 1 and "does not fit TransPose-R" in failed.err


def direct_metrics(work, target: str, coco, limit: int) -> dict:
    """The metrics computed here, outside the runner: the plugin's preprocessing, ONNX Runtime
    on the exported graph one sample at a time (the batch filled with copies of it), the
    plugin's evaluator. No batching across samples, no .bin files, no fake tools."""
    import onnxruntime

    from om_pipeline.models import transpose

    params = settings_from_params(transpose.Settings, find_recipe("transpose").recipe.params)
    (graph,) = (work / "onnx").glob(f"transpose_bs4.{target}.sim.onnx") or (work / "onnx").glob(f"transpose_bs4.{target}.onnx")
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    evaluator = transpose.evaluator(coco, params)
    for sample in transpose.list_samples(coco, params)[:limit]:
        views = transpose.preprocess(sample, params)
        evaluator.add(sample, {view: [session.run(None, {"input": np.repeat(array[None], 4, axis=0)})[0][0]
                                      for array in arrays] for view, arrays in views.items()})
    return evaluator.result()


def test_run_reaches_the_directly_computed_ap_with_both_tools_then_is_cached(ompipe, stand_in, coco, tmp_path):
    repo, recipes = stand_in
    work = tmp_path / "work" / "transpose"
    metrics = {}
    for backend, tool, target in (("ais_bench", "ais_bench", "ascend"), ("onnxruntime", "onnxruntime", "onnxruntime")):
        args = ("run", "transpose", "--bs", "4", "--source", repo, "--weights", "random", "--toolchain", "fake", "--data", coco,
                "--limit", "8", "--backend", backend, "--recipes", recipes, "--workdir", "work")
        first = ompipe(*args)
        assert first.code == 0, first.err
        results = json.loads((work / "results" / f"transpose_{tool}_bs4.json").read_text())
        assert results["random_weights"] and results["samples"] == 8
        metrics[tool] = results["metrics"]
        assert metrics[tool]["instances"] == 8 and metrics[tool]["images"] == 4
        direct = direct_metrics(work, target, coco, 8)
        assert metrics[tool] == pytest.approx(direct, abs=1e-6) and 0 < direct["ap"] < 1  # 0.103 when written
        for view in ("normal", "flip"):
            assert len(list((work / f"inputs/{view}/input").glob("*.bin"))) == 8
            assert len(list((work / f"infer/{tool}_bs4/{view}").glob("*_0.bin"))) == 8
        second = ompipe(*args)
        assert second.code == 0, second.err
        assert "RUN" not in closing_table(second.out).values()
        streamed = ompipe(*args, "--stream", "--to", "eval")  # in memory, no .bin files: the same metric
        assert streamed.code == 0, streamed.err
        assert json.loads((work / "results" / f"transpose_{tool}_bs4_stream.json").read_text())["metrics"] == metrics[tool]
        # 3 shards (both views each) + merge: the unsharded keypoint AP, digit for digit, on the same model
        run_shards(ompipe, "transpose", args[2:], work, order=(2, 1, 0))
        assert merged_metrics(ompipe, "transpose", args[2:], work / "results" / f"transpose_{tool}_bs4.json") == \
            json.dumps(metrics[tool], sort_keys=True)
    # The fake .om runs the ascend graph with ONNX Runtime: both tools' metrics agree (same network and weights).
    assert metrics["ais_bench"] == pytest.approx(metrics["onnxruntime"], abs=1e-6)
    normal = np.fromfile(next((work / "inputs/normal/input").glob("*.bin")), dtype=np.float32).reshape(3, 256, 192)
    flipped = np.fromfile(next((work / "inputs/flip/input").glob("*.bin")), dtype=np.float32).reshape(3, 256, 192)
    assert np.array_equal(flipped, normal[:, :, ::-1])


@pytest.mark.ray
def test_ray_executor_on_cpus_gives_the_serial_ap(ompipe, stand_in, coco, tmp_path):
    """--executor ray with ONNX Runtime: one CPU task per shard on a local cluster, merged."""
    from om_pipeline.testing.shards import metrics_json

    ray = pytest.importorskip("ray")
    repo, recipes = stand_in
    args = ("run", "transpose", "--bs", "4", "--source", repo, "--weights", "random", "--toolchain", "fake", "--data", coco,
            "--limit", "8", "--backend", "onnxruntime", "--recipes", recipes, "--to", "eval")
    serial = ompipe(*args, "--workdir", "serial")
    assert serial.code == 0, serial.err
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = ompipe(*args, "--workdir", "work", "--executor", "ray")
    finally:
        ray.shutdown()
    assert distributed.code == 0, distributed.err + distributed.out
    assert json.loads((tmp_path / "work/transpose/results/transpose_onnxruntime_bs4.json").read_text())["shards"]["count"] == 2
    assert metrics_json(tmp_path / "work/transpose/results/transpose_onnxruntime_bs4.json") == \
        metrics_json(tmp_path / "serial/transpose/results/transpose_onnxruntime_bs4.json")
