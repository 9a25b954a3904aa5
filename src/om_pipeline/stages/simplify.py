"""simplify: onnxsim (or onnxslim) as the guides run it; the simplifier's own check must pass."""
from __future__ import annotations

from pathlib import Path

from .. import versions
from ..errors import StageFailed, UserError
from ..onnx_info import describe
from ..state import Fingerprint
from .base import Stage, StageResult, write_log_header


class SimplifyStage(Stage):
    kind = "simplify"
    per_bs = True

    def needs(self) -> list[str]:
        return ["export"]

    def outputs(self) -> list[str]:
        return [self.run.onnx_name(simplified=True)]

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(params=self.params(), tools=versions.packages(self.config.tool, "onnx"))

    def execute(self, staging: Path) -> StageResult:
        import onnx

        source = self.run.path(self.run.onnx_name(simplified=False))
        out = self.staged(staging, self.run.onnx_name(simplified=True))
        write_log_header(self.log, f"{self.config.tool} {source} -> {out}")
        model = onnx.load(str(source))
        simplified = simplify_with(self.config.tool, model)
        onnx.save(simplified, str(out))
        return StageResult(info=describe(out, check=self.run.target == "onnxruntime"))


def simplify_with(simplifier: str, model):
    return SIMPLIFIERS[simplifier](model)


def with_onnxslim(model):
    try:
        import onnxslim
    except ImportError:
        raise UserError("the recipe simplifies with onnxslim, which is not installed", hint="pip install onnxslim") from None
    return onnxslim.slim(model)


def with_onnxsim(model):
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:  # onnxsim compares outputs on random inputs; a mismatch means it broke the graph
        raise StageFailed("onnxsim's own check failed: the simplified model's outputs differ from the original's")
    return simplified


SIMPLIFIERS = {"onnxsim": with_onnxsim, "onnxslim": with_onnxslim}  # the recipe's simplify.tool
