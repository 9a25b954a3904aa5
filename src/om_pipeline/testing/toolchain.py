"""Put the fake toolchain in front of the real one: the environment overlay that
`tools.execute.set_toolchain_env` applies to every subprocess.

    execute.set_toolchain_env(fake_toolchain_env(work / "fake-toolchain"))

- PATH gets `<root>/bin` with `atc`, `msame` and `npu-smi` wrappers that run the fakes with this
  interpreter (so the virtual environment ompipe runs in is used, whatever PATH says);
- PYTHONPATH gets `fake_python/`, so `python -m ais_bench` and
  `from ais_bench.infer.interface import InferSession` find the fake ais_bench, and, in a
  source checkout, the directory holding `om_pipeline` so the fakes can import it.
"""
from __future__ import annotations

import os
import shlex
import sys
import sysconfig
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the directory holding om_pipeline/
FAKE_PYTHON = Path(__file__).resolve().parent / "fake_python"
WRAPPED_COMMANDS = {"atc": "om_pipeline.testing.fake_atc", "npu-smi": "om_pipeline.testing.fake_npu_smi",
                    "msame": "om_pipeline.testing.fake_msame"}


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
