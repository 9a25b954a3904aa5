"""ONNX Runtime, in process: the no-NPU backend and the accuracy baseline for the .om.

Files mode reads the same `inputs/<name>/<id>.bin` files ais_bench would and writes the same
`<id>_<i>.bin` outputs, batching as ais_bench does (the last batch padded with the first
sample, the padding discarded).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from ..progress import progress


def session(onnx_path: Path, precision=None):
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
    """`runner`: a session (see `session`), made once by the caller for every view and chunk."""
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
                np.ascontiguousarray(array[position]).tofile(out / f"{sample_id}_{index}.bin")
    return {"samples": len(ids), "batches": len(timings), "median_batch_ms": statistics.median(timings) if timings else None}


def measure(onnx_path: Path, model_io, bs: int, loop: int, warmup: int = 2) -> dict:
    """Pure inference on random data, like `ais_bench --loop N` without --input."""
    runner = session(onnx_path)
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
