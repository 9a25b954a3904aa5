"""infer: run the model on every preprocessed sample; outputs land as `<sample id>_<i>.bin`
in `infer/<backend>_bs<N>/`, the same layout for both backends, so eval does not care which.

- ais_bench: the guide's `python -m ais_bench` command; its result directory (timestamped or
  `--output_dirname`) is found and moved into place.
- onnxruntime: no NPU needed; the same inputs through ONNX Runtime in process.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import versions
from ..backends import onnxruntime as ort_backend
from ..errors import StageFailed
from ..recipe import render
from ..state import Fingerprint
from ..tools import ais_bench
from ..tools.execute import execute, python_argv
from .base import Stage, StageResult
from .dataset import load_samples

RAW = "raw"


def ais_bench_argv(*args: str) -> list[str]:
    """`python -m ais_bench`: the interpreter is ompipe's unless OMPIPE_AIS_BENCH_PYTHON names
    another (ais_bench often lives in the system Python that CANN's wheels were installed into)."""
    python = os.environ.get("OMPIPE_AIS_BENCH_PYTHON")
    return [python, "-m", "ais_bench", *args] if python else python_argv("-m", "ais_bench", *args)


class InferStage(Stage):
    kind = "infer"
    per_bs = True

    @property
    def variant(self) -> str:
        return self.run.backend

    def needs(self) -> list[str]:
        stages = self.run.recipe.stages
        model = "atc" if self.run.backend == "ais_bench" else ("simplify" if stages.simplify else "export")
        return ["preprocess", model]

    def outputs(self) -> list[str]:
        return [self.run.infer_name]

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "backend": self.run.backend, "bs": self.run.bs}
        if self.run.backend == "ais_bench":
            return Fingerprint(params=params, tools={"cann": versions.cann()})
        return Fingerprint(params={"backend": self.run.backend, "bs": self.run.bs}, tools=versions.packages("onnxruntime"))

    def argv(self, staging: Path, view: str | None) -> list[str]:
        variables = self.run.variables(view, output=str(staging / RAW / (view or "")))
        return ais_bench_argv(*(render(arg, variables) for arg in self.config.args))

    def commands(self) -> list[list[str]]:
        staging = self.run.model_dir / ".staging" / self.key
        return [self.argv(staging, view) for view in self.run.views] if self.run.backend == "ais_bench" else []

    def execute(self, staging: Path) -> StageResult:
        _, samples = load_samples(self.run.model_dir)
        ids = [s.id for s in samples]
        results = {view: self.infer_view(staging, view, ids) for view in self.run.views}
        if list(results) == [None]:
            return results[None]
        return StageResult(argv=[r.argv for r in results.values()] if self.run.backend == "ais_bench" else None,
                           info={view: r.info for view, r in results.items()})

    def infer_view(self, staging: Path, view: str | None, ids: list[str]) -> StageResult:
        out = self.staged(staging, self.output_dir(view))
        if self.run.backend == "onnxruntime":
            out.mkdir()
            info = ort_backend.infer_files(self.run.path(self.run.model_onnx), self.run.path(self.run.inputs_dir(view)), ids,
                                           out, self.run.recipe.model, self.run.bs, quiet=self.run.options.quiet)
            return StageResult(info=info)
        argv = self.argv(staging, view)
        raw = staging / RAW / (view or "")
        # ais_bench refuses an existing --output that group or others may read or write (<= 0o750).
        raw.mkdir(mode=0o750, parents=True)
        outcome = execute(argv, cwd=staging, log=self.log)
        if outcome.returncode != 0:
            raise StageFailed(f"ais_bench failed (exit {outcome.returncode})",
                              details=ais_bench.error_tail(outcome.output), hint=f"full log: {self.log}")
        result_dir = ais_bench.find_result_dir(raw, None, set())
        summary = ais_bench.read_summary(result_dir)
        result_dir.rename(out)
        missing = [f"{i}_{k}.bin" for i in ids for k in range(len(self.run.recipe.model.outputs)) if not (out / f"{i}_{k}.bin").exists()]
        if missing:
            raise StageFailed(f"ais_bench wrote no output for {len(missing)} file(s), e.g. {', '.join(missing[:3])}",
                              hint=f"check the --outfmt (BIN expected) and the log {self.log}")
        throughput = ais_bench.parse_throughput(outcome.output)
        return StageResult(argv=argv, info={"samples": len(ids), "throughput": throughput and throughput.__dict__,
                                            "summary": {k: summary.get(k) for k in ("NPU_compute_time", "throughput") if summary}})

    def output_dir(self, view: str | None) -> str:
        return f"{self.run.infer_name}/{view}" if view else self.run.infer_name
