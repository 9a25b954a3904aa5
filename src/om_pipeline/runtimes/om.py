"""What the runtimes that run atc's `.om` share (ais_bench, msame): the Ascend target's model,
its numerics as the toolchain's .om says or atc compiled it, running the tool on a batch of
samples' files, and the layout check of what it wrote."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from .. import toolchains
from ..errors import StageFailed, UserError
from ..recipe import ARGS_OF_TOOL
from ..samples import has_output, output_path
from ..state import Fingerprint
from ..tools.execute import execute
from .base import FilesJob

RAW = "raw"  # the tool's own output root, under the stage's staging directory


class OmRuntime:
    runs_om: ClassVar[bool] = True
    ray_resource: ClassVar[str] = "NPU"
    target = "ascend"
    name: ClassVar[str]
    tools: ClassVar[tuple[str, ...]]

    def __init__(self, run):
        self.run = run

    def recipe_args(self, stage) -> list[str]:
        """Its argv in the recipe's infer or perf stage: the field ARGS_OF_TOOL names for it."""
        field = ARGS_OF_TOOL[self.name]
        if not getattr(stage, field):
            raise UserError(f"this recipe has no {self.name} command ({field})", hint="use --runtime ais_bench")
        return getattr(stage, field)

    @property
    def om_path(self) -> Path:
        return self.run.shared_path(self.run.om_name)

    def fingerprint(self, args: list[str]) -> Fingerprint:
        return Fingerprint(params={"tool": self.name, "args": args})

    def outputs(self):
        """The .om's outputs: as the toolchain's .om says it yields them (the fake's .om of an
        Ascend-only graph runs its standard-op twin), else the recipe's for the Ascend target."""
        names = toolchains.active().om_output_names(self.om_path)
        specs = {spec.name: spec for target in ("onnxruntime", self.target) for spec in self.run.output_specs(target)}
        if names and all(name in specs for name in names):
            return [specs[name] for name in names]
        return self.run.output_specs(self.target)

    def numerics(self) -> str:
        told_by_om = toolchains.active().om_numerics(self.om_path)
        return told_by_om or f"npu ({self.precision_mode})"

    def precision_params(self) -> dict[str, str]:
        """The fake .om's numerics (it emulates atc's precision mode): a cached fp32 run of an
        older fake reruns. A real .om computes as atc compiled it, which atc's record holds."""
        told_by_om = toolchains.active().om_numerics(self.om_path)
        return {"fake_om_numerics": told_by_om} if told_by_om else {}

    @property
    def precision_mode(self) -> str:
        atc = self.run.recipe.stages.atc
        return atc.precision_mode if atc else "force_fp16"

    def files_argv(self, job: FilesJob) -> list[str]:
        """The tool on this view's inputs, its output root under the job's staging directory."""
        variables = self.run.variables(job.view, output=str(job.staging / RAW / (job.view or "")),
                                       inputs=self.run.inputs_arg(job.view, job.inputs_root))
        return self.argv(job.args, variables)

    def measure_argv(self, args: list[str], staging: Path) -> list[str]:
        return self.argv(args, self.run.variables(output=str(staging / RAW)))

    def infer_files(self, job: FilesJob) -> dict:
        argv = self.files_argv(job)
        raw = job.staging / RAW / (job.view or "")
        # ais_bench refuses an existing --output that group or others may read or write (<= 0o750).
        raw.mkdir(mode=0o750, parents=True)
        outcome = execute(argv, cwd=job.staging, log=job.log, timeout=job.timeout)
        info = self.collect(outcome, raw, job.out, job.log, argv)
        count = len(self.outputs())
        missing = [output_path("", i, k).stem for i in job.ids for k in range(count) if not has_output(job.out, i, k)]
        if missing:
            raise StageFailed(f"{self.name} wrote no output for {len(missing)} file(s), e.g. {', '.join(missing[:3])}",
                              hint=f"the eval stage reads BIN or TXT outputs; full log: {job.log}")
        return {"argv": argv, "samples": len(job.ids), **info}

    def measure(self, args: list[str], staging: Path, log: Path, timeout: float | None, loop: int) -> dict:
        argv = self.measure_argv(args, staging)
        (staging / RAW).mkdir(mode=0o750)
        outcome = execute(argv, cwd=staging, log=log, timeout=timeout)
        return {"argv": argv, **self.stats(outcome, log)}

    def argv(self, args: list[str], variables: dict) -> list[str]:
        """The tool's command line: these args rendered with these template variables."""
        raise NotImplementedError

    def collect(self, outcome, raw: Path, out: Path, log: Path, argv: list[str]) -> dict:
        """The tool's result directory under `raw` moved to `out` as `<id>_<i>.<fmt>`; what it printed."""
        raise NotImplementedError

    def stats(self, outcome, log: Path) -> dict:
        raise NotImplementedError
