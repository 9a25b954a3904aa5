"""The fake toolchain (`--toolchain fake`): what `toolchains.Toolchain` asks of a toolchain,
supplied by ompipe's fakes. The command layer activates it; no production module imports it.

    toolchains.activate(FakeToolchain(work / ".fake-toolchain"))

Its subprocess overlay (`fake_toolchain_env`):

- PATH gets `<root>/bin` with `atc`, `msame` and `npu-smi` wrappers that run the fakes with this
  interpreter (so the virtual environment ompipe runs in is used, whatever PATH says);
- PYTHONPATH gets `fake_python/`, so `python -m ais_bench` and
  `from ais_bench.infer.interface import InferSession` find the fake ais_bench, and, in a
  source checkout, the directory holding `om_pipeline` so the fakes can import it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import sys
import sysconfig
from pathlib import Path

from .. import versions
from ..tools import execute

FAKE_SOURCES = Path(__file__).resolve().parent
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the directory holding om_pipeline/
FAKE_PYTHON = Path(__file__).resolve().parent / "fake_python"
WRAPPED_COMMANDS = {"atc": "om_pipeline.testing.fake_atc", "npu-smi": "om_pipeline.testing.fake_npu_smi",
                    "msame": "om_pipeline.testing.fake_msame"}


class FakeToolchain:
    """atc, msame and npu-smi wrappers first on PATH, the fake ais_bench package first on
    PYTHONPATH and sys.path; its identity is its own version (`fake_version`)."""

    name = "fake"

    def __init__(self, root: Path):
        self.root = Path(root)

    def subprocess_env(self) -> dict[str, str]:
        return fake_toolchain_env(self.root)

    def python_path(self) -> list[str]:
        return [str(FAKE_PYTHON)]

    def cann_version(self) -> str:
        """The fake's own version: a sourced set_env.sh must not make fake results look like
        that CANN's."""
        return fake_version()

    def identity(self, tool: str) -> dict[str, str]:
        return {"toolchain": "fake", tool: fake_version(), **fake_npu(tool)}

    def om_numerics(self, om_path: Path) -> str | None:
        """The fake .om records the precision mode atc was given and computes so (fp16.py)."""
        from ..fp16 import precision_of
        from .fake_om import NotAFakeOm, read_fake_om_meta

        try:
            return precision_of(read_fake_om_meta(om_path)).numerics
        except (OSError, NotAFakeOm):
            return "unknown (no fake .om)"

    def om_output_names(self, om_path: Path) -> list[str] | None:
        """The fake .om records the outputs of the graph it runs: its standard-op twin's for a
        graph with Ascend-only ops (see atc_environment)."""
        from .fake_om import NotAFakeOm, read_fake_om_meta

        try:
            return [output["name"] for output in read_fake_om_meta(om_path)["outputs"]]
        except (OSError, NotAFakeOm):
            return None

    def found(self) -> str:
        return "fake toolchain"

    def atc_environment(self, stage, graph, staging: Path) -> dict[str, str]:
        """The fake atc checks flags and ops with the op table of the run's CANN generation. It
        runs the .om's graph with ONNX Runtime, which cannot execute Ascend-only ops
        (DeformableConv2D, BatchMultiClassNMS): for such a graph it is given the plugin's
        standard-op export of the same model (target onnxruntime) to run instead; the flags and
        ops are still checked against the real graph, and the .om records the twin's outputs,
        unless the plugin says what the Ascend-only ops at the graph's end compute from them
        (`ascend_ops_on_host`, GFocalV2's NMS): then the .om runs that after the twin and yields
        the real graph's outputs, so the host's postprocessing is the 310P run's."""
        from ..stages.atc import nonstandard_ops
        from ..stages.export import ExportStage

        env = {"OMPIPE_FAKE_ATC_CANN": stage.run.cann}
        if graph is not None and nonstandard_ops(graph):
            twin = staging / "fake-twin.onnxruntime.onnx"
            ExportStage(stage.run).export(twin, "onnxruntime", stage.log)
            env["OMPIPE_FAKE_ATC_EXEC_MODEL"] = str(twin)
            host_ops = ascend_ops_on_host(stage.run)
            if host_ops:
                env["OMPIPE_FAKE_ATC_HOST_OPS"] = json.dumps(host_ops)
        return env


def ascend_ops_on_host(run) -> dict | None:
    """What the fake .om needs to run the plugin's stand-in for the Ascend-only tail of its
    graph: the function (by import path: the fake runtime runs in another process), the
    settings it computes with, and the real graph's outputs at the run's batch size. None for a
    plugin without one, or loaded from a file (not importable by name)."""
    import dataclasses

    function = getattr(run.plugin, "ascend_ops_on_host", None)
    if function is None or run.recipe.plugin.startswith("file:"):
        return None
    settings = dataclasses.asdict(run.settings("export"))
    outputs = [{"name": spec.name, "shape": [run.bs, *spec.shape], "dtype": spec.dtype} for spec in run.output_specs(run.target)]
    return {"function": f"{run.plugin.__name__}:{function.__name__}", "params": settings, "outputs": outputs}


@functools.lru_cache(maxsize=None)
def fake_version() -> str:
    """ompipe's version and a digest of what decides the fakes' behaviour: their sources (the
    fake_* modules, the fake ais_bench package, this module) and what they compute or refuse
    by (the fp16 emulation, ATC's op gate and its table), so editing any of it reruns what
    the fake made."""
    digest = hashlib.sha256()
    package = FAKE_SOURCES.parent
    sources = [*FAKE_SOURCES.glob("fake_*.py"), *FAKE_SOURCES.glob("fake_python/**/*.py"), FAKE_SOURCES / "toolchain.py",
               package / "fp16.py", package / "atc_ops.py", package / "data" / "atc_onnx_ops.json"]
    for path in sorted(sources):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return f"fake {versions.package('om-pipeline')} ({digest.hexdigest()[:12]})"


def fake_npu(tool: str) -> dict[str, str]:
    """{"npu": ...} when the fake .om's paced NPU replays recorded outputs (OMPIPE_FAKE_NPU, see
    fake_paced_npu) for a tool that runs the .om: a replayed result is never CACHED for a
    normal run, nor the other way round (atc's .om is the same either way)."""
    from . import fake_paced_npu

    described = fake_paced_npu.describe(execute.subprocess_env()) if tool != "atc" else ""
    return {"npu": described} if described else {}


def fake_toolchain_env(root: Path) -> dict[str, str]:
    """Write (idempotently) the wrappers under `root/bin` and return the overlay."""
    bin_dir = Path(root) / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for command, module in WRAPPED_COMMANDS.items():
        _write_executable(bin_dir / command, wrapper_script(module))
    return {"PATH": str(bin_dir), "PYTHONPATH": os.pathsep.join(_python_paths())}


def wrapper_script(module: str) -> str:
    return f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {module} "$@"\n'


def _write_executable(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


def _python_paths() -> list[str]:
    """fake_python/, plus the directory holding om_pipeline unless it is an installed
    site-packages: that one the interpreter finds by itself, and on PYTHONPATH it would leak
    into other interpreters (an export environment's python) run through the same seam."""
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    return [str(FAKE_PYTHON)] + ([] if PACKAGE_PARENT in installed else [str(PACKAGE_PARENT)])
