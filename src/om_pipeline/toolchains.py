"""The toolchain seam: which atc / ais_bench / msame / npu-smi ompipe works with.

A toolchain supplies everything that differs between the real CANN tools and ompipe's fakes:
the environment overlay of every subprocess (tools/execute.py applies it), where ais_bench's
Python API is imported from in process (`--stream`, the compare stage), the CANN version it
stands for, and the identity that goes into the fingerprints of the stages that run its tools.
The command layer (commands.py) loads one per command by name (`load`) and activates it;
everything else asks `active()`. The real one is here; any other is a plugin registered under the
`om_pipeline.toolchains` entry point group (pyproject.toml: the fake), so no production module
imports it, as tox keeps its `patch_execute` out of tox itself.
"""
from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import versions
from .errors import UserError
from .tools import execute

if TYPE_CHECKING:
    import onnx

    from .stages.atc import AtcStage


class Toolchain(Protocol):
    name: str  # "real" or "fake": recorded in fingerprints and results

    def subprocess_env(self) -> dict[str, str]:
        """Environment overlay for every subprocess (PATH, PYTHONPATH, ...)."""

    def python_path(self) -> list[str]:
        """Directories to import ais_bench's Python API from in this process."""

    def cann_version(self) -> str:
        """The CANN version the tools stand for (results, crash reports)."""

    def identity(self, tool: str) -> dict[str, str]:
        """Fingerprint `tools` of a stage that runs `tool` (atc, ais_bench, msame) or uses its output."""

    def om_numerics(self, om_path: Path) -> str | None:
        """How this toolchain's .om computes, when the .om itself says (None: as atc compiled it)."""

    def om_output_names(self, om_path: Path) -> list[str] | None:
        """The outputs this toolchain's .om yields, when the .om itself says (None: the recipe's)."""

    def found(self) -> str | None:
        """Why the Ascend tools are usable here, said in a few words; None when they are not."""

    def atc_environment(self, stage: "AtcStage", graph: "onnx.ModelProto | None", staging: Path) -> dict[str, str]:
        """Environment for one atc run of `stage` on `graph` (the model it was given, checked)."""


class RealToolchain:
    """The CANN tools the environment resolves (source set_env.sh first)."""

    name = "real"

    def subprocess_env(self) -> dict[str, str]:
        return {}

    def python_path(self) -> list[str]:
        return []

    def cann_version(self) -> str:
        return versions.cann()

    def identity(self, tool: str) -> dict[str, str]:
        return {"toolchain": "real", "cann": versions.cann(), tool: versions.real_tool(tool)}

    def om_numerics(self, om_path: Path) -> str | None:
        return None

    def om_output_names(self, om_path: Path) -> list[str] | None:
        return None

    def found(self) -> str | None:
        return "CANN found" if cann_present() else None

    def atc_environment(self, stage: "AtcStage", graph: "onnx.ModelProto | None", staging: Path) -> dict[str, str]:
        return {}


def cann_present() -> bool:
    """As ascend-tools.md section 5 suggests: the toolkit variables are set and atc resolves."""
    has_home = bool(os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH"))
    return has_home and execute.which("atc") is not None


_active: list[Toolchain] = [RealToolchain()]
ENTRY_POINTS = "om_pipeline.toolchains"


def load(name: str, workdir: Path) -> Toolchain:
    """`--toolchain NAME`: the real one, or the plugin registered under that name, given a
    directory of its own under the work directory (the fake puts its tool wrappers there)."""
    if name == RealToolchain.name:
        return RealToolchain()
    plugins = {entry.name: entry for entry in metadata.entry_points(group=ENTRY_POINTS)}
    if name not in plugins:
        raise UserError(f"unknown toolchain {name!r}", hint=f"choose one of {', '.join([RealToolchain.name, *sorted(plugins)])}")
    return plugins[name].load()(workdir.resolve() / f".{name}-toolchain")


def activate(toolchain: Toolchain) -> None:
    """Make `toolchain` the one every subprocess and in-process import of this command uses."""
    execute.set_toolchain_env(toolchain.subprocess_env())
    _active[0] = toolchain


def active() -> Toolchain:
    return _active[0]


def import_path() -> None:
    """Put the active toolchain's Python directories first on sys.path, once each."""
    for directory in reversed(active().python_path()):
        if directory not in sys.path:
            sys.path.insert(0, directory)
