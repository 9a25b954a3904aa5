"""perf: throughput at this batch size, as the guide measures it (`ais_bench --loop 20`, pure
inference; or msame's average time), or the same statistics for ONNX Runtime: the runtime
measures (om_pipeline.runtimes), this stage records."""
from __future__ import annotations

from pathlib import Path

from ..state import Fingerprint, write_json_atomic
from .base import Stage, StageResult


class PerfStage(Stage):
    kind = "perf"
    per_bs = True

    @property
    def variant(self) -> str:
        """The runtime, and `-<n>dev` for a measurement over several devices (`bench --devices`),
        which sits beside the one-device figure, never over it."""
        return self.run.tool_variant + (f"-{len(self.devices)}dev" if self.devices else "")

    @property
    def devices(self) -> tuple[int, ...]:
        return self.run.options.devices or ()

    def skip_reason(self) -> str | None:
        if self.run.emulated_precision:
            return "--precision fp16 previews accuracy; throughput is measured at fp32 (or on the NPU)"
        return None

    def needs(self) -> list[str]:
        return [self.run.model_stage]

    def outputs(self) -> list[str]:
        return [self.result]

    @property
    def result(self) -> str:
        return self.run.result_name("perf").replace(".json", f"_{len(self.devices)}dev.json" if self.devices else ".json")

    @property
    def args(self) -> list[str]:
        return self.run.runtime.recipe_args(self.config)

    def fingerprint(self) -> Fingerprint:
        fingerprint = self.run.runtime.fingerprint(self.args)
        fingerprint.params.update(bs=self.run.bs, loop=self.config.loop)
        if self.devices:
            fingerprint.params["devices"] = list(self.devices)
        return fingerprint

    def tools_used(self) -> list[str]:
        return list(self.run.runtime.tools)

    def commands(self) -> list[list[str]]:
        argv = self.run.runtime.measure_argv(self.args, self.run.staging_dir(self.key))
        return [argv] if argv else []

    def execute(self, staging: Path) -> StageResult:
        stats = self.run.runtime.measure(self.args, staging, self.log, self.config.timeout, self.config.loop)
        argv = stats.pop("argv", None)
        record = {"tool": self.run.runtime.name, "bs": self.run.bs, **stats}
        if self.devices:
            record["devices"] = list(self.devices)  # fps is their sum
        write_json_atomic(self.staged(staging, self.result), record)
        return StageResult(argv=argv, info=record)
