"""perf: throughput at this batch size, as the guide measures it (`ais_bench --loop 20`, pure
inference; or msame's average time), or the same statistics for ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

from .. import versions
from ..backends import onnxruntime as ort_backend
from ..errors import StageFailed
from ..recipe import render
from ..state import Fingerprint, write_json_atomic
from ..tools import ais_bench, msame
from ..tools.execute import execute
from .base import Stage, StageResult
from .infer import RAW, tool_argv


class PerfStage(Stage):
    kind = "perf"
    per_bs = True

    @property
    def variant(self) -> str:
        return self.run.tool_variant

    def skip_reason(self) -> str | None:
        if self.run.emulated_precision:
            return "--precision fp16 previews accuracy; throughput is measured at fp32 (or on the NPU)"
        return None

    def needs(self) -> list[str]:
        return [self.run.model_stage]

    def outputs(self) -> list[str]:
        return [self.run.result_name("perf")]

    def fingerprint(self) -> Fingerprint:
        if self.run.tool == "onnxruntime":
            params = {"tool": "onnxruntime", "bs": self.run.bs, "loop": self.config.loop}
            return Fingerprint(params=params, tools=versions.packages("onnxruntime"))
        params = {"tool": self.run.tool, "args": self.config.tool_args(self.run.tool), "bs": self.run.bs}
        return Fingerprint(params=params)

    def tools_used(self) -> list[str]:
        return [] if self.run.tool == "onnxruntime" else [self.run.tool]

    def argv(self, staging: Path) -> list[str]:
        variables = self.run.variables(output=str(staging / RAW))
        return tool_argv(self.run.tool, [render(arg, variables) for arg in self.config.tool_args(self.run.tool)])

    def commands(self) -> list[list[str]]:
        return [] if self.run.tool == "onnxruntime" else [self.argv(self.run.model_dir / ".staging" / self.key)]

    def execute(self, staging: Path) -> StageResult:
        argv = None
        if self.run.tool == "onnxruntime":
            stats = ort_backend.measure(self.run.path(self.run.model_onnx), self.run.recipe.model, self.run.bs, self.config.loop)
        else:
            argv = self.argv(staging)
            (staging / RAW).mkdir(mode=0o750)
            outcome = execute(argv, cwd=staging, log=self.log, timeout=self.config.timeout)
            stats = (msame_stats if self.run.tool == "msame" else ais_bench_stats)(outcome, self.run.bs, self.log)
        record = {"tool": self.run.tool, "bs": self.run.bs, **stats}
        write_json_atomic(self.staged(staging, self.run.result_name("perf")), record)
        return StageResult(argv=argv, info=record)


def ais_bench_stats(outcome, bs: int, log: Path) -> dict:
    throughput = ais_bench.parse_throughput(outcome.output)
    if outcome.returncode != 0 or throughput is None:
        raise StageFailed(f"ais_bench perf run failed (exit {outcome.returncode})",
                          details=ais_bench.error_tail(outcome.output), hint=f"full log: {log}")
    return {"fps": throughput.fps, "batchsize": throughput.batchsize, "mean_ms": throughput.mean_ms,
            "compute_time_ms": ais_bench.parse_compute_time(outcome.output)}


def msame_stats(outcome, bs: int, log: Path) -> dict:
    """fps = 1000 * bs / the average time without the first (warm-up) execution when msame
    prints it, else the plain average; per device, never multiplied by chips per card."""
    result = msame.parse_output(outcome.output, outcome.returncode)
    average = result.average_without_first_ms or result.average_ms
    if not result.ok or not average:
        raise StageFailed(f"msame perf run failed (exit {outcome.returncode})",
                          details=result.errors or outcome.output.splitlines()[-10:], hint=f"full log: {log}")
    return {"fps": 1000 * bs / average, "batchsize": bs, "mean_ms": average,
            "average_ms": result.average_ms, "average_without_first_ms": result.average_without_first_ms}
