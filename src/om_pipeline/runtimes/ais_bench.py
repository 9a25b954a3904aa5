"""ais_bench (`python -m ais_bench`): the guides' tool for the .om. Its result directory
(timestamped, or `--output_dirname`) is found and moved into place; its throughput line, in
every generation's spelling, is the perf stage's fps (tools/ais_bench.py reads them)."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import ClassVar

from .. import toolchains
from ..errors import StageFailed, UserError
from ..tools import ais_bench
from ..tools.execute import execute, python_argv, subprocess_env
from .base import Session, rendered
from .om import OmRuntime

# Asks the interpreter that runs `python -m ais_bench` for the package's version and location.
PROBE = ("import importlib.metadata as m, ais_bench\n"
         "try:\n    v = m.version('ais_bench')\nexcept Exception:\n    v = 'unknown'\n"
         "print(v, ais_bench.__file__)")


class AisBench(OmRuntime):
    name: ClassVar[str] = "ais_bench"
    tools: ClassVar[tuple[str, ...]] = ("ais_bench",)
    multi_device: ClassVar[bool] = True  # `--device 0,1,...`: the full input on every device, the summed throughput

    def check(self) -> None:
        """ais_bench refuses paths outside its character set, and would say so only at infer,
        after export and atc have run: say it before the first stage, when this run gets there."""
        from ..plan import build_stages, in_scope

        options = self.run.options
        scope = in_scope(build_stages(self.run), options.only, options.from_stage, options.to_stage)
        bad = ais_bench.illegal_path_characters(str(self.run.model_dir))
        if bad and any(kind in scope and scope[kind] is None for kind in ("infer", "perf")):
            raise UserError(f"work dir {self.run.model_dir}: ais_bench refuses paths holding {bad!r} "
                            "(it accepts only letters, digits, _ / . -), so the run would fail after export and atc",
                            hint="use a --workdir whose path has only those characters, or --runtime onnxruntime")

    def argv(self, args: list[str], variables: dict) -> list[str]:
        return ais_bench_argv(*rendered(args, variables), *self.device_args())

    def device_args(self) -> list[str]:
        """A shard's NPU (`run --devices`: one shard per device), or the guide's own multi-device
        mode (`bench --devices`: every device, their throughputs summed)."""
        options = self.run.options
        if options.devices:
            return ["--device", ",".join(map(str, options.devices))]
        return ["--device", str(options.device)] if options.device is not None else []

    def collect(self, outcome, raw: Path, out: Path, log: Path, argv: list[str]) -> dict:
        if outcome.returncode != 0:
            raise StageFailed(f"ais_bench failed (exit {outcome.returncode})", details=ais_bench.error_tail(outcome.output),
                              hint=f"full log: {log}")
        result_dir = ais_bench.find_result_dir(raw, output_dirname(argv), set())
        summary = ais_bench.read_summary(result_dir)
        result_dir.rename(out)
        throughput = ais_bench.parse_throughput(outcome.output)
        return {"throughput": throughput and throughput.__dict__,
                "summary": {k: summary.get(k) for k in ("NPU_compute_time", "throughput") if summary}}

    def stats(self, outcome, log: Path) -> dict:
        throughput = ais_bench.parse_throughput(outcome.output)
        if outcome.returncode != 0 or throughput is None:
            raise StageFailed(f"ais_bench perf run failed (exit {outcome.returncode})",
                              details=ais_bench.error_tail(outcome.output), hint=f"full log: {log}")
        return {"fps": throughput.fps, "batchsize": throughput.batchsize, "mean_ms": throughput.mean_ms,
                "compute_time_ms": ais_bench.parse_compute_time(outcome.output)}

    def session(self) -> Session:
        return InferSessionModel(self.om_path, self.run.options.device or 0)

    @staticmethod
    def version() -> str:
        """'<version> <location>' of the ais_bench `python -m ais_bench` runs, or 'absent'."""
        return _probe(ais_bench_argv()[0], subprocess_env().get("PYTHONPATH", ""))


class InferSessionModel:
    """The .om through ais_bench's Python API, from where the active toolchain says (the fake
    toolchain provides a fake of it)."""

    def __init__(self, om_path: Path, device: int = 0):
        toolchains.import_path()
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError:
            raise UserError("the .om in memory (--stream, the compare stage) needs ais_bench's Python API "
                            "(ais_bench.infer.interface)",
                            hint="install the aclruntime and ais_bench wheels, or use --runtime onnxruntime") from None
        self._session = InferSession(device, str(om_path))  # the ACL device id (--devices: this shard's)

    def __call__(self, arrays):
        return list(self._session.infer(arrays, mode="static"))


def ais_bench_argv(*args: str) -> list[str]:
    """`python -m ais_bench`: the interpreter is ompipe's unless OMPIPE_AIS_BENCH_PYTHON names
    another (ais_bench often lives in the system Python that CANN's wheels were installed into)."""
    python = os.environ.get("OMPIPE_AIS_BENCH_PYTHON")
    return [python, "-m", "ais_bench", *args] if python else python_argv("-m", "ais_bench", *args)


@functools.lru_cache(maxsize=None)
def _probe(python: str, pythonpath: str) -> str:
    outcome = execute([python, "-c", PROBE])
    return outcome.output.strip().splitlines()[-1] if outcome.ok and outcome.output.strip() else "absent"


def output_dirname(argv: list[str]) -> str | None:
    """The guide's `--output_dirname NAME` (either form), else None: a timestamped directory."""
    for index, token in enumerate(argv):
        flag, equals, value = token.partition("=")
        if flag == "--output_dirname":
            return value if equals else argv[index + 1]
    return None


RUNTIME = AisBench
