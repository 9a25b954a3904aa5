"""Streaming mode (`--stream`): preprocess in a pool of worker processes -> batches of bs ->
the model in memory (an ONNX Runtime session, or ais_bench's InferSession for the .om) ->
the plugin's evaluator. No `.bin` file is written, and memory is bounded: at most a few batches
are preprocessed ahead of the model.

The same plugin functions as the files mode, the same batching (the last batch padded with its
first sample, the padding discarded), so the metric is the same to the last digit.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import UserError
from .plugin import Sample, reduced
from .progress import progress
from .stages.preprocess import by_view, check_inputs

BATCHES_AHEAD = 3  # preprocessing may run this many batches ahead of the model
# Below this per-sample cost, shipping arrays between processes costs more than it saves.
# Measured on 2 cores (benchmarks/bench_pipeline.py): SuperPoint's ~0.7 ms preprocessing ran at
# 0.42x through a 2-process pool, CenterNet's ~9 ms (JPEG decode + affine, 3 MB out) at 0.62x:
# OpenCV's own threads already use both cores, and every sample is pickled across.
IN_PROCESS_BELOW_SECONDS = 0.02

_worker_state: dict[str, Any] = {}  # set before the pool forks: the plugin and its parameters


def _preprocess_in_worker(sample: Sample) -> dict:
    plugin, params, views, specs = (_worker_state[k] for k in ("plugin", "params", "views", "specs"))
    arrays = by_view(plugin.preprocess(sample, params), views, sample.id)
    return {view: check_inputs(per_view, specs, sample.id) for view, per_view in arrays.items()}


def bounded_imap(pool, function: Callable, items: Iterable, ahead: int) -> Iterator:
    """Like pool.imap, in order, but with at most `ahead` items submitted and not yet consumed
    (pool.imap runs ahead without limit: a slow model would let every preprocessed input pile up)."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.apply_async(function, (item,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


class OnnxRuntimeModel:
    def __init__(self, onnx_path: Path, model_io):
        from .backends.onnxruntime import session

        self._session = session(onnx_path)
        self._inputs = [spec.name for spec in model_io.inputs]
        self._outputs = [spec.name for spec in model_io.outputs]

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self._outputs, dict(zip(self._inputs, arrays)))


class InferSessionModel:
    """The .om through ais_bench's Python API (the fake toolchain provides a fake of it)."""

    def __init__(self, om_path: Path, toolchain: str):
        if toolchain == "fake":
            from .testing.toolchain import FAKE_PYTHON

            if str(FAKE_PYTHON) not in sys.path:
                sys.path.insert(0, str(FAKE_PYTHON))
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError:
            raise UserError("--stream with the .om needs ais_bench's Python API (ais_bench.infer.interface)",
                            hint="install the aclruntime and ais_bench wheels, or use --backend onnxruntime") from None
        self._session = InferSession(0, str(om_path))

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return list(self._session.infer(arrays, mode="static"))


def evaluate(run, samples: list[Sample], evaluator, workers: int | None) -> None:
    """Every sample through preprocess, the model and the evaluator, in sample order.
    `workers`: 0 preprocesses in this process, N in a pool of N; None chooses by measuring."""
    if run.tool == "msame":
        raise UserError("msame has no in-memory API: --stream runs the .om through ais_bench", hint="use --infer-tool ais_bench")
    model = (OnnxRuntimeModel(run.path(run.model_onnx), run.recipe.model.model_copy(update={"outputs": run.result_outputs}))
             if run.tool == "onnxruntime"
             else InferSessionModel(run.path(run.om_name), run.options.toolchain))
    _worker_state.update(plugin=run.plugin, params=run.recipe.stage_params("preprocess"), views=run.views,
                         specs=run.recipe.model.inputs)
    if workers is None:
        workers = _choose_workers(samples)
    with _preprocessed(samples, workers, ahead=BATCHES_AHEAD * run.bs) as preprocessed:
        for batch in progress(_batches(zip(samples, preprocessed), run.bs), f"stream {run.name}",
                              quiet=run.options.quiet, total=-(-len(samples) // run.bs)):
            _evaluate_batch(batch, model, evaluator, run.views, run.bs, run.plugin)


def _choose_workers(samples: list[Sample]) -> int:
    """Time one sample's preprocessing here: cheap preprocessing, or a machine with no core to
    spare, stays in this process."""
    if not samples or (os.cpu_count() or 1) <= 2:
        return 0
    started = time.perf_counter()
    _preprocess_in_worker(samples[0])
    return 0 if time.perf_counter() - started < IN_PROCESS_BELOW_SECONDS else default_workers()


@contextlib.contextmanager
def _preprocessed(samples: list[Sample], workers: int, ahead: int) -> Iterator[Iterator[dict]]:
    if workers == 0:
        yield map(_preprocess_in_worker, samples)
        return
    context = multiprocessing.get_context("fork")  # workers inherit the loaded plugin (also a file: plugin)
    with context.Pool(processes=workers) as pool:
        yield bounded_imap(pool, _preprocess_in_worker, samples, ahead=ahead)


def _batches(pairs: Iterable, bs: int) -> Iterator[list]:
    batch = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == bs:
            yield batch
            batch = []
    if batch:
        yield batch


def _evaluate_batch(batch: list, model, evaluator, views: tuple, bs: int, plugin) -> None:
    padding = bs - len(batch)
    outputs_by_view = {}
    for view in views:
        per_sample = [arrays[view] for _, arrays in batch] + [batch[0][1][view]] * padding
        stacked = [np.stack(column) for column in zip(*per_sample)]
        outputs_by_view[view] = model(stacked)
    for position, (sample, _) in enumerate(batch):
        outputs = {view: [np.asarray(o[position]) for o in outs] for view, outs in outputs_by_view.items()}
        evaluator.add(sample, reduced(plugin, outputs[None] if views == (None,) else outputs))


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
