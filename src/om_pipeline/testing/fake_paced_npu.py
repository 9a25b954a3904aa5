"""A paced NPU for the fake toolchain: the fake `.om` (fake ais_bench and fake InferSession alike)
answers without running the model on the host CPU, in the time the real chip would take.

Benchmarks that run the model on the host measure the host as the NPU; with this, a run's wall
time is the NPU's own time (the guide's fps) plus whatever host work does not hide behind it,
which is what a 310P user waits for. Chosen by the environment (read by the fake runtime only):

    OMPIPE_FAKE_NPU=record          run the model with ONNX Runtime as usual, and record each input
                                    row's outputs in OMPIPE_FAKE_NPU_DIR (keyed by a digest of the row: row_digest)
    OMPIPE_FAKE_NPU=paced[:FPS]     exact replay: each input row's outputs are the recorded ones (a
                                    row never recorded is an error), so the metric equals the
                                    recording run's; no ONNX Runtime session is even made
    OMPIPE_FAKE_NPU=cyclic[:FPS]    the same, but a row never recorded gets the recorded outputs in
                                    turn: realistic outputs for a large N from a small recording;
                                    the metric is then meaningless (results say "paced emulator")
    OMPIPE_FAKE_NPU_DIR=DIR         the recording (one per compiled model: DIR/<model digest>/), and
                                    where paced runs append when the NPU was busy (DIR/busy/*.jsonl)
    OMPIPE_FAKE_NPU_GUIDE_FPS=JSON  {bs: fps}: the rate for each compiled batch size when FPS is not
                                    given (`benchmarks/bench_time_to_metric.py` passes the recipe's
                                    reference table for the chip)

An execution of a batch of bs rows takes bs / FPS seconds of sleep (the rows are looked up while
it sleeps), so the host is free for everything else, as with a real NPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import UserError

MODE = "OMPIPE_FAKE_NPU"
DIRECTORY = "OMPIPE_FAKE_NPU_DIR"
GUIDE_FPS = "OMPIPE_FAKE_NPU_GUIDE_FPS"
REPLAY_MODES = ("paced", "cyclic")


class PacedNpuError(UserError):
    """A paced NPU asked for something its recording or settings cannot give."""


def setting(env=os.environ) -> tuple[str, float | None] | None:
    """(mode, rate or None) from OMPIPE_FAKE_NPU, or None when unset."""
    text = env.get(MODE, "").strip()
    if not text:
        return None
    mode, _, rate = text.partition(":")
    if mode not in ("record", *REPLAY_MODES) or (rate and mode == "record"):
        raise PacedNpuError(f"{MODE}={text!r}: expected record, paced[:FPS] or cyclic[:FPS]")
    try:
        fps = float(rate) if rate else None
    except ValueError:
        raise PacedNpuError(f"{MODE}={text!r}: the rate after ':' must be a number of samples per second") from None
    if fps is not None and fps <= 0:
        raise PacedNpuError(f"{MODE}={text!r}: the rate must be positive")
    return mode, fps


def describe(env=os.environ) -> str:
    """What makes a paced run's outputs differ from a normal run's (for fingerprints): the replay
    mode and the recording; '' when outputs are the model's own (unset, or recording)."""
    chosen = setting(env)
    if chosen is None or chosen[0] == "record":
        return ""
    return f"paced NPU emulator ({chosen[0]}, recording {Path(env.get(DIRECTORY, '')).resolve()})"


def from_environment(onnx_bytes: bytes, inputs, outputs) -> "PacedNpu | None":
    """The paced NPU the environment asks for, for one compiled model (its ONNX and its
    input/output specs, whose dim 0 is the batch), or None."""
    chosen = setting()
    if chosen is None:
        return None
    mode, fps = chosen
    if not os.environ.get(DIRECTORY):
        raise PacedNpuError(f"{MODE}={mode} needs {DIRECTORY}: the directory of the recording")
    bs = inputs[0].shape[0]
    if any(not spec.is_static or spec.shape[0] != bs for spec in [*inputs, *outputs]):
        raise PacedNpuError("the paced NPU needs static shapes batched on axis 0 for every input and output")
    root = model_recording(Path(os.environ[DIRECTORY]), onnx_bytes)
    if mode == "record":
        return PacedNpu(root, mode, bs, None)
    return PacedNpu(root, mode, bs, fps or guide_rate(bs))


def model_recording(directory: Path, onnx_bytes: bytes) -> Path:
    """Where one compiled model's rows are recorded: one per model (and so per batch size)."""
    return Path(directory) / f"{hashlib.sha256(onnx_bytes).hexdigest()[:16]}-{KEY_SCHEME}"


def guide_rate(bs: int) -> float:
    table = json.loads(os.environ.get(GUIDE_FPS) or "{}")
    if str(bs) not in table:
        raise PacedNpuError(f"{MODE}: no rate for bs {bs}", hint=f"give one ({MODE}=paced:FPS) or the guide's table in {GUIDE_FPS}")
    return float(table[str(bs)])


# Every KEY_STRIDE-th element of a row is its key: a prime, so the sample walks across channels,
# rows and columns. A digest of every byte cost 42 ms per CenterNet batch of 4 (3 x 512 x 1024):
# a third of the NPU's own time, spent on the host CPU the emulated NPU must leave to the pipeline;
# this costs 1.9 ms. Two inputs that differ only between the sampled elements would share their
# outputs (no real image pair does; identical inputs share them rightly). A small row (up to
# FULL_KEY_ELEMENTS, 0.4 ms of hashing) is keyed by all of it.
KEY_STRIDE = 61
FULL_KEY_ELEMENTS = 1 << 16
KEY_SCHEME = f"s{KEY_STRIDE}"  # in the recording's path: a recording keyed otherwise is not mixed in


