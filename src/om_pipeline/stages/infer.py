"""infer: run the model on every preprocessed sample; outputs land as `<sample id>_<i>.bin`
(`.txt` where the guide asks msame for TXT) in `infer/<tool>_bs<N>/`, one layout for every
tool, so eval does not care which ran.

- ais_bench: the guide's `python -m ais_bench` command; its result directory (timestamped or
  `--output_dirname`) is found and moved into place.
- msame: the guide's `msame` command; its timestamped directory is found from its output and
  its `<name>_output_<i>` files are renamed to the common layout.
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
from ..tools import ais_bench, msame
from ..tools.execute import execute, python_argv
from .base import Stage, StageResult
from .dataset import load_samples

RAW = "raw"


def ais_bench_argv(*args: str) -> list[str]:
    """`python -m ais_bench`: the interpreter is ompipe's unless OMPIPE_AIS_BENCH_PYTHON names
    another (ais_bench often lives in the system Python that CANN's wheels were installed into)."""
    python = os.environ.get("OMPIPE_AIS_BENCH_PYTHON")
    return [python, "-m", "ais_bench", *args] if python else python_argv("-m", "ais_bench", *args)


def tool_argv(tool: str, args: list[str]) -> list[str]:
    """msame is a binary the user builds from Ascend/tools; OMPIPE_MSAME names it when it is not on PATH."""
    return [os.environ.get("OMPIPE_MSAME", "msame"), *args] if tool == "msame" else ais_bench_argv(*args)


class InferStage(Stage):
    kind = "infer"
    per_bs = True

    @property
    def variant(self) -> str:
        return self.run.tool

    def skip_reason(self) -> str | None:
        return "--stream: inference runs in memory inside eval" if self.run.options.stream else None

    def needs(self) -> list[str]:
        return ["preprocess", self.run.model_stage]

    def outputs(self) -> list[str]:
        return [self.run.infer_name]

    def fingerprint(self) -> Fingerprint:
        if self.run.tool == "onnxruntime":
            return Fingerprint(params={"tool": "onnxruntime", "bs": self.run.bs}, tools=versions.packages("onnxruntime"))
        params = {"tool": self.run.tool, "args": self.config.tool_args(self.run.tool), "bs": self.run.bs}
        return Fingerprint(params=params, tools={"cann": versions.cann()})

    def argv(self, staging: Path, view: str | None) -> list[str]:
        variables = self.run.variables(view, output=str(staging / RAW / (view or "")))
        return tool_argv(self.run.tool, [render(arg, variables) for arg in self.config.tool_args(self.run.tool)])

    def commands(self) -> list[list[str]]:
        if self.run.tool == "onnxruntime":
            return []
        return [self.argv(self.run.model_dir / ".staging" / self.key, view) for view in self.run.views]

    def execute(self, staging: Path) -> StageResult:
        _, samples = load_samples(self.run.model_dir)
        ids = [s.id for s in samples]
        results = {view: self.infer_view(staging, view, ids) for view in self.run.views}
        if list(results) == [None]:
            return results[None]
        return StageResult(argv=[r.argv for r in results.values()] if self.run.tool != "onnxruntime" else None,
                           info={view: r.info for view, r in results.items()})

    def infer_view(self, staging: Path, view: str | None, ids: list[str]) -> StageResult:
        out = self.staged(staging, self.output_dir(view))
        if self.run.tool == "onnxruntime":
            out.mkdir()
            info = ort_backend.infer_files(self.run.path(self.run.model_onnx), self.run.path(self.run.inputs_dir(view)), ids,
                                           out, self.run.recipe.model.model_copy(update={"outputs": self.run.result_outputs}),
                                           self.run.bs, quiet=self.run.options.quiet)
            return StageResult(info=info)
        argv = self.argv(staging, view)
        raw = staging / RAW / (view or "")
        # ais_bench refuses an existing --output that group or others may read or write (<= 0o750).
        raw.mkdir(mode=0o750, parents=True)
        outcome = execute(argv, cwd=staging, log=self.log)
        info = (run_msame(outcome, raw, out, self.log) if self.run.tool == "msame"
                else run_ais_bench(outcome, raw, out, self.log, output_dirname(argv)))
        missing = [f"{i}_{k}" for i in ids for k in range(len(self.run.result_outputs)) if not _has_output(out, f"{i}_{k}")]
        if missing:
            raise StageFailed(f"{self.run.tool} wrote no output for {len(missing)} file(s), e.g. {', '.join(missing[:3])}",
                              hint=f"the eval stage reads BIN or TXT outputs; full log: {self.log}")
        return StageResult(argv=argv, info={"samples": len(ids), **info})

    def output_dir(self, view: str | None) -> str:
        return f"{self.run.infer_name}/{view}" if view else self.run.infer_name


def output_dirname(argv: list[str]) -> str | None:
    """The guide's `--output_dirname NAME` (either form), else None: a timestamped directory."""
    for index, token in enumerate(argv):
        flag, equals, value = token.partition("=")
        if flag == "--output_dirname":
            return value if equals else argv[index + 1]
    return None


def run_ais_bench(outcome, raw: Path, out: Path, log: Path, dirname: str | None) -> dict:
    if outcome.returncode != 0:
        raise StageFailed(f"ais_bench failed (exit {outcome.returncode})", details=ais_bench.error_tail(outcome.output),
                          hint=f"full log: {log}")
    result_dir = ais_bench.find_result_dir(raw, dirname, set())
    summary = ais_bench.read_summary(result_dir)
    result_dir.rename(out)
    throughput = ais_bench.parse_throughput(outcome.output)
    return {"throughput": throughput and throughput.__dict__,
            "summary": {k: summary.get(k) for k in ("NPU_compute_time", "throughput") if summary}}


def run_msame(outcome, raw: Path, out: Path, log: Path) -> dict:
    """msame exits 0 after some argument errors: `[ERROR]` lines fail it too (ascend-tools.md §3)."""
    result = msame.parse_output(outcome.output, outcome.returncode)
    if not result.ok:
        raise StageFailed(f"msame failed (exit {outcome.returncode})", details=result.errors or outcome.output.splitlines()[-10:],
                          hint=f"full log: {log}")
    result_dir = msame.find_result_dir(raw, result)
    result_dir.rename(out)
    for path in out.iterdir():  # <name>_output_<i>.<fmt> -> <name>_<i>.<fmt>, the layout eval reads
        stem, _, index = path.stem.rpartition("_output_")
        if stem and index.isdigit():
            path.rename(out / f"{stem}_{index}{path.suffix}")
    return {"average_ms": result.average_ms, "average_without_first_ms": result.average_without_first_ms}


def _has_output(directory: Path, stem: str) -> bool:
    return (directory / f"{stem}.bin").exists() or (directory / f"{stem}.txt").exists()
