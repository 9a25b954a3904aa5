"""ATC's parse gate (om_pipeline.atc_ops) and what the fake atc prints for it: a corpus of graphs
real atc refuses, each failing with atc's code and text, exit 255 and no .om; the preflight
listing every refusal at once; the op table's provenance and the regeneration script; the lint.

The shipped recipes' own Ascend graphs are checked where the tests already export them
(tests/models/test_{superpoint_plugin,pointrend_model,gfocalv2_model,centernet_dcn}.py,
tests/recipes/test_transpose_stand_in.py) through om_pipeline.testing.atc_gate."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from om_pipeline import atc_lint, atc_ops
from om_pipeline.errors import UserError
from om_pipeline.testing import fake_atc, fake_toolchain_env
from om_pipeline.tools import atc as atc_tool
from om_pipeline.tools.execute import execute

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--framework=5", "--soc_version=Ascend310P3", "--output=out/model"]
SOLUTION_NEW = ("        Solution: Check the version of the installation package and reinstall the package. "
                "For details, see the installation reference.")
SOLUTION_OLD = ("        Solution: Check the version of the installation package and reinstall the package. "
                "For details, see the operator specifications.")
TRACEBACK = "        TraceBack (most recent call last):"
PARSE_FAILED_8 = ["        Model parse to graph failed, graph name:model.[FUNC:ModelParseToGraph][FILE:onnx_parser.cc][LINE:977]",
                  "        ATC model parse ret fail.[FUNC:ParseGraph][FILE:omg.cc][LINE:838]"]
PARSE_FAILED_5 = ["        Model parse to graph failed, graph name:model.[FUNC:ModelParseToGraph][FILE:onnx_parser.cc][LINE:905]",
                  "        ATC model parse ret fail.[FUNC:ParseGraph][FILE:omg.cc][LINE:788]"]


# ---------------------------------------------------------------- the corpus


def model_of(nodes, inputs, outputs, opset=11, initializers=(), extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = 8
    return model


def tensor(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def relu(opset=11, shape=(1, 3, 4, 4)) -> onnx.ModelProto:
    return model_of([helper.make_node("Relu", ["x"], ["y"], name="relu")], [tensor("x", list(shape))],
                    [tensor("y", list(shape))], opset)


def deform_conv(opset=19) -> onnx.ModelProto:
    """ONNX's own DeformConv (opset 19): what CenterNet's ONNX Runtime graph holds."""
    return model_of([helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="dcn", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1])],
                    [tensor("x", [1, 4, 8, 8]), tensor("w", [4, 4, 3, 3]), tensor("offset", [1, 18, 8, 8])],
                    [tensor("y", [1, 4, 8, 8])], opset)


def grid_sample(opset=13) -> onnx.ModelProto:
    return model_of([helper.make_node("GridSample", ["x", "grid"], ["y"], name="sample", align_corners=0)],
                    [tensor("x", [1, 2, 8, 8]), tensor("grid", [1, 4, 4, 2])], [tensor("y", [1, 2, 4, 4])], opset)


def deformable_conv2d(opset=11, pads=(1, 1), inputs=("x", "w", "offset", "b")) -> onnx.ModelProto:
    """The Ascend custom op as the guides export it (no domain: keyed on the ai.onnx opset)."""
    node = helper.make_node("DeformableConv2D", list(inputs), ["y"], name="DeformableConv2D_0", strides=[1, 1],
                            pads=list(pads), dilations=[1, 1], groups=1, deformable_groups=1)
    shapes = {"x": [1, 4, 8, 8], "w": [4, 4, 3, 3], "offset": [1, 27, 8, 8], "b": [4]}
    return model_of([node], [tensor(n, shapes[n]) for n in inputs], [tensor("y", [1, 4, 8, 8])], opset)


def batch_nms(boxes_type=TensorProto.FLOAT) -> onnx.ModelProto:
    """GFocalV2's BatchMultiClassNMS; the guide casts boxes and scores to float16 first."""
    nodes = [helper.make_node("Cast", ["boxes_in"], ["boxes"], to=boxes_type, name="Cast_boxes"),
             helper.make_node("Cast", ["scores_in"], ["scores"], to=boxes_type, name="Cast_scores"),
             helper.make_node("BatchMultiClassNMS", ["boxes", "scores"], ["dets", "det_scores", "labels", "num"],
                              name="BatchMultiClassNMS_0", iou_threshold=0.6, score_threshold=0.05,
                              max_size_per_class=100, max_total_size=100)]
    return model_of(nodes, [tensor("boxes_in", [1, 100, 1, 4]), tensor("scores_in", [1, 100, 80])],
                    [tensor("dets", [1, 100, 4], boxes_type), tensor("det_scores", [1, 100], boxes_type),
                     tensor("labels", [1, 100], boxes_type), tensor("num", [1], TensorProto.INT32)])


