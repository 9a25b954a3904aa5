"""CenterNet recipe, link 1 of the chain (DESIGN.md section 4): for every batch size the guide
lists, the dry run shows the guide's atc and ais_bench commands, up to file locations and the
differences the recipe states (graph-output names for --out_nodes; no --output_dirname)."""
from __future__ import annotations

import pytest

from om_pipeline.data.centernet_tinycoco import write_tiny_coco
from om_pipeline.recipe import find_recipe
from om_pipeline.testing.dry_run import data_args, flags, planned_commands

GUIDE_BATCH_SIZES = [1, 4, 8, 16, 32]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco"), images=2)


def test_recipe_holds_the_guides_facts():
    recipe = find_recipe("centernet").recipe
    assert recipe.batch_sizes == GUIDE_BATCH_SIZES
    assert recipe.stages.clone.commit == "2b7692c377c6686fb35e473dac2de6105eed62c6"
    assert [t.name for t in recipe.model.inputs] == ["actual_input"] and recipe.model.inputs[0].shape == [3, 512, 512]
    assert [(t.name, t.shape) for t in recipe.model.outputs] == [
        ("output1", [80, 128, 128]), ("output2", [2, 128, 128]), ("output3", [2, 128, 128])]
    assert recipe.reference.fps["Ascend310P3"] == {1: 32.1448, 4: 34.1512, 8: 33.0343, 16: 33.6273, 32: 31.8843}
    assert {(r.metric, r.value) for r in recipe.reference.accuracy} == {("ap", 0.364), ("ap", 0.366), ("ap", 0.374)}
    assert recipe.stages.export.opset == 11 and recipe.stages.export.params["onnxruntime_opset"] == 19
    assert recipe.stages.weights.sha256 == "43bf4cc2efe00e02c1ae8484035b062a35543872d276c7dcfeb4db3e64203e4f"
    # Plugin defaults and recipe params agree (upstream's).
    from om_pipeline.models.centernet import Settings

    defaults = Settings()
    assert all(getattr(defaults, key) == value for key, value in recipe.params.items())


@pytest.mark.parametrize("offline", [False, True], ids=["data", "offline"])
@pytest.mark.parametrize("bs", GUIDE_BATCH_SIZES)
def test_dry_run_shows_the_guides_commands(ompipe, coco, bs, offline, monkeypatch, tmp_path):
    result = ompipe("run", "centernet", "--dry-run", "--bs", bs, "--toolchain", "fake", *data_args(offline, coco, monkeypatch, tmp_path),
                    "--workdir", "work")
    assert result.code == 0, result.err
    atc, infer, perf = planned_commands(result.out)
    work = tmp_path / "work" / "centernet"
    # atc --framework=5 --model=CenterNet.onnx --output=CenterNet_bs1 --input_format=NCHW
    #     --input_shape="actual_input:1,3,512,512" --out_nodes="Conv_1120:0;Conv_1123:0;Conv_1126:0"
    #     --log=info --soc_version=Ascend${chip_name}
    assert atc[0] == "atc"
    assert flags(atc) == {"framework": "5", "model": str(work / f"onnx/centernet_bs{bs}.ascend.onnx"),
                          "output": flags(atc)["output"], "input_format": "NCHW",
                          "input_shape": f"actual_input:{bs},3,512,512", "out_nodes": "output1;output2;output3",
                          "log": "info", "soc_version": "Ascend310P3"}
    assert flags(atc)["output"].startswith(str(work))
    # python -m ais_bench --model CenterNet_bs1.om --input prep_dataset --output result
    #     --output_dirname dumpout_bs1 --batchsize 1
    assert infer[1:3] == ["-m", "ais_bench"]
    assert flags(infer) == {"model": str(work / f"om/centernet_bs{bs}.om"), "input": str(work / "inputs/actual_input"),
                            "output": flags(infer)["output"], "batchsize": str(bs)}
    # python -m ais_bench --model=${om_model_path} --loop=20 --batchsize=${batch_size}
    assert perf[1:3] == ["-m", "ais_bench"]
    assert flags(perf) == {"model": str(work / f"om/centernet_bs{bs}.om"), "loop": "20", "batchsize": str(bs)}
