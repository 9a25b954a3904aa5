"""Reading what an ONNX file really is: opset, input/output names and shapes, checker verdict."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import onnx


def describe(path: Path, *, check: bool) -> dict:
    """Opset, names, shapes; run onnx.checker when the graph uses standard ops only (the
    Ascend target may hold ops the checker does not know)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if check:
        try:
            onnx.checker.check_model(str(path), full_check=False)
        except onnx.checker.ValidationError as exc:
            raise UserError(f"{path.name} fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    initializers = {i.name for i in model.graph.initializer}
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "domains": sorted({o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx")}),
        "inputs": [i.name for i in model.graph.input if i.name not in initializers],
        "outputs": [o.name for o in model.graph.output],
        "shapes": {v.name: _dims(v) for v in [*model.graph.input, *model.graph.output] if v.name not in initializers},
        "checked": check,
    }


def _dims(value) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


LARGE_INITIALIZER = 4096  # elements: weights, never the small shape / index constants inference reads


def without_weights(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """The model with its large initializers turned into typed graph inputs: shape inference
    needs their types and shapes only, and serialising 200 MB of weights for it took seconds."""
    import numpy as np
    from onnx import helper

    graph = model.graph
    large = [init for init in graph.initializer if int(np.prod(init.dims)) > LARGE_INITIALIZER]
    names = {init.name for init in large}
    inputs = [*(vi for vi in graph.input if vi.name not in names),
              *(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)) for init in large)]
    light = helper.make_graph(list(graph.node), graph.name, inputs, list(graph.output),
                              [init for init in graph.initializer if init.name not in names], value_info=list(graph.value_info))
    return helper.make_model(light, opset_imports=list(model.opset_import), ir_version=model.ir_version)
