"""ONNX Runtime, in process: the runtime without an NPU, and the accuracy baseline for the .om.

Files mode reads the same `inputs/<name>/<id>.bin` files ais_bench would and writes the same
`<id>_<i>.bin` outputs, batching as ais_bench does (the last batch padded with its first
sample, the padding discarded). `--precision fp16` computes as the .om would under the recipe's
atc precision_mode (om_pipeline.fp16).
"""
from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from .. import versions
from ..progress import progress
from ..samples import output_path
from ..state import Fingerprint
from .base import FilesJob, Session


class OnnxModel:
    """An ONNX file in an ONNX Runtime CPU session, called with one batch of inputs."""

    def __init__(self, onnx_path: Path, model_io, precision=None):
        self._session = ort_session(onnx_path, precision)
        self._inputs = [spec.name for spec in model_io.inputs]
        self._outputs = [spec.name for spec in model_io.outputs]

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self._outputs, dict(zip(self._inputs, arrays)))


class OnnxRuntime:
    name: ClassVar[str] = "onnxruntime"
    runs_om: ClassVar[bool] = False
    tools: ClassVar[tuple[str, ...]] = ()
    multi_device: ClassVar[bool] = False
    ray_resource: ClassVar[str] = "CPU"
    target = "onnxruntime"

    def __init__(self, run):
        self.run = run

    def check(self) -> None:
        pass

    def recipe_args(self, stage) -> list[str]:
        return []  # nothing to configure: the recipe's args are the .om tools'

    def fingerprint(self, args: list[str]) -> Fingerprint:
        return Fingerprint(params={"tool": self.name}, tools=versions.packages("onnxruntime"))

    def files_argv(self, job: FilesJob) -> None:
        return None

    def measure_argv(self, args: list[str], staging: Path) -> None:
        return None

    def outputs(self):
        """The outputs of the graph exported for ONNX Runtime, in the recipe's order."""
        return self.run.output_specs(self.target)

    def numerics(self) -> str:
        precision = self.run.emulated_precision
        return precision.numerics if precision else "fp32"

    def precision_params(self) -> dict[str, str]:
        precision = self.run.emulated_precision
        return {"precision": precision.mode} if precision else {}

    @functools.cached_property
    def _files_session(self):
        """One session for every view and chunk of a stage (PointRend's graph is 190 MB)."""
        return ort_session(self.run.shared_path(self.run.model_onnx), self.run.emulated_precision)

    def model_io(self):
        """The recipe's model inputs with the outputs this graph yields."""
        return self.run.recipe.model.model_copy(update={"outputs": self.outputs()})

    def infer_files(self, job: FilesJob) -> dict:
        job.out.mkdir(parents=True)
        return infer_files(self._files_session, job.inputs_root / self.run.inputs_dir(job.view), job.ids, job.out,
                           self.model_io(), self.run.bs, quiet=job.quiet)

    def measure(self, args: list[str], staging: Path, log: Path, timeout: float | None, loop: int) -> dict:
        return measure(self.run.shared_path(self.run.model_onnx), self.run.recipe.model, self.run.bs, loop)

    def session(self) -> Session:
        return OnnxModel(self.run.shared_path(self.run.model_onnx), self.model_io(), self.run.emulated_precision)

    @staticmethod
    def version() -> str:
        return f"onnxruntime {versions.package('onnxruntime')}"


def ort_session(onnx_path: Path, precision=None):
    """A CPU session; with `precision` (an fp16.Precision), computing as the .om would."""
    import onnxruntime

    if precision is not None:
        import onnx

        from .. import fp16

        return fp16.session(onnx.load(str(onnx_path)), precision)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def batches(ids: list[str], bs: int) -> list[tuple[list[str], int]]:
    """(ids, padding) per batch; the last batch is filled up with its first sample, as ais_bench
    does (a static-shape model needs a full batch; the padding's outputs are discarded)."""
    result = []
    for start in range(0, len(ids), bs):
        chunk = ids[start:start + bs]
        result.append((chunk + [chunk[0]] * (bs - len(chunk)), bs - len(chunk)))
    return result


def infer_files(runner, inputs_root: Path, ids: list[str], out: Path, model_io, bs: int, *, quiet: bool = False) -> dict:
    """`runner`: a session (see `ort_session`), made once by the caller for every view and chunk."""
    timings = []
    for chunk, padding in progress(batches(ids, bs), f"onnxruntime bs{bs}", quiet=quiet):
        feeds = {
            spec.name: np.stack([np.fromfile(inputs_root / spec.name / f"{i}.bin", dtype=spec.dtype).reshape(spec.shape) for i in chunk])
            for spec in model_io.inputs
        }
        started = time.perf_counter()
        outputs = runner.run([o.name for o in model_io.outputs], feeds)
        timings.append((time.perf_counter() - started) * 1000)
        for position, sample_id in enumerate(chunk[: bs - padding]):
            for index, array in enumerate(outputs):
                np.ascontiguousarray(array[position]).tofile(output_path(out, sample_id, index))
    return {"samples": len(ids), "batches": len(timings), "median_batch_ms": statistics.median(timings) if timings else None}


def measure(onnx_path: Path, model_io, bs: int, loop: int, warmup: int = 2) -> dict:
    """Pure inference on random data, like `ais_bench --loop N` without --input."""
    runner = ort_session(onnx_path)
    rng = np.random.default_rng(0)
    feeds = {spec.name: rng.random((bs, *spec.shape)).astype(spec.dtype) for spec in model_io.inputs}
    for _ in range(warmup):
        runner.run(None, feeds)
    times = []
    for _ in range(loop):
        started = time.perf_counter()
        runner.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000)
    median = statistics.median(times)
    return {"fps": 1000 * bs / median, "batchsize": bs, "mean_ms": statistics.fmean(times), "median_ms": median,
            "loop": loop, "warmup": warmup}

RUNTIME = OnnxRuntime
