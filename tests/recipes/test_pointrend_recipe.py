"""PointRend recipe, link 1 of the chain (DESIGN.md section 4): the guide's facts, and the dry
run shows the guide's atc and ais_bench commands, up to file locations and what the recipe
states (the Ascend prefix of --soc_version; ais_bench's --input is a chunk's directory)."""
from __future__ import annotations

import pytest

from om_pipeline.models import pointrend as plugin
from om_pipeline.data.pointrend_synth import synthesize
from om_pipeline.recipe import find_recipe
from om_pipeline.testing.dry_run import data_args, flags, planned_commands


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("cityscapes"), images=2, size=(1024, 2048))


def test_recipe_holds_the_guides_facts():
    recipe = find_recipe("pointrend").recipe
    assert recipe.stages.clone.repo == "https://github.com/facebookresearch/detectron2.git"
    assert recipe.stages.clone.commit == "861b50a8894a7b3cccd5e4a927a4130e8109f7b8"
    assert recipe.batch_sizes == [1] and recipe.default_bs == 1
    assert [(t.name, t.shape, t.dtype) for t in recipe.model.inputs] == [("images", [3, 1024, 2048], "float32")]
    assert [(t.name, t.shape) for t in recipe.model.outputs] == [("results", [19, 1024, 2048])]
    assert recipe.stages.weights.file == "model_final_cf6ac1.pkl"
    assert recipe.stages.weights.urls == ["https://dl.fbaipublicfiles.com/detectron2/PointRend/SemanticSegmentation/"
                                          "pointrend_semantic_R_101_FPN_1x_cityscapes/202576688/model_final_cf6ac1.pkl"]
    assert {(r.metric, r.value) for r in recipe.reference.accuracy} == {("miou", 0.7885), ("miou", 0.789)}
    assert recipe.reference.fps == {"Ascend310P3": {1: 1.27}}
    assert recipe.stages.export.opset == 11 and recipe.stages.export.path == "upstream"
    upstream = recipe.stages.export.paths["upstream"]
    assert upstream.env.install_source and any(r.startswith("pillow<10") for r in upstream.env.requirements)
    assert not recipe.stages.export.paths["native"].source
    assert recipe.stages.infer.chunk and recipe.stages.atc.precision_mode == "force_fp16"
    defaults = plugin.Settings()
    for key, value in recipe.params.items():
        assert tuple(value) == getattr(defaults, key) if isinstance(value, list) else value == getattr(defaults, key), key


@pytest.mark.parametrize("offline", [False, True], ids=["data", "offline"])
def test_dry_run_shows_the_guides_commands(ompipe, cityscapes, offline, monkeypatch, tmp_path):
    result = ompipe("run", "pointrend", "--dry-run", "--toolchain", "fake", *data_args(offline, cityscapes, monkeypatch, tmp_path),
                    "--workdir", "work")
    assert result.code == 0, result.err + result.out
    atc, infer, perf = planned_commands(result.out)[-3:]
    work = tmp_path / "work" / "pointrend"
    # atc --model=./PointRend.onnx --framework=5 --output=PointRend_bs1 --input_format=NCHW
    #     --input_shape="images:1,3,1024,2048" --log=error --soc_version=${chip_name}
    assert atc[0] == "atc"
    assert flags(atc) == {"model": str(work / "onnx/pointrend_bs1.ascend.onnx"), "framework": "5",
                          "output": str(work / ".staging/atc-bs1-ascend/om/model"), "input_format": "NCHW",
                          "input_shape": "images:1,3,1024,2048", "log": "error", "soc_version": "Ascend310P3"}
    # python3 -m ais_bench --model ./PointRend_bs1.om --input ${save_dir} --output result
    #     --output_dirname result_bs1 --outfmt BIN
    assert infer[1:3] == ["-m", "ais_bench"]
    chunk = work / ".staging/infer-bs1-ais_bench/chunk"
    assert flags(infer) == {"model": str(work / "om/pointrend_bs1.om"), "input": str(chunk / "inputs/images"),
                            "output": str(chunk / "raw"), "output_dirname": "result_bs1", "outfmt": "BIN"}
    assert perf[1:3] == ["-m", "ais_bench"] and flags(perf) == {"model": str(work / "om/pointrend_bs1.om"), "loop": "20",
                                                               "batchsize": "1"}
    assert "preprocess" in result.out and "infer.chunk" in result.out


def test_shipped_patch_is_found_and_touches_only_point_rend():
    from om_pipeline.recipe import builtin_patch_dirs

    (name,) = find_recipe("pointrend").recipe.stages.patch.files
    text = next(d / name for d in builtin_patch_dirs() if (d / name).is_file()).read_text()
    touched = [line.split()[-1] for line in text.splitlines() if line.startswith("diff --git")]
    assert touched == ["b/projects/PointRend/point_rend/point_features.py", "b/projects/PointRend/point_rend/semantic_seg.py"]
    assert text.endswith("\n")
