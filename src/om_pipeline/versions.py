"""Tool and package versions: part of stage fingerprints, results and crash reports."""
from __future__ import annotations

import functools
import platform
from importlib import metadata

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
    """The CANN toolkit version the subprocesses will see ('fake' for the fake toolchain)."""
    from .tools.atc import cann_version

    return cann_version(execute.subprocess_env()) or "unknown"


def report() -> dict[str, str]:
    return {
        "ompipe": package("om-pipeline"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        **packages("torch", "onnx", "onnxruntime", "onnxsim", "numpy", "opencv-python-headless"),
        "cann": cann(),
    }
