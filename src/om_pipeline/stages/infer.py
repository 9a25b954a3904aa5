"""infer: run the model on every preprocessed sample; outputs land as `<sample id>_<i>.bin`
(`.txt` where the guide asks msame for TXT) in `infer/<tool>_bs<N>/`, one layout for every
tool, so eval does not care which ran.

- ais_bench: the guide's `python -m ais_bench` command; its result directory (timestamped or
  `--output_dirname`) is found and moved into place.
- msame: the guide's `msame` command; its timestamped directory is found from its output and
  its `<name>_output_<i>` files are renamed to the common layout.
- onnxruntime: no NPU needed; the same inputs through ONNX Runtime in process.

With the recipe's `infer.chunk: N` (files mode only), the stage itself preprocesses N samples,
runs the tool on them, keeps what the plugin's `reduce_outputs` makes of each sample's outputs
(`<id>_<i>.npy`) and deletes the chunk's inputs and raw outputs before the next chunk: disk stays
bounded by one chunk (PointRend's raw outputs are 152 MiB per image, 74 GiB for Cityscapes val).
An interrupted chunked run resumes at the first chunk it had not finished.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np

from .. import versions
from ..backends import onnxruntime as ort_backend
from ..errors import StageFailed
from ..plugin import reduced
from ..progress import progress
from ..recipe import render
from ..state import Fingerprint
from ..tools import ais_bench, msame
from ..tools.execute import execute, python_argv
from .base import Stage, StageResult
from .dataset import load_samples
from .eval import read_outputs
from .preprocess import preprocessing_params, write_inputs

RAW = "raw"
CHUNK = "chunk"  # a chunk's inputs and raw outputs, under the staging directory
CHUNKS_DONE = "chunks-done"  # one marker per finished chunk: what a resumed run skips


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
        return self.run.tool_variant

    def skip_reason(self) -> str | None:
        return "--stream: inference runs in memory inside eval" if self.run.options.stream else None

    @property
    def resumable(self) -> bool:
        return self.run.chunked

    def needs(self) -> list[str]:
        return ["dataset" if self.run.chunked else "preprocess", self.run.model_stage]

    def outputs(self) -> list[str]:
        return [self.run.infer_name]

    def fingerprint(self) -> Fingerprint:
        if self.run.tool == "onnxruntime":
            fingerprint = Fingerprint(params={"tool": "onnxruntime", "bs": self.run.bs}, tools=versions.packages("onnxruntime"))
        else:
            params = {"tool": self.run.tool, "args": self.config.tool_args(self.run.tool), "bs": self.run.bs}
            fingerprint = Fingerprint(params=params)
        fingerprint.params.update(self.run.precision_params())
        if self.run.chunked:  # preprocessing and the reduction happen here
            fingerprint.params.update(chunk=self.config.chunk, **preprocessing_params(self.run))
            fingerprint.inputs["plugin"] = self.run.plugin_source_digest()
        return fingerprint

    def tools_used(self) -> list[str]:
        return [] if self.run.tool == "onnxruntime" else [self.run.tool]

    def argv(self, staging: Path, view: str | None, inputs_root: Path | None = None) -> list[str]:
        variables = self.run.variables(view, output=str(staging / RAW / (view or "")), inputs=self.run.inputs_arg(view, inputs_root))
        args = [render(arg, variables) for arg in self.config.tool_args(self.run.tool)]
        if self.run.options.device is not None and self.run.tool == "ais_bench":
            args += ["--device", str(self.run.options.device)]  # --devices: this shard's NPU
        return tool_argv(self.run.tool, args)

    def commands(self) -> list[list[str]]:
        if self.run.tool == "onnxruntime":
            return []
        staging = self.run.model_dir / ".staging" / self.key
        if self.run.chunked:
            return [self.argv(staging / CHUNK, view, staging / CHUNK) for view in self.run.views]
        return [self.argv(staging, view) for view in self.run.views]

    def execute(self, staging: Path) -> StageResult:
        _, samples = load_samples(self.run.model_dir)
        if not samples:  # a shard can hold none (more shards than samples): nothing to run the tool on
            for view in self.run.views:
                self.staged(staging, f"{self.output_dir(view)}/x").parent.mkdir(exist_ok=True)
            return StageResult(info={"samples": 0})
        if self.run.chunked:
            return self.execute_chunked(staging, samples)
        ids = [s.id for s in samples]
        results = {view: self.infer_view(staging, view, ids, self.staged(staging, self.output_dir(view))) for view in self.run.views}
        if list(results) == [None]:
            return results[None]
        return StageResult(argv=[r.argv for r in results.values()] if self.run.tool != "onnxruntime" else None,
                           info={view: r.info for view, r in results.items()})

    def infer_view(self, staging: Path, view: str | None, ids: list[str], out: Path, inputs_root: Path | None = None) -> StageResult:
        """The tool on `ids`, reading `<inputs_root>/inputs...` (default: the preprocess stage's),
        leaving `<id>_<i>.bin` (or .txt) in `out`; tool scratch space under `staging`."""
        if self.run.tool == "onnxruntime":
            out.mkdir(parents=True)
            info = ort_backend.infer_files(self.ort_session, (inputs_root or self.run.model_dir) / self.run.inputs_dir(view),
                                           ids, out, self.run.recipe.model.model_copy(update={"outputs": self.run.result_outputs}),
                                           self.run.bs, quiet=self.run.options.quiet or inputs_root is not None)
            return StageResult(info=info)
        argv = self.argv(staging, view, inputs_root)
        raw = staging / RAW / (view or "")
        # ais_bench refuses an existing --output that group or others may read or write (<= 0o750).
        raw.mkdir(mode=0o750, parents=True)
        outcome = execute(argv, cwd=staging, log=self.log, timeout=self.config.timeout)
        info = (run_msame(outcome, raw, out, self.log) if self.run.tool == "msame"
                else run_ais_bench(outcome, raw, out, self.log, output_dirname(argv)))
        missing = [f"{i}_{k}" for i in ids for k in range(len(self.run.result_outputs)) if not _has_output(out, f"{i}_{k}")]
        if missing:
            raise StageFailed(f"{self.run.tool} wrote no output for {len(missing)} file(s), e.g. {', '.join(missing[:3])}",
                              hint=f"the eval stage reads BIN or TXT outputs; full log: {self.log}")
        return StageResult(argv=argv, info={"samples": len(ids), **info})

    @functools.cached_property
    def ort_session(self):
        """One ONNX Runtime session for every view and chunk (PointRend's graph is 190 MB)."""
        return ort_backend.session(self.run.shared_path(self.run.model_onnx), self.run.emulated_precision)

    def execute_chunked(self, staging: Path, samples: list) -> StageResult:
        size = self.config.chunk
        chunks = [samples[start:start + size] for start in range(0, len(samples), size)]
        done_dir = staging / CHUNKS_DONE
        done_dir.mkdir(exist_ok=True)
        resumed, peak, argv = 0, 0, None
        for index, chunk in enumerate(progress(chunks, f"infer {self.run.name} in chunks of {size}", quiet=self.run.options.quiet)):
            ids = [s.id for s in chunk]
            marker = done_dir / f"{index}.json"
            if marker.is_file() and marker.read_text() == json.dumps(ids):
                resumed += 1
                continue
            work = staging / CHUNK
            shutil.rmtree(work, ignore_errors=True)
            write_inputs(self.run, chunk, work)
            for view in self.run.views:
                raw_out = work / "out" / (view or "")
                raw_out.parent.mkdir(parents=True, exist_ok=True)
                result = self.infer_view(work, view, ids, raw_out, inputs_root=work)
                argv = argv or result.argv
                peak = max(peak, directory_bytes(staging))
                self.keep_reduced(raw_out, ids, self.staged(staging, self.output_dir(view) + "/x").parent)
            shutil.rmtree(work)
            marker.write_text(json.dumps(ids))
        peak = max(peak, directory_bytes(staging))
        return StageResult(argv=argv, info={"samples": len(samples), "chunk": size, "chunks": len(chunks),
                                            "resumed_chunks": resumed, "peak_disk_bytes": peak})

    def keep_reduced(self, raw_out: Path, ids: list[str], out: Path) -> None:
        """Each sample's raw outputs -> the plugin's reduce_outputs -> `<id>_<i>.npy` in `out`
        (written under a temporary name, then renamed: a killed run leaves no half file);
        without reduce_outputs, the raw files move as they are."""
        specs = self.run.result_outputs
        if not hasattr(self.run.plugin, "reduce_outputs"):
            for path in raw_out.iterdir():
                os.replace(path, out / path.name)
            return
        for sample_id in ids:
            for index, array in enumerate(reduced(self.run.plugin, read_outputs(raw_out, sample_id, specs))):
                partial = out / f".{sample_id}_{index}.npy.partial"
                with open(partial, "wb") as handle:
                    np.save(handle, array, allow_pickle=False)
                os.replace(partial, out / f"{sample_id}_{index}.npy")

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


def directory_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _has_output(directory: Path, stem: str) -> bool:
    return (directory / f"{stem}.bin").exists() or (directory / f"{stem}.txt").exists()
