"""infer: run the model on every preprocessed sample; outputs land as `<sample id>_<i>.bin`
(`.txt` where the guide asks msame for TXT) in `infer/<tool>_bs<N>/`, one layout for every
tool, so eval does not care which ran.

The runtime (om_pipeline.runtimes: ais_bench or msame as the guide runs them, or ONNX Runtime
in process) does the work; this stage gives it the samples and owns the layout and the chunks.

With the recipe's `infer.chunk: N` (files mode only), the stage itself preprocesses N samples,
runs the tool on them, keeps what the plugin's `reduce_outputs` makes of each sample's outputs
(`<id>_<i>.npy`) and deletes the chunk's inputs and raw outputs before the next chunk: disk stays
bounded by one chunk (PointRend's raw outputs are 152 MiB per image, 74 GiB for Cityscapes val).
An interrupted chunked run resumes at the first chunk it had not finished.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..plugin import reduced
from ..progress import progress
from ..runtimes import FilesJob
from ..samples import read_outputs, write_reduced
from ..state import Fingerprint
from .base import Stage, StageResult
from .dataset import load_samples
from .preprocess import preprocessing_params, write_inputs

CHUNK = "chunk"  # a chunk's inputs and raw outputs, under the staging directory
CHUNKS_DONE = "chunks-done"  # one marker per finished chunk: what a resumed run skips


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
        fingerprint = self.run.runtime.fingerprint(self.args)
        fingerprint.params.update(bs=self.run.bs, **self.run.precision_params())
        if self.run.chunked:  # preprocessing and the reduction happen here
            fingerprint.params.update(chunk=self.config.chunk, **preprocessing_params(self.run))
            fingerprint.inputs["plugin"] = self.run.plugin_source_digest()
        return fingerprint

    @property
    def args(self) -> list[str]:
        return self.run.runtime.recipe_args(self.config)

    def tools_used(self) -> list[str]:
        return list(self.run.runtime.tools)

    def job(self, staging: Path, view: str | None, ids: list[str], out: Path, inputs_root: Path | None = None) -> FilesJob:
        """`ids` of one view, read from `<inputs_root>/inputs...` (default: the preprocess
        stage's), outputs to `out`; tool scratch space under `staging`. Chunks print no progress."""
        return FilesJob(view=view, ids=ids, inputs_root=inputs_root or self.run.model_dir, out=out, staging=staging,
                        args=self.args, log=self.log, timeout=self.config.timeout,
                        quiet=self.run.options.quiet or inputs_root is not None)

    def commands(self) -> list[list[str]]:
        staging = self.run.staging_dir(self.key)
        root = staging / CHUNK if self.run.chunked else None
        argvs = [self.run.runtime.files_argv(self.job(root or staging, view, [], Path(), root)) for view in self.run.views]
        return [argv for argv in argvs if argv]

    def execute(self, staging: Path) -> StageResult:
        _, samples = load_samples(self.run.model_dir)
        if not samples:  # a shard can hold none (more shards than samples): nothing to run the tool on
            for view in self.run.views:
                self.staged(staging, f"{self.output_dir(view)}/x").parent.mkdir(exist_ok=True)
            return StageResult(info={"samples": 0})
        if self.run.chunked:
            return self.execute_chunked(staging, samples)
        ids = [s.id for s in samples]
        results = {view: self.infer_view(self.job(staging, view, ids, self.staged(staging, self.output_dir(view)))) for view in self.run.views}
        if list(results) == [None]:
            return results[None]
        argvs = [r.argv for r in results.values() if r.argv]
        return StageResult(argv=argvs or None, info={view: r.info for view, r in results.items()})

    def infer_view(self, job: FilesJob) -> StageResult:
        info = self.run.runtime.infer_files(job)
        return StageResult(argv=info.pop("argv", None), info=info)

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
                result = self.infer_view(self.job(work, view, ids, raw_out, inputs_root=work))
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
        specs = self.run.runtime.outputs()
        if not hasattr(self.run.plugin, "reduce_outputs"):
            for path in raw_out.iterdir():
                os.replace(path, out / path.name)
            return
        for sample_id in ids:
            for index, array in enumerate(reduced(self.run.plugin, read_outputs(raw_out, sample_id, specs))):
                write_reduced(out, sample_id, index, array)

    def output_dir(self, view: str | None) -> str:
        return f"{self.run.infer_name}/{view}" if view else self.run.infer_name


def directory_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
