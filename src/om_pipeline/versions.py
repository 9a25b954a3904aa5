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

    env = execute.subprocess_env()
    return " + ".join(part for part in (cann_version(env) or "unknown", fake_npu(env)) if part)


def fake_npu(env) -> str:
    """The fake toolchain's paced NPU when one replays recorded outputs (testing/fake_paced_npu):
    part of the fingerprint of whatever ran on the .om, so a replayed result is never CACHED for a
    normal run, nor the other way round."""
    from .testing import fake_paced_npu

    return fake_paced_npu.describe(env)


def report() -> dict[str, str]:
    return {
        "ompipe": package("om-pipeline"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        **packages("torch", "onnx", "onnxruntime", "onnxsim", "numpy", "opencv-python-headless"),
        "cann": cann(),
    }
