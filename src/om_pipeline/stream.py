"""Streaming mode (`--stream`): preprocess in a pool of worker processes -> batches of bs ->
the model in memory (the runtime's session: ONNX Runtime, or ais_bench's InferSession for the .om) ->
the plugin's evaluator. No `.bin` file is written, and memory is bounded: the workers fill a
ring of batch buffers (workers.BatchRing), a few batches ahead of the model (ring_slots).

The same plugin functions as the files mode, the same batching (the last batch padded with its
first sample, the padding discarded), so the metric is the same to the last digit.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
import multiprocessing
import sys
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

import numpy as np

from .errors import UserError
from .plugin import Sample, reduced, shard_key
from .progress import progress
from .shard import shard_of
from .stages.preprocess import model_inputs
from .workers import BatchRing, call_job, choose_workers, forked_pool, start_worker, workers_for

def evaluate(run, samples: list[Sample], evaluator, workers: int | None) -> None:
    """Every sample through preprocess, the model and the evaluator, in sample order.
    `workers`: 0 preprocesses and evaluates in this process, N in pools of N; None chooses.

    The model runs on a thread of its own, fed a queue of up to `queued_batches` batches: while
    the NPU (or ONNX Runtime, which releases the GIL) works through them, this thread scores the
    oldest finished one and asks for the next (which fills the ring: here when preprocessing is
    in-process, measured cheaper than shipping it out), so the host's work, pauses included (an
    evaluator decoding a chunk of samples at once), hides behind the model's. A mergeable
    evaluator (state/merge) runs in worker processes (EvaluatorShards) when its plugin asks and
    cores allow."""
    depth = queued_batches(run, len(samples))
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ompipe-model") as model_thread, \
            _evaluation(run, samples, evaluator, workers) as add, _gil_handed_over_within(MODEL_THREAD_WAIT_S):
        # Made on the thread that runs it: a device context (ACL's) belongs to the thread that set it.
        model = model_thread.submit(lambda: run.runtime.session()).result()

        def score_oldest() -> None:
            batch, outputs = in_flight.popleft()
            _evaluate_batch(batch, outputs.result(), add, run.views, run.plugin)

        # Asking for a batch releases the one `held` before it: scored, so the model is done with it.
        with preprocessed_batches(run, samples, workers, held=depth + 1) as batches:
            in_flight: collections.deque = collections.deque()  # (batch, its outputs by view, to come), in order
            for batch, inputs in progress(batches, f"stream {run.name}", quiet=run.options.quiet, total=-(-len(samples) // run.bs)):
                in_flight.append((batch, model_thread.submit(_run_views, model, inputs, run.views)))
                if len(in_flight) > depth:
                    score_oldest()
            while in_flight:
                score_oldest()


# How long the model thread may wait for the GIL when its call returns, before it can start the
# next batch. Python's default, 5 ms, is how long this thread, busy in Python (decoding, scoring),
# keeps the GIL from a waiting thread: up to 5 ms of NPU idle per model call, 64 % of a TransPose
# batch's 7.8 ms at the guide's 512 fps (measured: gaps of 1.4 ms median between its NPU calls).
MODEL_THREAD_WAIT_S = 0.0005


@contextlib.contextmanager
def _gil_handed_over_within(seconds: float) -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


# The ring holds the batches queued for the model and those being filled ahead: up to this many
# bytes of inputs, or two batches where one is larger.
RING_BYTES = 512 << 20
MAX_QUEUED_BATCHES = 8


def queued_batches(run, samples: int) -> int:
    """Batches queued for the model ahead of the evaluator: enough NPU work to cover this
    thread's pauses (TransPose's evaluator decodes 64 samples at once: 82 ms, five batches of a
    310P's time at the guide's 512 fps), as many as memory allows (RING_BYTES for twice that
    many batches), at least 2."""
    batch_bytes = run.bs * len(run.views) * sum(int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
                                                for spec in run.recipe.model.inputs)
    batches = -(-samples // run.bs)
    return max(1, min(batches, max(2, min(MAX_QUEUED_BATCHES, RING_BYTES // (2 * max(1, batch_bytes))))))


@contextlib.contextmanager
def _evaluation(run, samples: list[Sample], evaluator, workers: int | None) -> Iterator[Callable[[Sample, Any], None]]:
    """add(sample, reduced outputs): the evaluator's own here, or its shards' in worker processes."""
    shards = evaluation_workers(run.plugin, evaluator, workers)
    if shards == 0:
        yield evaluator.add
        return
    with EvaluatorShards(evaluator, run.plugin, min(shards, len(samples)), [sample.id for sample in samples]) as sharded:
        yield sharded.add


def evaluation_workers(plugin, evaluator, requested: int | None) -> int:
    """Processes for postprocessing and the metric's update, for a plugin whose postprocessing
    is heavier than the NPU's time per sample and than shipping its outputs (EVALUATE_IN_WORKERS:
    SuperPoint's matching and RANSAC; not TransPose, see its plugin) and whose evaluator can be split
    (state/merge): `--workers` when given, else one per usable core (up to MAX_DEFAULT_WORKERS)
    on 2 cores or more. Otherwise 0: this process scores while the NPU runs the next batch, and
    an evaluator that scores as results arrive (COCO's per-image evaluation) leaves the least
    after the last batch; merged shards would redo that at the end."""
    if not getattr(plugin, "EVALUATE_IN_WORKERS", False) or not (hasattr(evaluator, "state") and hasattr(evaluator, "merge")):
        return 0
    return choose_workers(requested, math.inf)  # never too cheap to ship out: only the cores decide


class EvaluatorShards:
    """The evaluator in `count` worker processes, each a fork of it while it is still empty:
    a sample goes to the worker its plugin's shard key maps to (SuperPoint: a sequence's images
    together), in order, its reduced outputs pickled (they are what reduce_outputs kept). At the
    end each worker's state() is merged into `evaluator` (Evaluator.merge: as if it had added
    every sample, in the dataset's order), so the metric is the files mode's to the last digit."""

    IN_FLIGHT_PER_WORKER = 8  # samples queued per worker: bounds the memory when evaluation lags

    def __init__(self, evaluator, plugin, count: int, order: list[str]):
        self.evaluator, self.plugin, self.order = evaluator, plugin, order
        self.count = count
        self._pools: list[concurrent.futures.ProcessPoolExecutor] = []
        self._pending: list[collections.deque] = [collections.deque() for _ in range(count)]

    def __enter__(self) -> "EvaluatorShards":
        _shard["evaluator"] = self.evaluator  # what the workers inherit, empty
        context = multiprocessing.get_context("fork")
        self._pools = [concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=start_worker) for _ in range(self.count)]
        return self

    def add(self, sample: Sample, outputs) -> None:
        index = shard_of(shard_key(self.plugin, sample), self.count)  # SuperPoint: a sequence together
        pending = self._pending[index]
        if len(pending) >= self.IN_FLIGHT_PER_WORKER:
            self._result(pending.popleft())
        pending.append(self._pools[index].submit(_shard_add, sample, outputs))

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                for pending in self._pending:
                    while pending:
                        self._result(pending.popleft())
                states = [self._result(pool.submit(_shard_state)) for pool in self._pools]
                self.evaluator.merge(states, self.order)
        finally:
            for pool in self._pools:
                pool.shutdown(wait=True, cancel_futures=True)
            _shard.clear()

    @staticmethod
    def _result(future: Future):
        try:
            return future.result()  # a worker's error is raised here, as itself
        except BrokenProcessPool:
            raise UserError("an evaluation worker process died (out of memory? a crash in native code?)",
                            hint="rerun with fewer --workers, or --workers 0 to evaluate in the main process") from None


_shard: dict[str, Any] = {}  # the evaluator the forked evaluation workers inherit


def _shard_add(sample: Sample, outputs) -> None:
    _shard["evaluator"].add(sample, outputs)


def _shard_state() -> dict:
    return _shard["evaluator"].state()


def _run_views(model, inputs: dict, views: tuple) -> dict:
    return {view: model(inputs[view]) for view in views}


@contextlib.contextmanager
def preprocessed_batches(run, samples: list[Sample], workers: int | None, held: int = 1) -> Iterator[Iterator[tuple[list[Sample], dict]]]:
    """(batch of samples, its model inputs per view: arrays of bs rows, padded), in order. The
    arrays are ring buffers: valid while the caller holds the batch, i.e. until `held` more
    batches were asked for (2: one in the model while the next is handed out)."""
    if not samples:
        yield iter(())
        return
    workers = workers_for(workers, lambda: model_inputs(run, samples[0]))
    batches = [samples[start:start + run.bs] for start in range(0, len(samples), run.bs)]
    ring = BatchRing(run.views, run.recipe.model.inputs, run.bs, slots=min(len(batches), ring_slots(workers, run.bs) + held - 1))

    def fill(slot: int, row: int, sample: Sample) -> None:  # here, or in a worker forked after the ring
        ring.put(slot, row, model_inputs(run, sample))

    with _submitter(fill, workers) as submit:
        yield ((batch, ring.padded(slot, len(batch))) for batch, slot in _filled_batches(batches, len(ring.slots), submit, held))


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


def _filled_batches(batches: list[list[Sample]], slots: int, submit, held: int = 1) -> Iterator[tuple[list[Sample], int]]:
    """(batch, its ring slot) in order, each once all its rows are filled. The caller holds the
    last `held` batches it was given; a slot is refilled only once its batch is no longer held
    (when the caller asks for the `held`-th batch after it), so at most `slots` batches are in
    memory and `slots - held` are being filled ahead."""
    pending: collections.deque = collections.deque()
    submitted = 0
    for asked in range(len(batches)):
        # Asking for batch `asked` releases batch asked - held, whose slot batch asked - held + slots takes.
        while submitted < min(len(batches), max(asked + 1, asked - held + 1 + slots)):  # fewer batches than held: a slot each
            slot = submitted % slots
            pending.append((batches[submitted], slot, [submit(slot, row, sample) for row, sample in enumerate(batches[submitted])]))
            submitted += 1
        yield _wait(pending.popleft())


def _wait(entry) -> tuple[list[Sample], int]:
    batch, slot, futures = entry
    for future in futures:
        future.result()  # a worker's error is raised here, as itself
    return batch, slot


def _evaluate_batch(batch: list[Sample], outputs_by_view: dict, add, views: tuple, plugin) -> None:
    """Each real sample's rows of the batch's outputs (views, not copies) to the evaluator."""
    for position, sample in enumerate(batch):
        outputs = {view: [np.asarray(o[position]) for o in outs] for view, outs in outputs_by_view.items()}
        add(sample, reduced(plugin, outputs[None] if views == (None,) else outputs))
