"""Tool and package versions: part of stage fingerprints, results and crash reports.

A stage that runs atc, ais_bench or msame, or consumes what they made, has the active
toolchain's identity in its fingerprint (toolchains.py): for the real one the CANN version and
where the tool resolves (`real_tool`), for the fake its own version. So a fake `.om` or a fake
fps is never CACHED for a real run, and a tool upgrade reruns what it made.
"""
from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from pathlib import Path

from .tools import execute

# Asks the interpreter that runs `python -m ais_bench` for the package's version and location.
AIS_BENCH_PROBE = ("import importlib.metadata as m, ais_bench\n"
                   "try:\n    v = m.version('ais_bench')\nexcept Exception:\n    v = 'unknown'\n"
                   "print(v, ais_bench.__file__)")


@functools.lru_cache(maxsize=None)
def package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def packages(*names: str) -> dict[str, str]:
    return {name: package(name) for name in names}


def cann() -> str:
    """The CANN toolkit version the subprocesses will see."""
    from .tools.atc import cann_version

    return cann_version(execute.subprocess_env()) or "unknown"


def real_tool(tool: str) -> str:
    """'<version> <resolved path>' of a real tool, or 'absent'."""
    if tool == "ais_bench":
        from .stages.infer import ais_bench_argv

        return _ais_bench(ais_bench_argv()[0], execute.subprocess_env().get("PYTHONPATH", ""))
    program = os.environ.get("OMPIPE_MSAME", "msame") if tool == "msame" else tool
    path = execute.which(program)
    return str(Path(path).resolve()) if path else "absent"


@functools.lru_cache(maxsize=None)
def _ais_bench(python: str, pythonpath: str) -> str:
    outcome = execute.execute([python, "-c", AIS_BENCH_PROBE])
    return outcome.output.strip().splitlines()[-1] if outcome.ok and outcome.output.strip() else "absent"


def report() -> dict[str, str]:
    from .toolchains import active  # toolchains builds on this module

    return {
        "ompipe": package("om-pipeline"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        **packages("torch", "onnx", "onnxruntime", "onnxsim", "numpy", "opencv-python-headless"),
        "cann": active().cann_version(),
    }
