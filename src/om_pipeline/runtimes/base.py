"""The interface every inference runtime implements (one module per runtime beside this one).

A runtime is what runs the model: ONNX Runtime in process on the exported ONNX, or a tool that
runs atc's `.om` (ais_bench, msame). The stages never ask which one they have; they ask it:

- `runs_om` / `target`: which model it runs (atc's .om, or the ONNX exported for that target);
- `tools`: the toolchain programs it runs (their identity goes into the fingerprints);
- `fingerprint(args)`: what its results depend on besides the model;
- `files_argv(job)`, `measure_argv(...)`: the command lines a dry run shows and the stages run
  (None: in process);
- `infer_files(job)`: every sample's outputs as `<id>_<i>.bin` (the files mode);
- `measure(...)`: throughput, as the guide measures it (the perf stage);
- `session()`: the model in memory, for `--stream` and the compare stage;
- `version()`: what `ompipe doctor` and crash reports print.

Adding a runtime is one new module (a class with these members) and one line in
`runtimes/__init__.py`; tests/test_runtimes.py runs the same conformance checks over each.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Protocol

import numpy as np

from ..state import Fingerprint

if TYPE_CHECKING:
    from ..context import Run

# The model in memory: one batch of inputs (model input order) -> its outputs (result order).
Session = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class FilesJob:
    """One view of one batch of samples in the files mode."""

    view: str | None  # the plugin's view (SuperPoint's two images); None for one-view models
    ids: list[str]  # the samples, in order
    inputs_root: Path  # holds `inputs[/<view>]/<input name>/<id>.bin`
    out: Path  # receives `<id>_<i>.bin` (or `.txt`); the runtime creates it
    staging: Path  # scratch space (a tool's own result directories)
    args: list[str]  # the recipe's arguments for this runtime, templates unrendered
    log: Path
    timeout: float | None = None
    quiet: bool = False


class Runtime(Protocol):
    name: ClassVar[str]  # names the inference outputs, stage records and results
    runs_om: ClassVar[bool]  # True: atc's .om (the Ascend path); False: the ONNX model
    tools: ClassVar[tuple[str, ...]]  # toolchain programs it runs or whose output it reads
    ray_resource: ClassVar[str]  # what one shard needs on a Ray cluster: "NPU" or "CPU"
    multi_device: ClassVar[bool]  # measures several devices at once (`ompipe bench --devices`)

    def __init__(self, run: "Run") -> None: ...

    @property
    def target(self) -> str:
        """The export target whose outputs it yields: "ascend" for the .om, else "onnxruntime"."""

    def check(self) -> None:
        """Refuse, before any stage runs, a run this runtime cannot do (UserError)."""

    def recipe_args(self, stage) -> list[str]:
        """Its arguments in the recipe's infer or perf stage (`stage`), templates unrendered."""

    def fingerprint(self, args: list[str]) -> Fingerprint:
        """What its outputs depend on besides the model file and the samples."""

    def files_argv(self, job: FilesJob) -> list[str] | None:
        """The command `infer_files(job)` runs; None: it runs in process."""

    def measure_argv(self, args: list[str], staging: Path) -> list[str] | None:
        """The command `measure` runs; None: it runs in process."""

    def outputs(self) -> list:
        """The recipe's TensorSpecs of the outputs it yields, in order (what the files hold)."""

    def numerics(self) -> str:
        """How its numbers are made: fp32, fp16-emulated, or `npu (<precision_mode>)`."""

    def precision_params(self) -> dict[str, str]:
        """What its numbers depend on beyond the model's files (fingerprints of the stages that run it)."""

    def infer_files(self, job: FilesJob) -> dict:
        """Every sample of `job` through the model, `<id>_<i>` files in job.out; returns what to
        record (timings; `argv` when it ran a command)."""

    def measure(self, args: list[str], staging: Path, log: Path, timeout: float | None, loop: int) -> dict:
        """Throughput: fps, batchsize, mean_ms, plus what the tool printed (the perf stage);
        `argv` when it ran a command."""

    def session(self) -> Session:
        """The model in memory (UserError when this runtime has no in-memory API)."""

    @staticmethod
    def version() -> str:
        """Version and location, as doctor prints it ('absent' when not installed)."""


def rendered(args: list[str], variables: dict) -> list[str]:
    from ..recipe import render

    return [render(arg, variables) for arg in args]
