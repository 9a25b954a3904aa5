"""atc: the guide's `atc` command, checked before it runs (the real tool reports a wrong
`--input_shape` name with E10016, or an op it has no parser for with E16002, only after
minutes), its `.om` found as `<output>*.om`. The graph's lint warnings (atc_lint) go to the log."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import toolchains
from ..context import Run
from ..errors import StageFailed
from ..recipe import render, template_names
from ..state import Fingerprint
from ..tools import atc as atc_tool
from ..tools.execute import execute
from .base import Stage, StageResult, write_log_header

if TYPE_CHECKING:
    import onnx

STAGING_STEM = "om/model"
DEFAULT_PRECISION = "force_fp16"


class AtcStage(Stage):
    kind = "atc"
    per_bs = True

    def skip_reason(self) -> str | None:
        if not self.run.runtime.runs_om:
            return f"runtime {self.run.runtime.name} runs the ONNX model; no .om needed"
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
        return [self.argv(self.run.staging_dir(self.key))]

    def execute(self, staging: Path) -> StageResult:
        argv = self.argv(staging)
        flags = atc_tool.parse_flags(argv[1:])
        model = Path(flags["model"])
        graph = atc_tool.preflight(model, flags, self.run.cann)  # read once: checked, then the toolchain and the lint
        env = toolchains.active().atc_environment(self, graph, staging)
        outcome = execute(argv, cwd=staging, log=self.log, env=env, timeout=self.config.timeout)  # cwd: fusion_result.json stays out of the user's way
        warnings = self.write_lint(graph, model.name, flags) if graph is not None else []  # after atc's own lines: the log starts with its argv
        result = atc_tool.parse_output(outcome.output)
        if outcome.returncode != 0 or not result.ok:
            raise StageFailed(
                f"atc failed (exit {outcome.returncode})",
                details=result.errors or outcome.output.strip().splitlines()[-10:],
                hint=f"full log: {self.log}",
            )
        produced = atc_tool.find_om(staging / STAGING_STEM)
        produced.rename(self.staged(staging, self.run.om_name))
        return StageResult(argv=argv, info={"produced": produced.name, "warnings": result.warnings,
                                            "op_table": f"cann{self.run.cann}", "lint": warnings,
                                            "precision_mode": flags.get("precision_mode", self.config.precision_mode),
                                            "soc_version": flags.get("soc_version")})

    def write_lint(self, graph: "onnx.ModelProto", name: str, flags: dict[str, str]) -> list[str]:
        """The graph's lint rows (msit analyze's columns) into the log; returns them."""
        from ..atc_lint import format_rows, lint

        rows = lint(graph, flags, self.run.cann)
        lines = format_rows(rows) if rows else ["no Ascend lint warnings"]
        write_log_header(self.log, "\n# ".join([f"lint of {name} (CANN {self.run.cann} op table):", *(f"  {line}" for line in lines)]))
        return [f"{row.ori_op_name} ({row.ori_op_type}): {row.details}" for row in rows]


def planned_flags(run: Run) -> dict[str, str]:
    """The recipe's atc flags for this run as atc will parse them, without asking npu-smi for
    the soc_version (no check here depends on it): for `ompipe doctor` and tests."""
    variables = run.variables(om_stem=str(run.staging_dir("atc") / STAGING_STEM))
    variables["soc_version"] = run.options.soc_version if run.options.soc_version != "auto" else "Ascend310P3"
    return atc_tool.parse_flags([render(arg, variables) for arg in run.recipe.stages.atc.args])


def nonstandard_ops(model: "Path | onnx.ModelProto") -> list[str]:
    """Op types outside the ONNX standard (the Ascend target's custom ops)."""
    import onnx

    if isinstance(model, Path):
        model = onnx.load(str(model), load_external_data=False)
    return sorted({n.op_type for n in model.graph.node if not onnx.defs.has(n.op_type, n.domain or "")})