def row_digest(arrays: Sequence[np.ndarray], row: int) -> str:
    """The key of one input row: a digest of every KEY_STRIDE-th element of it in every input
    (every element of a small one), in order: a row's layout may differ between the tools
    (flat as read from a .bin file, or shaped)."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        values = np.asarray(array[row])
        step = KEY_STRIDE if values.size > FULL_KEY_ELEMENTS else 1
        digest.update(np.ascontiguousarray(values.reshape(-1)[::step]).data)
    return digest.hexdigest()


MAPPED_ROWS = 256


class Recording:
    """The recorded rows of one compiled model: outputs by input-row digest, memory-mapped (the
    page cache holds them once, whichever process replays them). `cyclic`: a row never recorded
    gets the recorded rows in turn."""

    def __init__(self, root: Path, cyclic: bool):
        self.root, self.cyclic = root, cyclic
        self._recorded = sorted(path.name for path in root.glob("*") if path.is_dir() and not path.name.startswith(".")) if root.is_dir() else []
        if not self._recorded:
            raise PacedNpuError(f"{MODE}: nothing recorded for this model in {root}",
                                hint=f"run it once with {MODE}=record and the same {DIRECTORY}")
        self._loaded: dict[str, list[np.ndarray]] = {}  # by recorded row
        self._row_of: dict[str, str] = {}  # input digest -> the recorded row it replays
        self._turn = 0

    def outputs(self, digest: str) -> list[np.ndarray]:
        if digest not in self._row_of:
            if (self.root / digest).is_dir():
                self._row_of[digest] = digest
            elif not self.cyclic:
                raise PacedNpuError(f"{MODE}=paced: an input row was never recorded ({digest} in {self.root})",
                                    hint=f"record every input first ({MODE}=record), or replay in turn with {MODE}=cyclic")
            else:
                self._row_of[digest] = self._recorded[self._turn % len(self._recorded)]
                self._turn += 1
        row = self._row_of[digest]
        if row not in self._loaded:
            # Each map holds a file descriptor: a row is mapped once, and at most MAPPED_ROWS stay
            # mapped (15k TransPose persons, mapped per input, ran out of descriptors).
            if len(self._loaded) >= MAPPED_ROWS:
                del self._loaded[next(iter(self._loaded))]
            paths = sorted((self.root / row).glob("*.npy"), key=lambda path: int(path.stem))
            self._loaded[row] = [np.load(path, mmap_mode="r") for path in paths]
        return self._loaded[row]

    def outputs_of_sample(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One sample's outputs from its model inputs (without the batch dimension)."""
        return self.outputs(row_digest([np.asarray(array)[None] for array in arrays], 0))


class PacedNpu:
    def __init__(self, root: Path, mode: str, bs: int, fps: float | None):
        self.root, self.mode, self.bs, self.fps = root, mode, bs, fps
        self.needs_model = mode == "record"
        if mode != "record":
            self._recording = Recording(root, cyclic=mode == "cyclic")
            busy = Path(os.environ[DIRECTORY]) / "busy"
            busy.mkdir(parents=True, exist_ok=True)
            self._busy_log = open(busy / f"{os.getpid()}-{time.time_ns()}.jsonl", "a", buffering=1, encoding="utf-8")

    def execute(self, arrays: Sequence[np.ndarray], run_model: Callable[[Sequence[np.ndarray]], list[np.ndarray]]) -> list[np.ndarray]:
        if self.mode == "record":
            results = run_model(arrays)
            self._record(arrays, results)
            return results
        started = time.time()
        rows = [self._recording.outputs(row_digest(arrays, row)) for row in range(self.bs)]
        results = [np.stack(per_output) for per_output in zip(*rows)]
        done = started + self.bs / self.fps
        time.sleep(max(0.0, done - time.time()))
        self._busy_log.write(json.dumps([started, done]) + "\n")
        return results

    def _record(self, arrays: Sequence[np.ndarray], results: list[np.ndarray]) -> None:
        for row in range(self.bs):
            directory = self.root / row_digest(arrays, row)
            if directory.is_dir():
                continue  # the padding of a last batch repeats row 0
            partial = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
            partial.mkdir(parents=True, exist_ok=True)
            for index, result in enumerate(results):
                np.save(partial / f"{index}.npy", np.ascontiguousarray(result[row]))
            try:
                partial.rename(directory)
            except OSError:  # another process recorded the same row meanwhile
                for path in partial.iterdir():
                    path.unlink()
                partial.rmdir()


def busy_intervals(directory: Path) -> list[tuple[float, float]]:
    """Every (start, end) wall-clock second the paced NPU was busy, sorted, from all processes."""
    intervals = []
    for path in sorted((Path(directory) / "busy").glob("*.jsonl")):
        intervals += [tuple(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return sorted(intervals)


def utilisation(intervals: list[tuple[float, float]]) -> dict:
    """The NPU's busy fraction from its first batch's start to its last batch's end."""
    if not intervals:
        return {"batches": 0}
    first, last = intervals[0][0], max(end for _, end in intervals)
    busy = sum(end - start for start, end in intervals)
    return {"batches": len(intervals), "first_start": first, "last_end": last, "busy_s": busy,
            "span_s": last - first, "busy_fraction": busy / (last - first) if last > first else 1.0}
