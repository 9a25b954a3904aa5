"""Tool and package versions: part of stage fingerprints, results and crash reports.

A stage that runs atc, ais_bench or msame, or consumes what they made, has the toolchain's
identity in its fingerprint (`toolchain_identity`): `fake` or `real`, and for the real one the
CANN version and where the tool resolves; for the fake, its own version. So a fake `.om` or a
fake fps is never CACHED for a real run, and a tool upgrade reruns what it made.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path

from .tools import execute

FAKE_SOURCES = Path(__file__).resolve().parent / "testing"
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


def cann(toolchain: str = "real") -> str:
    """The CANN toolkit version the subprocesses will see; for the fake toolchain, the fake's own
    version (a sourced set_env.sh must not make fake results look like that CANN's)."""
    if toolchain == "fake":
        return fake_version()
    from .tools.atc import cann_version

    return cann_version(execute.subprocess_env()) or "unknown"


@functools.lru_cache(maxsize=None)
def fake_version() -> str:
    """The fake toolchain's identity: ompipe's version and a digest of the fakes' sources
    (om_pipeline.testing's fake_* modules, the fake ais_bench package and the wrappers), so
    editing a fake reruns what it made."""
    digest = hashlib.sha256()
    sources = [*FAKE_SOURCES.glob("fake_*.py"), *FAKE_SOURCES.glob("fake_python/**/*.py"), FAKE_SOURCES / "toolchain.py"]
    for path in sorted(sources):
        digest.update(path.relative_to(FAKE_SOURCES).as_posix().encode() + b"\0" + path.read_bytes())
    return f"fake {package('om-pipeline')} ({digest.hexdigest()[:12]})"


def toolchain_identity(toolchain: str, tool: str) -> dict[str, str]:
    """Fingerprint `tools` of a stage that runs `tool` (atc, ais_bench, msame) or uses its output."""
    if toolchain == "fake":
        return {"toolchain": "fake", tool: fake_version(), **fake_npu(tool)}
    return {"toolchain": "real", "cann": cann("real"), tool: real_tool(tool)}


def fake_npu(tool: str) -> dict[str, str]:
    """{"npu": ...} when the fake .om's paced NPU replays recorded outputs (OMPIPE_FAKE_NPU, see
    testing/fake_paced_npu) for a tool that runs the .om: a replayed result is never CACHED for
    a normal run, nor the other way round (atc's .om is the same either way)."""
    from .testing import fake_paced_npu

    described = fake_paced_npu.describe(execute.subprocess_env()) if tool != "atc" else ""
    return {"npu": described} if described else {}


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


def report(toolchain: str = "real") -> dict[str, str]:
    return {
        "ompipe": package("om-pipeline"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        **packages("torch", "onnx", "onnxruntime", "onnxsim", "numpy", "opencv-python-headless"),
        "cann": cann(toolchain),
    }
