"""Streaming mode (`--stream`): preprocess in a pool of worker processes -> batches of bs ->
the model in memory (an ONNX Runtime session, or ais_bench's InferSession for the .om) ->
the plugin's evaluator. No `.bin` file is written, and memory is bounded: the workers fill a
ring of batch buffers (workers.BatchRing), a few batches ahead of the model (ring_slots).

The same plugin functions as the files mode, the same batching (the last batch padded with its
first sample, the padding discarded), so the metric is the same to the last digit.
"""
from __future__ import annotations

import collections
import contextlib
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import UserError
from .plugin import Sample, reduced
from .progress import progress
from .stages.preprocess import model_inputs
from .workers import BatchRing, call_job, forked_pool, workers_for

class OnnxRuntimeModel:
    def __init__(self, onnx_path: Path, model_io, precision=None):
        from .backends.onnxruntime import session

        self._session = session(onnx_path, precision)
        self._inputs = [spec.name for spec in model_io.inputs]
        self._outputs = [spec.name for spec in model_io.outputs]

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self._outputs, dict(zip(self._inputs, arrays)))


class InferSessionModel:
    """The .om through ais_bench's Python API (the fake toolchain provides a fake of it)."""

    def __init__(self, om_path: Path, toolchain: str, device: int = 0):
        if toolchain == "fake":
            from .testing.toolchain import FAKE_PYTHON

            if str(FAKE_PYTHON) not in sys.path:
                sys.path.insert(0, str(FAKE_PYTHON))
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError:
            raise UserError("--stream with the .om needs ais_bench's Python API (ais_bench.infer.interface)",
                            hint="install the aclruntime and ais_bench wheels, or use --backend onnxruntime") from None
        self._session = InferSession(device, str(om_path))  # the ACL device id (--devices: this shard's)

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return list(self._session.infer(arrays, mode="static"))


def evaluate(run, samples: list[Sample], evaluator, workers: int | None) -> None:
    """Every sample through preprocess, the model and the evaluator, in sample order.
    `workers`: 0 preprocesses in this process, N in a pool of N; None chooses by timing the first."""
    if run.tool == "msame":
        raise UserError("msame has no in-memory API: --stream runs the .om through ais_bench", hint="use --infer-tool ais_bench")
    model = (OnnxRuntimeModel(run.shared_path(run.model_onnx), run.recipe.model.model_copy(update={"outputs": run.result_outputs}),
                              run.emulated_precision)
             if run.tool == "onnxruntime"
             else InferSessionModel(run.shared_path(run.om_name), run.options.toolchain, run.options.device or 0))
    with preprocessed_batches(run, samples, workers) as batches:
        for batch, inputs in progress(batches, f"stream {run.name}", quiet=run.options.quiet, total=-(-len(samples) // run.bs)):
            _evaluate_batch(batch, inputs, model, evaluator, run.views, run.plugin)


@contextlib.contextmanager
def preprocessed_batches(run, samples: list[Sample], workers: int | None) -> Iterator[Iterator[tuple[list[Sample], dict]]]:
    """(batch of samples, its model inputs per view: arrays of bs rows, padded), in order. The
    arrays are ring buffers: valid until the next batch is asked for."""
    if not samples:
        yield iter(())
        return
    workers = workers_for(workers, lambda: model_inputs(run, samples[0]))
    batches = [samples[start:start + run.bs] for start in range(0, len(samples), run.bs)]
    ring = BatchRing(run.views, run.recipe.model.inputs, run.bs, slots=min(len(batches), ring_slots(workers, run.bs)))

    def fill(slot: int, row: int, sample: Sample) -> None:  # here, or in a worker forked after the ring
        ring.put(slot, row, model_inputs(run, sample))

    with _submitter(fill, workers) as submit:
        yield ((batch, ring.padded(slot, len(batch))) for batch, slot in _filled_batches(batches, len(ring.slots), submit))


def ring_slots(workers: int, bs: int) -> int:
    """One batch in the model, and enough being filled to keep every worker busy: at least two
    samples queued per worker (at bs 1, three slots would idle all but two of eight workers)."""
    return 1 + max(2, -(-2 * workers // bs))


@contextlib.contextmanager
def _submitter(fill: Callable[..., None], workers: int) -> Iterator[Callable[..., Future]]:
    """submit(slot, row, sample) -> a future: done at once in this process, or in a worker."""
    if workers == 0:
        def submit_here(*task) -> Future:
            future: Future = Future()
            fill(*task)
            future.set_result(None)
            return future
        yield submit_here
        return
    with forked_pool(workers, fill) as pool:  # forked after the ring exists: they share it
        yield lambda *task: pool.submit(call_job, *task)


def _filled_batches(batches: list[list[Sample]], slots: int, submit) -> Iterator[tuple[list[Sample], int]]:
    """(batch, its ring slot) in order, each once all its rows are filled. A slot is reused only
    after the caller is done with its batch (the next batch is asked for), so at most `slots`
    batches are in memory."""
    pending: collections.deque = collections.deque()
    for index, batch in enumerate(batches):
        if len(pending) == slots:
            yield _wait(pending.popleft())
        slot = index % slots
        futures = [submit(slot, row, sample) for row, sample in enumerate(batch)]
        pending.append((batch, slot, futures))
    while pending:
        yield _wait(pending.popleft())


def _wait(entry) -> tuple[list[Sample], int]:
    batch, slot, futures = entry
    for future in futures:
        future.result()  # a worker's error is raised here, as itself
    return batch, slot


def _evaluate_batch(batch: list[Sample], inputs: dict, model, evaluator, views: tuple, plugin) -> None:
    outputs_by_view = {view: model(inputs[view]) for view in views}
    for position, sample in enumerate(batch):
        outputs = {view: [np.asarray(o[position]) for o in outs] for view, outs in outputs_by_view.items()}
        evaluator.add(sample, reduced(plugin, outputs[None] if views == (None,) else outputs))
