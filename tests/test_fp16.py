"""force_fp16 emulated (om_pipeline.fp16): the guards that prove ONNX Runtime really computes
with fp16 storage, and the rules for what ATC keeps at fp32."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from om_pipeline import fp16
from om_pipeline.errors import UserError
from om_pipeline.stages.compare import similarity


def one_node(op: str = "Identity") -> onnx.ModelProto:
    inputs = ["x"] if op == "Identity" else ["x", "zero"]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"], name="the_op")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        initializer=[] if op == "Identity" else [numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


def run(model: onnx.ModelProto, mode: str, x: np.ndarray, **keep) -> np.ndarray:
    precision = fp16.Precision(mode, **keep)
    return fp16.session(model, precision).run(None, {"x": x})[0]


@pytest.mark.parametrize("op", ["Identity", "Add"])
def test_one_plus_2_pow_minus_12_rounds_to_one_at_fp16_and_survives_at_origin(op):
    x = np.array([1 + 2**-12], np.float32)
    assert x[0] != 1.0
    assert run(one_node(op), "force_fp16", x)[0] == 1.0
    assert run(one_node(op), "fp16", x)[0] == 1.0
    assert run(one_node(op), "must_keep_origin_dtype", x)[0] == x[0]
    assert run(one_node(op), "origin", x)[0] == x[0]


def test_overflow_beyond_fp16_max_is_inf():
    out = run(one_node("Add"), "force_fp16", np.array([70000.0, -70000.0, 65504.0], np.float32))
    assert np.isposinf(out[0]) and np.isneginf(out[1]) and out[2] == 65504.0


def test_keep_dtype_node_name_keeps_fp32():
    x = np.array([1 + 2**-12], np.float32)
    assert run(one_node("Add"), "force_fp16", x, keep_names=frozenset({"the_op"}))[0] == x[0]
    assert run(one_node("Add"), "force_fp16", x, keep_types=frozenset({"Add"}))[0] == x[0]


def test_cast_outputs_are_kept_but_feed_fp16_ops_rounded():
    """Cast(to=FLOAT) is dtype-sensitive (kept): a graph output straight from it is exact; an
    op reading it in fp16 gets the rounded value."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT, name="cast"),
         helper.make_node("Relu", ["c"], ["r"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1]), helper.make_tensor_value_info("r", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)
    cast, relu = fp16.session(model, fp16.Precision()).run(None, {"x": np.array([1 + 2**-12])})
    assert cast[0] == np.float32(1 + 2**-12) and relu[0] == 1.0


def tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (4, 8, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c2"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
                              initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


def test_small_cnn_close_to_fp32_but_not_equal():
    import onnxruntime

    model = tiny_cnn()
    x = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype(np.float32)
    reference = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    emulated = fp16.session(model, fp16.Precision()).run(None, {"x": x})[0]
    stats = similarity(reference, emulated)
    assert 0.999 < stats["cosine"] < 1.0
    assert stats["max_abs"] > 0
    origin = fp16.session(model, fp16.Precision("must_keep_origin_dtype")).run(None, {"x": x})[0]
    np.testing.assert_array_equal(origin, reference)


def test_onnx_runtime_keeps_every_inserted_cast(tmp_path):
    """The optimised graph ONNX Runtime runs still holds every Cast pair the rewrite inserted."""
    model = tiny_cnn()
    emulated, summary = fp16.emulate(model, fp16.Precision())
    inserted = sum(node.op_type == "Cast" for node in emulated.graph.node)
    assert inserted == 2 * (summary["rounded"] - 2)  # the two weights are rounded in place, without Casts
    options = fp16.session_options()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    fp16.session(model, fp16.Precision(), options)
    optimised = onnx.load(str(tmp_path / "optimised.onnx"))
    assert sum(node.op_type == "Cast" for node in optimised.graph.node) == inserted


def test_cube_modes_touch_only_cube_ops():
    model = tiny_cnn()
    _, everywhere = fp16.emulate(model, fp16.Precision("force_fp16"))
    _, cube = fp16.emulate(model, fp16.Precision("allow_fp32_to_fp16"))
    _, cube_in = fp16.emulate(model, fp16.Precision("cube_fp16in_fp32out"))
    _, origin = fp16.emulate(model, fp16.Precision("must_keep_origin_dtype"))
    # x, w1, w2 and c1, r1, c2, y / x, w1, w2, c1, r1 (Relu is fp32: the 2nd Conv rounds it), c2
    assert (everywhere["rounded"], cube["rounded"], cube_in["rounded"], origin["rounded"]) == (7, 6, 4, 0)


def test_precision_of_settings_and_keep_dtype_file(tmp_path):
    keep = tmp_path / "keep.cfg"
    keep.write_text("Conv_3\n\nOpType::Relu\n", encoding="utf-8")
    precision = fp16.precision_of({"precision_mode_v2": "origin", "keep_dtype": str(keep)})
    assert precision == fp16.Precision("origin", frozenset({"Conv_3"}), frozenset({"Relu"}))
    assert fp16.precision_of({}).mode == "force_fp16" and fp16.precision_of({}).numerics == "fp16-emulated"
    with pytest.raises(UserError, match="not emulated"):
        fp16.Precision("allow_mix_precision_bf16")