def custom_domain_without_opset() -> onnx.ModelProto:
    return model_of([helper.make_node("MyOp", ["x"], ["y"], domain="custom", name="my_op")],
                    [tensor("x", [1, 4])], [tensor("y", [1, 4])])


@pytest.fixture
def atc(tmp_path, monkeypatch, capsys):
    """The fake atc in this process (its main(), as `python -m` runs it): (exit status, stdout lines)."""
    monkeypatch.chdir(tmp_path)

    def invoke(model: onnx.ModelProto, *flags: str, cann: str = "8") -> tuple[int, list[str]]:
        onnx.save(model, str(tmp_path / "model.onnx"))
        monkeypatch.setenv("OMPIPE_FAKE_ATC_CANN", cann)
        code = fake_atc.main(["--model=model.onnx", *FLAGS, *flags])
        return code, capsys.readouterr().out.splitlines()

    return invoke


def refused(atc, tmp_path, model, *flags, cann="8") -> list[str]:
    """Run it, check the failure (exit 255, banner, no .om), return the error block."""
    code, lines = atc(model, *flags, cann=cann)
    assert code == 255, lines
    assert lines[:3] == [atc_tool.START_LINE, "...", atc_tool.FAILURE_BANNER]
    assert not list(tmp_path.rglob("*.om"))
    assert not atc_tool.parse_output("\n".join(lines)).ok
    return lines[3:]


def test_opset_19_relu_has_no_parser(atc, tmp_path):
    assert refused(atc, tmp_path, relu(opset=19), "--input_shape=x:1,3,4,4") == [
        "E16002: No ONNX parser is registered for optype ai.onnx::19::Relu.", SOLUTION_NEW, TRACEBACK, *PARSE_FAILED_8]


def test_onnx_deformconv_is_not_registered_at_any_opset(atc, tmp_path):
    for opset in (19, 11):
        block = refused(atc, tmp_path, deform_conv(opset))
        assert block[0] == f"E16002: No ONNX parser is registered for optype ai.onnx::{opset}::DeformConv."


def test_grid_sample_is_registered_for_11_and_16_to_18_only(atc, tmp_path):
    assert refused(atc, tmp_path, grid_sample(13))[0] == "E16002: No ONNX parser is registered for optype ai.onnx::13::GridSample."
    for opset in (11, 16):
        code, lines = atc(grid_sample(opset))
        assert code == 0, lines


def test_deformable_conv2d_passes_at_11_and_fails_at_17(atc, tmp_path):
    code, lines = atc(deformable_conv2d(11))
    assert code == 0 and lines[-1] == atc_tool.SUCCESS_BANNER, lines
    (tmp_path / "out/model.om").unlink()
    assert refused(atc, tmp_path, deformable_conv2d(17))[0] == (
        "E16002: No ONNX parser is registered for optype ai.onnx::17::DeformableConv2D.")


