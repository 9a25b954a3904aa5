"""atc: the guide's `atc` command, checked before it runs (the real tool reports a wrong
`--input_shape` name with E10016 only after minutes), its `.om` found as `<output>*.om`."""
from __future__ import annotations

from pathlib import Path

from ..errors import StageFailed
from ..recipe import render, template_names
from ..state import Fingerprint
from ..tools import atc as atc_tool
from ..tools.execute import execute
from .base import Stage, StageResult
from .export import ExportStage

STAGING_STEM = "om/model"
DEFAULT_PRECISION = "force_fp16"


class AtcStage(Stage):
    kind = "atc"
    per_bs = True

    def skip_reason(self) -> str | None:
        if self.run.backend != "ais_bench":
            return f"backend {self.run.backend} runs the ONNX model; no .om needed"
        return None

    def needs(self) -> list[str]:
        return ["simplify" if self.run.recipe.stages.simplify else "export"]

    def outputs(self) -> list[str]:
        return [self.run.om_name]

    def uses_soc_version(self) -> bool:
        return any("soc_version" in template_names(arg) for arg in self.config.args)

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "bs": self.run.bs}
        if self.uses_soc_version():
            params["soc_version"] = self.run.soc_version
        return Fingerprint(params=params, inputs=self.run.recipe_files(self.config.args))

    def tools_used(self) -> list[str]:
        return ["atc"]

    def argv(self, staging: Path) -> list[str]:
        variables = self.run.variables(om_stem=str(staging / STAGING_STEM))
        if self.uses_soc_version():
            variables["soc_version"] = self.run.soc_version
        argv = ["atc", *(render(arg, variables) for arg in self.config.args)]
        # The guides never pass --precision_mode, so ATC's default (force_fp16) applies; a recipe
        # that states another mode gets it on the command line.
        if self.config.precision_mode != DEFAULT_PRECISION and not any(a.startswith("--precision_mode") for a in argv):
            argv.append(f"--precision_mode={self.config.precision_mode}")
        return argv

    def commands(self) -> list[list[str]]:
        return [self.argv(self.run.model_dir / ".staging" / self.key)]

    def fake_twin(self, model: Path, staging: Path) -> dict[str, str]:
        """The fake atc runs the .om's graph with ONNX Runtime, which cannot execute Ascend-only
        ops (DeformableConv2D, BatchMultiClassNMS). For such a graph the fake is given the
        plugin's standard-op export of the same model (target onnxruntime) to run instead; the
        flags are still checked against the real graph."""
        if self.run.options.toolchain != "fake" or not nonstandard_ops(model):
            return {}
        twin = staging / "fake-twin.onnxruntime.onnx"
        ExportStage(self.run).export(twin, "onnxruntime", self.log)
        return {"OMPIPE_FAKE_ATC_EXEC_MODEL": str(twin)}

    def execute(self, staging: Path) -> StageResult:
        argv = self.argv(staging)
        flags = atc_tool.parse_flags(argv[1:])
        atc_tool.preflight(Path(flags["model"]), flags)
        env = self.fake_twin(Path(flags["model"]), staging)
        outcome = execute(argv, cwd=staging, log=self.log, env=env, timeout=self.config.timeout)  # cwd: fusion_result.json stays out of the user's way
        result = atc_tool.parse_output(outcome.output)
        if outcome.returncode != 0 or not result.ok:
            raise StageFailed(
                f"atc failed (exit {outcome.returncode})",
                details=result.errors or outcome.output.strip().splitlines()[-10:],
                hint=f"full log: {self.log}",
            )
        produced = atc_tool.find_om(staging / STAGING_STEM)
        produced.rename(self.staged(staging, self.run.om_name))
        return StageResult(argv=argv, info={"produced": produced.name, "warnings": result.warnings, "runs_twin": bool(env),
                                            "precision_mode": flags.get("precision_mode", self.config.precision_mode),
                                            "soc_version": flags.get("soc_version")})


def nonstandard_ops(model: Path) -> list[str]:
    """Op types outside the ONNX standard (the Ascend target's custom ops)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    return sorted({n.op_type for n in graph.node if not onnx.defs.has(n.op_type, n.domain or "")})
