"""GFocalV2 recipe, link 1 of the chain (DESIGN.md section 4): the dry run shows the guide's
atc and msame commands for bs 1, its later ais_bench commands, and the ais_bench perf sweep;
the native export path skips the upstream checkout, the upstream path needs it and shows the
guide's export command."""
from __future__ import annotations

import pytest

from om_pipeline.data.gfocalv2_tinycoco import write_tiny_coco
from om_pipeline.recipe import find_recipe
from om_pipeline.testing.dry_run import closing_table, data_args, flags, planned_commands

SWEEP = [1, 4, 8, 16, 32, 64]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco"), images=4)


def test_recipe_holds_the_guides_facts():
    recipe = find_recipe("gfocalv2").recipe
    assert recipe.stages.clone.commit == "b7b355631daaf776e097a6e137501aa27ff7e757"
    assert recipe.batch_sizes == SWEEP and recipe.bs == 1
    assert recipe.stages.infer.tool == "msame" and recipe.stages.weights.unpinned_reason
    assert [t.name for t in recipe.model.inputs] == ["input.1"] and recipe.model.inputs[0].shape == [3, 800, 1216]
    assert [(t.name, t.shape, t.dtype) for t in recipe.model.outputs] == [("dets", [100, 5], "float32"), ("labels", [100], "int64")]
    assert [(t.name, t.shape) for t in recipe.model.outputs_for("onnxruntime")] == [("boxes", [3267, 4]), ("scores", [3267, 81])]
    export = recipe.stages.export
    assert export.path == "native" and not export.paths["native"].source and export.paths["upstream"].source
    requirements = export.paths["upstream"].env.requirements
    assert {"torch==1.8.0", "mmcv-full==1.2.4", "onnx==1.9.0", "torchvision==0.9.0"} <= set(requirements)
    assert {(r.metric, r.value) for r in recipe.reference.accuracy} >= {("ap", 0.406), ("ap_all_images", 0.410)}
    fps = recipe.reference.fps
    assert fps["Ascend310P3"] == {1: 34.49} and fps["T4"] == {1: 9.4}
    assert fps["Ascend310"] == {1: 4.48} and fps["Ascend310-card-4-chips"] == {1: 17.92}  # 1000 / 223.21 per chip, x 4 per card
    assert fps["Ascend310P3-ais_bench"] == {1: 38.33, 4: 41.85, 8: 38.56, 16: 37.22, 32: 41.57, 64: 37.45}


@pytest.mark.parametrize("offline", [False, True], ids=["data", "offline"])
def test_dry_run_shows_the_guides_atc_and_msame_commands(ompipe, coco, offline, monkeypatch, tmp_path):
    result = ompipe("run", "gfocalv2", "--dry-run", "--toolchain", "fake", *data_args(offline, coco, monkeypatch, tmp_path),
                    "--workdir", "work")
    assert result.code == 0, result.err
    atc, infer, perf = planned_commands(result.out)
    work = tmp_path / "work" / "gfocalv2"
    # atc --framework=5 --model=./gfocal.onnx --output=gfocal_bs1 --input_format=NCHW
    #     --input_shape="input.1:1,3,800,1216" --log=debug --soc_version=Ascend${chip_name}
    assert atc[0] == "atc" and flags(atc) == {
        "framework": "5", "model": str(work / "onnx/gfocalv2_bs1.ascend.onnx"), "output": flags(atc)["output"],
        "input_format": "NCHW", "input_shape": "input.1:1,3,800,1216", "log": "debug", "soc_version": "Ascend310P3"}
    assert flags(atc)["output"].startswith(str(work))
    # ./tools/msame/out/msame --model "./gfocal_bs1.om" --input "./val2017_bin" --output "./out/" --outfmt TXT
    assert infer[0] == "msame" and infer[1:5] == ["--model", str(work / "om/gfocalv2_bs1.om"), "--input", str(work / "inputs/input.1")]
    assert infer[5] == "--output" and infer[6].startswith(str(work)) and infer[7:] == ["--outfmt", "TXT"]
    assert perf[0] == "msame" and flags(perf)["loop"] == "20" and "input" not in flags(perf)
    assert closing_table(result.out)["clone"] == "SKIPPED" and closing_table(result.out)["patch"] == "SKIPPED"  # the native path