def test_dynamic_input_without_input_shape_is_e10001(atc, tmp_path):
    assert refused(atc, tmp_path, relu(shape=("batch", 3, 4, 4))) == [
        "E10001: Value NULL for parameter --input_shape is invalid. Reason: The shapes of inputs contain -1 in the "
        "model. You may need to set input shape to specify its shape."]
    assert refused(atc, tmp_path, relu(shape=("batch", 3, 4, 4)), cann="5") == [
        "E10001: Value [-1] for parameter [Inputs] is invalid. Reason: maybe you should set input_shape to specify its "
        "shape", "        Solution: Try again with a valid argument."]
    code, lines = atc(relu(shape=("batch", 3, 4, 4)), "--input_shape=x:-1,3,4,4")  # asked for: a dynamic model
    assert code == 0, lines


def test_deformable_conv2d_with_4_int_pads_fails_in_its_plugin(atc, tmp_path):
    block = refused(atc, tmp_path, deformable_conv2d(pads=(1, 1, 1, 1)))
    assert block[0] == ("E11010: Op [DeformableConv2D_0] optype [DeformableConv2D]: parse params failed: "
                        "the pads attr shape is wrong.")
    assert block[1:] == [TRACEBACK, *PARSE_FAILED_8]
    two_inputs = refused(atc, tmp_path, deformable_conv2d(inputs=("x", "w")))
    assert two_inputs[0].endswith("the input number is wrong.")


def test_batch_nms_fed_fp32_finds_no_kernel_where_fp32_is_kept(atc, tmp_path):
    block = refused(atc, tmp_path, batch_nms(TensorProto.FLOAT), "--precision_mode=must_keep_origin_dtype")
    assert block == ["EZ3003: No supported Ops kernel and engine are found for [BatchMultiClassNMS_0], optype "
                     "[BatchMultiClassNonMaxSuppression].", SOLUTION_OLD]
    code, lines = atc(batch_nms(TensorProto.FLOAT16), "--precision_mode=must_keep_origin_dtype")
    assert code == 0, lines
    # force_fp16 (atc's default) lowers the fp32 inputs to fp16 by itself: accepted, with a lint warning.
    (rows,) = [r for r in atc_lint.lint(batch_nms(TensorProto.FLOAT)) if r.ori_op_type == "BatchMultiClassNMS"]
    assert "float16-only kernel" in rows.details


def test_custom_domain_without_opset_import_is_an_inner_error(atc, tmp_path):
    assert refused(atc, tmp_path, custom_domain_without_opset()) == [
        "E19999: Internal Error!",
        "E19999  The opset of domain[custom] has no responding version.[FUNC:ConstructOriType][FILE:onnx_parser.cc][LINE:423]",
        TRACEBACK, *PARSE_FAILED_8]


