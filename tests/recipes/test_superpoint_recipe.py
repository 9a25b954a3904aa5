"""SuperPoint recipe, link 1 of the chain (DESIGN.md section 4): for every batch size the guide
lists, the dry run shows the guide's atc and ais_bench commands, up to file locations."""
from __future__ import annotations

import pytest

from om_pipeline.data.synth_hpatches import synthesize
from om_pipeline.recipe import find_recipe
from om_pipeline.testing.dry_run import data_args, flags, planned_commands

GUIDE_BATCH_SIZES = [1, 4, 8, 16, 32, 64]


@pytest.fixture(scope="module")
def hpatches(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("hpatches"), sequences=1, seed=0)


def test_recipe_lists_the_guides_batch_sizes():
    recipe = find_recipe("superpoint").recipe
    assert recipe.batch_sizes == GUIDE_BATCH_SIZES
    assert recipe.reference.fps["Ascend310P3"] == {1: 2124, 4: 2437, 8: 2528, 16: 2515, 32: 2515, 64: 1787}
    assert {(r.metric, r.value) for r in recipe.reference.accuracy} >= {("nn_map", 0.806), ("repeatability", 0.63)}


@pytest.mark.parametrize("offline", [False, True], ids=["data", "offline"])
@pytest.mark.parametrize("bs", GUIDE_BATCH_SIZES)
def test_dry_run_shows_the_guides_commands(ompipe, hpatches, bs, offline, monkeypatch, tmp_path):
    result = ompipe("run", "superpoint", "--dry-run", "--bs", bs, "--toolchain", "fake",
                    *data_args(offline, hpatches, monkeypatch, tmp_path), "--workdir", "work")
    assert result.code == 0, result.err
    atc, infer, perf = planned_commands(result.out)
    work = tmp_path / "work" / "superpoint"
    # atc --framework=5 --model=superpoint.onnx --output=sp --input_format=NCHW
    #     --input_shape="image:1,1,240,320" --soc_version=${chip_name}
    assert atc[0] == "atc"
    assert flags(atc) == {"framework": "5", "model": str(work / f"onnx/superpoint_bs{bs}.ascend.sim.onnx"),
                          "output": flags(atc)["output"], "input_format": "NCHW",
                          "input_shape": f"image:{bs},1,240,320", "soc_version": "Ascend310P3"}
    assert flags(atc)["output"].startswith(str(work))
    # python -m ais_bench --model sp-${bs}.om --input ${bin_path} --output ${result_path} --batchsize ${bs}
    assert infer[1:3] == ["-m", "ais_bench"]
    assert flags(infer) == {"model": str(work / f"om/superpoint_bs{bs}.om"), "input": str(work / "inputs/image"),
                            "output": flags(infer)["output"], "batchsize": str(bs)}
    # python -m ais_bench --model=${om_model_path} --loop=20 --batchsize=${batch_size}
    assert perf[1:3] == ["-m", "ais_bench"]
    assert flags(perf) == {"model": str(work / f"om/superpoint_bs{bs}.om"), "loop": "20", "batchsize": str(bs)}