@pytest.mark.parametrize("offline", [False, True], ids=["data", "offline"])
@pytest.mark.parametrize("bs", SWEEP)
def test_dry_run_with_ais_bench_per_batch_size(ompipe, coco, tmp_path, bs, offline, monkeypatch):
    result = ompipe("run", "gfocalv2", "--dry-run", "--bs", bs, "--infer-tool", "ais_bench", "--toolchain", "fake",
                    *data_args(offline, coco, monkeypatch, tmp_path), "--workdir", "work")
    assert result.code == 0, result.err
    atc, infer, perf = planned_commands(result.out)
    work = tmp_path / "work" / "gfocalv2"
    assert flags(atc)["input_shape"] == f"input.1:{bs},3,800,1216"
    # python3 -m ais_bench --model ./gfocal_bs1.om --input ./val2017_bin --output result --outfmt TXT
    assert infer[1:3] == ["-m", "ais_bench"] and flags(infer) == {
        "model": str(work / f"om/gfocalv2_bs{bs}.om"), "input": str(work / "inputs/input.1"), "output": flags(infer)["output"],
        "outfmt": "TXT"}
    # python3 -m ais_bench --model=... --loop=20 --batchsize=N
    assert perf[1:3] == ["-m", "ais_bench"] and flags(perf) == {"model": str(work / f"om/gfocalv2_bs{bs}.om"), "loop": "20",
                                                                 "batchsize": str(bs)}


def test_msame_runs_bs_1_only(ompipe, coco):
    result = ompipe("run", "gfocalv2", "--dry-run", "--bs", "4", "--toolchain", "fake", "--data", coco, "--workdir", "work")
    assert result.code == 1 and "msame" in result.err


def test_upstream_export_path_needs_the_checkout(ompipe, coco):
    result = ompipe("run", "gfocalv2", "--dry-run", "--export-path", "upstream", "--toolchain", "fake", "--data", coco,
                    "--workdir", "work")
    assert result.code == 0, result.err
    assert closing_table(result.out)["clone"] == "RUN" and closing_table(result.out)["patch"] == "RUN"
    assert ompipe("run", "gfocalv2", "--dry-run", "--export-path", "nope", "--toolchain", "fake", "--data", coco).code == 1


def test_dry_run_shows_the_upstream_export_command(ompipe, coco, tmp_path):
    checkpoint = tmp_path / "gfocal_r50_fpn_1x.pth"
    checkpoint.write_bytes(b"a dry run only digests it")
    common = ("--dry-run", "--export-path", "upstream", "--toolchain", "fake", "--data", coco, "--workdir", "work")
    result = ompipe("run", "gfocalv2", "--weights", checkpoint, *common)
    assert result.code == 0, result.err
    export, atc = planned_commands(result.out)[:2]
    # python3.7 ./GFocalV2/tools/pytorch2onnx.py ./GFocalV2/configs/gfocal/gfocal_r50_fpn_1x.py ./gfocal_r50_fpn_1x.pth
    #   --output-file gfocal.onnx --input-img ./GFocalV2/demo/demo.jpg --shape 800 1216 --show  (run in the checkout)
    staged = tmp_path / "work/gfocalv2/.staging/export-bs1-ascend/onnx/gfocalv2_bs1.ascend.onnx"
    assert export == ["python", "tools/pytorch2onnx.py", "configs/gfocal/gfocal_r50_fpn_1x.py", str(checkpoint),
                      "--output-file", str(staged), "--input-img", "demo/demo.jpg", "--shape", "800", "1216", "--show"]
    assert atc[0] == "atc"
    random = ompipe("run", "gfocalv2", "--weights", "random", *common)
    assert planned_commands(random.out)[0][3] == "<random weights>"  # the plugin writes them when the export runs
