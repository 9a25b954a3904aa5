"""Inference runtimes: what runs the model (runtimes/base.py says what each provides).

`RUNTIMES` is the one dispatch: a run names its runtime, `for_run` builds it, and every stage
asks it rather than comparing names.
"""
from __future__ import annotations

from ..errors import UserError
from . import ais_bench, msame, onnxruntime
from .base import FilesJob, Runtime, Session

RUNTIMES: dict[str, type] = {module.RUNTIME.name: module.RUNTIME for module in (onnxruntime, ais_bench, msame)}


def runtime_class(name: str) -> type:
    if name not in RUNTIMES:
        raise UserError(f"unknown runtime {name!r}", hint=f"choose one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def for_run(name: str, run) -> Runtime:
    return runtime_class(name)(run)


__all__ = ["FilesJob", "RUNTIMES", "Runtime", "Session", "for_run", "runtime_class"]