def test_older_cann_wording_lists_every_node_under_traceback(atc, tmp_path):
    """CANN 5.x: E19010 naming node and key, the other refused nodes under TraceBack (as msit's
    recorded atc output shows); its table stops at opset 15."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="Relu_1"), helper.make_node("Sigmoid", ["a"], ["y"])]
    model = model_of(nodes, [tensor("x", [1, 4])], [tensor("y", [1, 4])], opset=16)
    assert refused(atc, tmp_path, model, cann="5") == [
        "E19010: No parser is registered for Op [Relu_1, optype [ai.onnx::16::Relu]].", SOLUTION_OLD, TRACEBACK,
        "        No parser is registered for Op [Sigmoid_0, optype [ai.onnx::16::Sigmoid]].", *PARSE_FAILED_5]
    code, lines = atc(model, cann="8")
    assert code == 0, lines


def test_the_fake_exits_255_as_a_process(tmp_path):
    onnx.save(relu(opset=19), str(tmp_path / "model.onnx"))
    outcome = execute(["atc", "--model=model.onnx", *FLAGS], cwd=tmp_path, env=fake_toolchain_env(tmp_path / "tc"))
    assert outcome.returncode == 255 and "E16002: No ONNX parser is registered for optype ai.onnx::19::Relu." in outcome.output
    assert not list(tmp_path.rglob("*.om"))


# ---------------------------------------------------------------- the rule itself


def test_subgraphs_are_checked_with_the_models_opset():
    branch = helper.make_graph([helper.make_node("GridSample", ["x", "grid"], ["z"])], "then", [],
                               [tensor("z", [1, 2, 4, 4])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "else", [], [tensor("z", [1, 2, 8, 8])])
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch, else_branch=other)
    model = model_of([node], [tensor("cond", [], TensorProto.BOOL), tensor("x", [1, 2, 8, 8]), tensor("grid", [1, 4, 4, 2])],
                     [tensor("y", None)], opset=13)
    (problem,) = atc_ops.parse_problems(model)
    assert problem.code == "E16002" and problem.atc_text.endswith("ai.onnx::13::GridSample.")
    assert "GridSample_0 (in subgraph if/then_branch)" in problem.message


def test_constant_bypasses_the_lookup_and_there_is_no_fallback():
    constant = helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    model = model_of([constant, helper.make_node("Add", ["x", "c"], ["y"])], [tensor("x", [1])], [tensor("y", [1])], 19)
    (problem,) = atc_ops.parse_problems(model)  # Add at 19 fails; Constant at 19 does not
    assert problem.name == "Add_1" and "opsets 8-18 only, not 19" in problem.message


def test_preflight_lists_every_refusal_at_once(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Gelu", ["a"], ["y"], name="g")]
    onnx.save(model_of(nodes, [tensor("x", ["n", 4])], [tensor("y", ["n", 4])], opset=20), str(tmp_path / "m.onnx"))
    flags = {"model": str(tmp_path / "m.onnx"), "framework": "5", "output": "o", "soc_version": "Ascend310P3"}
    with pytest.raises(UserError) as caught:
        atc_tool.preflight(tmp_path / "m.onnx", flags)
    error = caught.value
    assert error.message.startswith("node r: ATC (CANN 8) registers Relu for ai.onnx opsets 8-18 only, not 20")
    assert "atc would fail with E16002" in error.message and "2 more below" in error.message
    assert error.details == ["E16002 node g: ATC (CANN 8) has no parser for ai.onnx op Gelu at any opset",
                             "E10001 graph input x has a dynamic shape (-1,4) and --input_shape does not fix it"]


def test_a_custom_op_opset_above_16_is_a_user_error_with_the_range(tmp_path):
    onnx.save(deformable_conv2d(17), str(tmp_path / "m.onnx"))
    flags = {"model": "m.onnx", "framework": "5", "output": "o", "soc_version": "Ascend310P3"}
    with pytest.raises(UserError) as caught:
        atc_tool.preflight(tmp_path / "m.onnx", flags)
    assert "registers DeformableConv2D for ai.onnx opsets 9-16 only, not 17" in caught.value.message
    with pytest.raises(UserError) as older:
        atc_tool.preflight(tmp_path / "m.onnx", flags, cann="5")
    assert "opsets 9-15 only" in older.value.message and "E19010" in older.value.message


def test_cann_version_picks_the_table():
    assert [atc_ops.cann_generation(v) for v in ("8.0.RC2", "7.0.0", "6.0.1", "5.1.RC2", None, "unknown")] == \
        ["8", "8", "5", "5", "8", "8"]
    with pytest.raises(UserError):
        atc_ops.chosen_cann("9")


# ---------------------------------------------------------------- the table and its provenance


def test_table_names_its_sources_and_agrees_with_the_second_source():
    data = json.loads((ROOT / "src/om_pipeline/data/atc_onnx_ops.json").read_text())
    for name in ("cann8", "cann5", "msit"):
        for source in data["tables"][name]["sources"]:
            assert source["repo"] and len(source["commit"]) == 40 and source["paths"]
    cann8, msit = data["tables"]["cann8"]["ops"]["ai.onnx"], data["tables"]["msit"]["ops"]["ai.onnx"]
    for op in ("Relu", "Conv", "Resize", "TopK", "Mod", "GridSample", "DeformableConv2D", "BatchMultiClassNMS", "NonZero"):
        assert cann8[op]["opsets"] == msit[op]["opsets"], op
    assert cann8["GridSample"]["opsets"] == "11,16-18" and cann8["DeformableConv2D"]["opsets"] == "9-16"
    assert data["tables"]["cann5"]["ops"]["ai.onnx"]["Conv"]["opsets"] == "8-15"
    assert "DeformConv" not in cann8 and "Gelu" not in cann8


def test_the_script_regenerates_the_table_from_plugin_sources(tmp_path):
    """scripts/gen_atc_onnx_ops.py on tiny git repositories laid out as the real ones."""
    def repo(name: str, files: dict[str, str]) -> Path:
        work = tmp_path / name
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
            subprocess.run(["git", "-C", str(work), *argv], check=True)
        return work / ".git"

    plugin = ('REGISTER_CUSTOM_OP("Relu")\n    .FrameworkType(ONNX)\n    .OriginOpType({"ai.onnx::8::Relu", '
              '"ai.onnx::9::Relu", "ai.onnx::11::Relu"})  // "ai.onnx::12::Relu" commented out\n    .ParseParamsFn(F);\n')
    macro = "REGISTER_CUSTOM_ONNX_OP(ai.onnx::11::Div, RealDiv, DivV11);\n"
    nn = repo("ops-nn", {"activation/relu/framework/relu_onnx_plugin.cpp": plugin,
                         "experimental/x/framework/y_onnx_plugin.cpp": macro.replace("Div", "Exp")})
    cv = repo("ops-cv", {"README.md": "none"})
    math = repo("ops-math", {"common/src/framework/similar_opp_onnx_plugin.cpp": macro})
    canndev = repo("canndev", {"ops/built-in/framework/onnx_plugin/relu_plugin.cc": plugin})
    msit = repo("msit", {"msit/components/analyze/model_evaluation/data/map_conf/onnx.yaml": "ai.onnx::11::Relu: Relu\n"})
    commit = subprocess.run(["git", "--git-dir", str(canndev), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = tmp_path / "ops.json"
    script = ROOT / "scripts/gen_atc_onnx_ops.py"
    source = script.read_text().replace('CANNDEV_COMMIT = "a2f1d9ae6d7224eeeb59eaebbdd94e4240bb33bd"', f'CANNDEV_COMMIT = "{commit}"')
    (tmp_path / "gen.py").write_text(source)
    done = subprocess.run([sys.executable, str(tmp_path / "gen.py"), "--ops-nn", str(nn), "--ops-cv", str(cv),
                           "--ops-math", str(math), "--canndev", str(canndev), "--msit", str(msit), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tables = json.loads(out.read_text())["tables"]
    assert tables["cann8"]["ops"]["ai.onnx"] == {"Div": {"opsets": "11", "ir": "RealDiv"},
                                                 "Relu": {"opsets": "8-9,11", "ir": "Relu"}}  # experimental/ left out
    assert tables["cann8"]["sources"][0]["paths"] == ["activation/relu/framework/relu_onnx_plugin.cpp"]
    assert tables["cann5"]["sources"][0]["commit"] == commit
    assert tables["msit"]["ops"]["ai.onnx"] == {"Relu": {"opsets": "11", "ir": "Relu"}}


# ---------------------------------------------------------------- lint


def test_lint_rows_for_the_patterns_atc_handles_badly():
    nodes = [
        helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk", axis=1),
        helper.make_node("Add", ["indices", "offset"], ["shifted"], name="Add_718"),
        helper.make_node("Mod", ["shifted", "width"], ["col"], name="mod"),
        helper.make_node("NonZero", ["x"], ["nz"], name="nonzero"),
        helper.make_node("Resize", ["x", "", "scales"], ["up"], name="resize", mode="nearest",
                         coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="round_prefer_ceil"),
    ]
    inits = [helper.make_tensor("k", TensorProto.INT64, [1], [2]), helper.make_tensor("offset", TensorProto.INT64, [], [4]),
             helper.make_tensor("width", TensorProto.INT64, [], [3]), helper.make_tensor("scales", TensorProto.FLOAT, [2], [1, 2])]
    model = model_of(nodes, [tensor("x", [2, 6])], [tensor("col", None), tensor("nz", None), tensor("up", None)],
                     initializers=inits)
    rows = {row.ori_op_name: row for row in atc_lint.lint(model)}
    assert set(rows) == {"topk", "mod", "nonzero", "resize"}
    assert "feed Add_718" in rows["topk"].details and rows["topk"].op_type == "PartitionedCall"  # the plugin expands it
    assert not rows["mod"].is_supported and "int64 Mod" in rows["mod"].details
    assert rows["nonzero"].engine == "AI CPU"
    assert "neither half_pixel_centers nor align_corners" in rows["resize"].details
    assert "nearest_mode round_prefer_ceil is ignored" in rows["resize"].details
    header, *lines = atc_lint.format_rows(list(rows.values()))
    assert header.split() == list(atc_lint.COLUMNS) and len(lines) == 4
    cast = [helper.make_node("Cast", ["indices"], ["i32"], to=TensorProto.INT32), helper.make_node("Add", ["i32", "o32"], ["s"])]
    fixed = model_of([nodes[0], *cast], [tensor("x", [2, 6])], [tensor("s", None)],
                     initializers=[inits[0], helper.make_tensor("o32", TensorProto.INT32, [], [4])])
    assert atc_lint.lint(fixed) == []  # msit's TopK fix: a Cast before the arithmetic


# ---------------------------------------------------------------- ompipe doctor MODEL


def toy_graph(tmp_path, nodes, opset=11, initializers=()) -> None:
    """The toy recipe's Ascend graph at bs 4, where `ompipe doctor toy --bs 4` looks for it."""
    path = tmp_path / "work/toy/onnx/toy_bs4.ascend.sim.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_of(nodes, [tensor("image", [4, 3, 16, 16])], [tensor("logits", None)], opset, initializers), str(path))


