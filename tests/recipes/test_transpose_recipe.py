"""TransPose recipe, link 1 of the chain (DESIGN.md section 4): for every batch size the guide
lists, the dry run shows the guide's atc command (with its fusion switch file and --log=error)
and its two ais_infer runs (normal and flipped inputs), up to file locations."""
from __future__ import annotations

import pytest

from om_pipeline.data.transpose_synth import synthesize
from om_pipeline.recipe import builtin_recipe_dir, find_recipe
from om_pipeline.testing.dry_run import data_args, flags, planned_commands

GUIDE_BATCH_SIZES = [1, 4, 8, 16, 32, 64]
GUIDE_FUSION_SWITCHES = {"ReshapeTransposeFusionPass": "off", "TransposeReshapeFusionPass": "off"}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("coco"), images=2, seed=0)


def fusion_switches(text: str) -> dict[str, str]:
    """ATC's reading of a non-JSON switch file (FusionConfigParser::LoadOldFormatFusionSwitchFile):
    every non-empty line is `PassName:on|off`, no pass twice; anything else fails atc."""
    switches = {}
    for line in text.splitlines():
        if not line:
            continue
        assert ":" in line, f"ATC rejects a line without a colon: {line!r}"
        name, value = (part.strip() for part in line.split(":", 1))
        assert value in ("on", "off") and name not in switches, line
        switches[name] = value
    return switches


def test_recipe_holds_the_guides_facts():
    loaded = find_recipe("transpose")
    recipe = loaded.recipe
    assert recipe.batch_sizes == GUIDE_BATCH_SIZES
    assert recipe.stages.clone.commit == "dab9007b6f61c9c8dce04d61669a04922bbcd148"
    assert [(t.name, t.shape) for t in recipe.model.inputs] == [("input", [3, 256, 192])]
    assert [(t.name, t.shape) for t in recipe.model.outputs] == [("output", [17, 64, 48])]
    assert recipe.stages.export.opset == 11 and recipe.stages.simplify.tool == "onnxsim"
    assert recipe.stages.weights.file == "tp_r_256x192_enc3_d256_h1024_mh8.pth"
    assert recipe.stages.weights.urls == ["https://github.com/yangsenius/TransPose/releases/download/Hub/tp_r_256x192_enc3_d256_h1024_mh8.pth"]
    assert recipe.reference.fps["Ascend310P3"] == {1: 449.29, 4: 512.22, 8: 494.21, 16: 472.23, 32: 445.44, 64: 481.09}
    assert recipe.reference.fps["Ascend310"] == {1: 210.43, 4: 206.03, 8: 189.11, 16: 177.46, 32: 164.02, 64: 161.40}
    assert recipe.reference.fps["T4"] == {1: 497.47, 4: 405.03, 8: 396.20, 16: 263.57, 32: 294.83, 64: 464.43}
    references = {(r.metric, r.value, r.chip) for r in recipe.reference.accuracy}
    assert {("ap", 0.737, "Ascend310P3"), ("ap", 0.738, None), ("ap", 0.717, None)} <= references
    assert recipe.params["boxes"] == "gt" and recipe.params["blur_kernel"] == 11


def test_the_shipped_fusion_switch_file_is_the_guides_and_atc_can_read_it():
    switch_file = builtin_recipe_dir() / "transpose" / "fusion_switch.cfg"
    assert fusion_switches(switch_file.read_text()) == GUIDE_FUSION_SWITCHES


@pytest.mark.parametrize("offline", [False, True], ids=["data", "offline"])
@pytest.mark.parametrize("bs", GUIDE_BATCH_SIZES)
def test_dry_run_shows_the_guides_commands(ompipe, coco, bs, offline, monkeypatch, tmp_path):
    result = ompipe("run", "transpose", "--dry-run", "--bs", bs, "--toolchain", "fake", *data_args(offline, coco, monkeypatch, tmp_path),
                    "--workdir", "work")
    assert result.code == 0, result.err
    atc, infer_normal, infer_flip, perf = planned_commands(result.out)
    work = tmp_path / "work" / "transpose"
    recipe_dir = find_recipe("transpose").directory
    # atc --framework=5 --model=..._bs1_sim.onnx --output=..._bs1 --input_format=NCHW
    #     --input_shape="input:1,3,256,192" --fusion_switch_file=fusion_switch.cfg --log=error --soc_version=Ascend${chip_name}
    assert atc[0] == "atc"
    assert flags(atc) == {"framework": "5", "model": str(work / f"onnx/transpose_bs{bs}.ascend.sim.onnx"),
                          "output": flags(atc)["output"], "input_format": "NCHW", "input_shape": f"input:{bs},3,256,192",
                          "fusion_switch_file": str(recipe_dir / "transpose" / "fusion_switch.cfg"), "log": "error",
                          "soc_version": "Ascend310P3"}
    assert flags(atc)["output"].startswith(str(work))
    # ais_infer.py --model ..._bs{bs}.om --input "../prep_data/" --output ../prep_data_result/   (and prep_data_flip)
    for command, view in ((infer_normal, "normal"), (infer_flip, "flip")):
        assert command[1:3] == ["-m", "ais_bench"]
        assert flags(command) == {"model": str(work / f"om/transpose_bs{bs}.om"), "input": str(work / f"inputs/{view}/input"),
                                  "output": flags(command)["output"]}
        assert flags(command)["output"].startswith(str(work)) and flags(command)["output"].endswith(view)
    # ais_infer.py --model /path/to/model --output ./tmp_out --outfmt BIN --batchsize ${bs} --loop 100 (outputs not kept)
    assert perf[1:3] == ["-m", "ais_bench"]
    assert flags(perf) == {"model": str(work / f"om/transpose_bs{bs}.om"), "batchsize": str(bs), "loop": "100"}
