"""perf: throughput at this batch size, as the guide measures it (`ais_bench --loop 20`, pure
inference), or the same statistics for ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

from .. import versions
from ..backends import onnxruntime as ort_backend
from ..errors import StageFailed
from ..recipe import render
from ..state import Fingerprint, write_json_atomic
from ..tools import ais_bench
from ..tools.execute import execute
from .base import Stage, StageResult
from .infer import ais_bench_argv


class PerfStage(Stage):
    kind = "perf"
    per_bs = True

    @property
    def variant(self) -> str:
        return self.run.backend

    def needs(self) -> list[str]:
        stages = self.run.recipe.stages
        return ["atc" if self.run.backend == "ais_bench" else ("simplify" if stages.simplify else "export")]

    def outputs(self) -> list[str]:
        return [self.run.result_name("perf")]

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "backend": self.run.backend, "bs": self.run.bs}
        tools = {"cann": versions.cann()} if self.run.backend == "ais_bench" else versions.packages("onnxruntime")
        return Fingerprint(params=params, tools=tools)

    def argv(self) -> list[str]:
        return ais_bench_argv(*(render(arg, self.run.variables()) for arg in self.config.args))

    def commands(self) -> list[list[str]]:
        return [self.argv()] if self.run.backend == "ais_bench" else []

    def execute(self, staging: Path) -> StageResult:
        if self.run.backend == "onnxruntime":
            stats = ort_backend.measure(self.run.path(self.run.model_onnx), self.run.recipe.model, self.run.bs, self.config.loop)
            argv = None
        else:
            argv = self.argv()
            outcome = execute(argv, cwd=staging, log=self.log)
            throughput = ais_bench.parse_throughput(outcome.output)
            if outcome.returncode != 0 or throughput is None:
                raise StageFailed(f"ais_bench perf run failed (exit {outcome.returncode})",
                                  details=ais_bench.error_tail(outcome.output), hint=f"full log: {self.log}")
            stats = {"fps": throughput.fps, "batchsize": throughput.batchsize, "mean_ms": throughput.mean_ms,
                     "compute_time_ms": ais_bench.parse_compute_time(outcome.output)}
        record = {"backend": self.run.backend, "bs": self.run.bs, **stats}
        write_json_atomic(self.staged(staging, self.run.result_name("perf")), record)
        return StageResult(argv=argv, info=record)
