"""Reading what an ONNX file really is: opset, input/output names and shapes, checker verdict."""
from __future__ import annotations

from pathlib import Path

from .errors import UserError


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