def doctor(ompipe, toy):
    return ompipe("doctor", "toy", "--bs", "4", "--recipes", toy.recipes, "--toolchain", "fake", "--workdir", "work")


def test_doctor_shows_the_lint_rows_of_the_exported_graph(ompipe, toy, tmp_path):
    assert "no Ascend graph exported yet (toy_bs4.ascend.sim.onnx)" in doctor(ompipe, toy).out
    two = helper.make_tensor("two", TensorProto.INT64, [], [2])
    toy_graph(tmp_path, [helper.make_node("Cast", ["image"], ["i"], to=TensorProto.INT64),
                         helper.make_node("Mod", ["i", "two"], ["m"], name="Mod_7"),
                         helper.make_node("NonZero", ["m"], ["logits"], name="NonZero_8")], initializers=[two])
    result = doctor(ompipe, toy)
    lines = result.out.splitlines()
    assert any(line.startswith("ok    atc graph        toy_bs4.ascend.sim.onnx passes ATC's parse gate (CANN 8 op table); "
                               "2 lint warning(s)") for line in lines), result.out
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ori_op_name", "ori_op_type"])
    assert lines[header + 1].split()[:5] == ["Mod_7", "Mod", "Mod", "AI", "CPU?"] and "int64 Mod" in lines[header + 1]
    assert lines[header + 2].split()[:4] == ["NonZero_8", "NonZero", "PartitionedCall", "AI"]


def test_doctor_fails_on_a_graph_atc_would_refuse(ompipe, toy, tmp_path):
    toy_graph(tmp_path, [helper.make_node("Relu", ["image"], ["logits"], name="relu")], opset=19)
    result = doctor(ompipe, toy)
    assert result.code == 1
    assert "FAIL  atc graph        toy_bs4.ascend.sim.onnx: atc would refuse it (CANN 8 op table): E16002 node relu" in result.out
    assert "CANN 5 op table" in ompipe("doctor", "toy", "--bs", "4", "--cann", "5", "--recipes", toy.recipes,
                                      "--toolchain", "fake", "--workdir", "work").out
