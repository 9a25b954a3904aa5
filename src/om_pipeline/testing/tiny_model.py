"""A tiny ONNX model for tests of anything that converts or runs models: one input `x`
(batch x 3 x 4 x 4, float32), a named node per step, two outputs:

    x -> Conv_0 (1x1, 3->2) -> Relu_1 -> y   (batch x 2 x 4 x 4)
                                      -> ReduceMean_2 (H, W) -> m   (batch x 2)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_NAME = "x"
OUTPUT_NAMES = ("y", "m")
SAMPLE_SHAPE = (3, 4, 4)


def write_tiny_onnx(path: Path, batch: int | str = "batch", seed: int = 0) -> Path:
    """`batch` is a static size or the name of a symbolic dim."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.RandomState(seed).randn(2, 3, 1, 1).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "w"], ["c"], name="Conv_0"),
        helper.make_node("Relu", ["c"], ["y"], name="Relu_1"),
        helper.make_node("ReduceMean", ["y"], ["m"], name="ReduceMean_2", axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, *SAMPLE_SHAPE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2, 4, 4]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [batch, 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime this project supports
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)
