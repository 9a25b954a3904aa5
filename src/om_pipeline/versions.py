"""Tool and package versions: part of stage fingerprints, results and crash reports.

A stage that runs atc, ais_bench or msame, or consumes what they made, has the active
toolchain's identity in its fingerprint (toolchains.py): for the real one the CANN version and
where the tool resolves (`real_tool`), for the fake its own version. So a fake `.om` or a fake
fps is never CACHED for a real run, and a tool upgrade reruns what it made.
"""
from __future__ import annotations

import functools
import platform
from importlib import metadata
from pathlib import Path

from .tools import execute


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
    """'<version> <resolved path>' of a real tool (a runtime says its own), or 'absent'."""
    from .runtimes import RUNTIMES  # the runtimes build on this module

    if tool in RUNTIMES:
        return RUNTIMES[tool].version()
    path = execute.which(tool)
    return str(Path(path).resolve()) if path else "absent"


def report() -> dict[str, str]:
    from .toolchains import active  # toolchains builds on this module

    return {
        "ompipe": package("om-pipeline"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        **packages("torch", "onnx", "onnxruntime", "onnxsim", "numpy", "opencv-python-headless"),
        "cann": active().cann_version(),
    }
