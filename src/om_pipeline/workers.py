"""Preprocessing in worker processes, for the files mode and the stream alike, with nothing
large crossing a pipe.

Pickling a preprocessed sample back to the parent costs more than a second core gives
(PointRend's 24 MiB per image ran at 0.60x serial through a 2-process pool on 2 cores), so:
- files mode (`for_each_sample`): each worker writes its samples' `.bin` files itself and only
  a sample id comes back;
- the stream (`BatchRing`): workers write their samples straight into batch buffers in memory
  shared with the parent, where the model reads them. The memory is an anonymous shared mapping
  made before the workers are forked: nothing named, nothing left behind if a process dies,
  and not bounded by /dev/shm (64 MiB in a default Docker container), as
  multiprocessing.shared_memory would be.

Workers are forked, so they inherit the loaded plugin (also one loaded from a file) and the
job they run; a worker that dies (the OOM killer, a crash in native code) is one clear error,
never a hang.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import mmap
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import lock
from .errors import UserError
from .tools.execute import die_with_parent

# Below this preprocessing time per sample a pool is not worth its start and its round trips.
# Measured with 2 workers on 2 cores (benchmarks/bench_pipeline.py): SuperPoint's ~0.7 ms ran
# at 0.94-1.04x in files mode and 0.69-0.79x streamed; CenterNet's ~20 ms at 1.4-1.7x.
IN_PROCESS_BELOW_SECONDS = 0.002
MAX_DEFAULT_WORKERS = 8

_job: dict[str, Callable] = {}  # the function the forked workers run; set before they are forked


def usable_cores() -> int:
    """The cores this process may run on (a container's cpuset, taskset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_workers(requested: int | None, seconds_per_sample: float) -> int:
    """`--workers` when given; else a pool of up to MAX_DEFAULT_WORKERS when preprocessing is
    worth shipping out and there is a core to spare; 0 runs it in this process."""
    if requested is not None:
        return requested
    cores = usable_cores()
    if cores < 2 or seconds_per_sample < IN_PROCESS_BELOW_SECONDS:
        return 0
    return min(MAX_DEFAULT_WORKERS, cores)


def workers_for(requested: int | None, first: Callable[[], None]) -> int:
    """Runs `first` (the first sample's work, which must be idempotent) here, then chooses the
    workers for the rest: `--workers` when given, else by timing `first` once more (its first
    run paid the imports and cold caches, which would make cheap preprocessing look dear)."""
    first()
    if requested is not None:
        return requested
    started = time.perf_counter()
    first()
    return choose_workers(None, time.perf_counter() - started)


def for_each_sample(function: Callable[[Any], Any], samples: Sequence, requested_workers: int | None) -> Iterator[None]:
    """Calls `function(sample)` for every sample, yielding once per finished sample (for
    progress). The first runs here and decides the workers for the rest (workers_for);
    `function` is never pickled (the workers inherit it), only the samples are."""
    if not samples:
        return
    workers = workers_for(requested_workers, lambda: function(samples[0]))
    yield
    rest = samples[1:]
    workers = min(workers, len(rest))
    if workers == 0:
        for sample in rest:
            function(sample)
            yield
        return
    with forked_pool(workers, function) as pool:
        chunk = max(1, min(16, len(rest) // (4 * workers)))  # fewer round trips, still balanced
        for _ in pool.map(call_job, rest, chunksize=chunk):
            yield


def call_job(*args: Any) -> Any:
    """The task every worker runs: the job it inherited, on the arguments it was sent."""
    return _job["function"](*args)


@contextlib.contextmanager
def forked_pool(workers: int, function: Callable) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """A pool of `workers` forked processes that inherit `function`: submit `call_job` with its
    arguments (only those are pickled)."""
    _job["function"] = function
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                  initializer=start_worker)
    try:
        yield pool
    except BrokenProcessPool:
        raise UserError("a preprocessing worker process died (out of memory? a crash in native code?)",
                        hint="rerun with fewer --workers, or --workers 0 to preprocess in the main process") from None
    finally:
        # On an error or Ctrl-C: drop what has not started; each worker ends its current sample.
        pool.shutdown(wait=True, cancel_futures=True)
        _job.clear()


def start_worker() -> None:
    # Ctrl-C, SIGTERM and SIGHUP (sent to the whole process group) are the parent's: it stops
    # the pool, letting each worker end its current sample.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    lock.close_inherited()  # a worker outliving a killed parent must not keep its work dir locked
    die_with_parent()  # nor outlive it at all: nobody would stop it
    if "torch" in sys.modules:
        # A forked child's first torch op waits forever for the parent's OpenMP threads, which
        # it does not have, unless it is told to use one (as torch's DataLoader workers do).
        # OpenCV needs nothing: its ops run in a child, but cv2.setNumThreads there hangs.
        sys.modules["torch"].set_num_threads(1)


class BatchRing:
    """`slots` batch buffers: per slot, per view, one array per model input of shape
    (bs, *input shape), in memory that workers forked after it share. A worker preprocesses
    sample k of a batch into row k of its slot; the model reads the slot as its batch."""

    ALIGN = 64

    def __init__(self, views: tuple, specs, bs: int, slots: int):
        layout = [(view, spec) for view in views for spec in specs]
        sizes = [-(-bs * int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize // self.ALIGN) * self.ALIGN
                 for _, spec in layout]
        # mmap(-1, n) is MAP_SHARED | MAP_ANONYMOUS: children forked later see the parent's pages.
        self._memory = mmap.mmap(-1, slots * sum(sizes))
        self.bs = bs
        self.slots: list[dict[Any, list[np.ndarray]]] = []
        offset = 0
        for _ in range(slots):
            slot: dict[Any, list[np.ndarray]] = {view: [] for view in views}
            for (view, spec), size in zip(layout, sizes):
                slot[view].append(np.ndarray((bs, *spec.shape), dtype=spec.dtype, buffer=self._memory, offset=offset))
                offset += size
            self.slots.append(slot)

    def put(self, slot: int, row: int, arrays_by_view: dict) -> None:
        for view, arrays in arrays_by_view.items():
            for buffer, array in zip(self.slots[slot][view], arrays):
                buffer[row] = array

    def padded(self, slot: int, filled: int) -> dict[Any, list[np.ndarray]]:
        """The slot's arrays, rows past `filled` set to row 0 (as ais_bench pads the last batch
        with its first file)."""
        for buffers in self.slots[slot].values():
            for buffer in buffers:
                buffer[filled:] = buffer[0]
        return self.slots[slot]
