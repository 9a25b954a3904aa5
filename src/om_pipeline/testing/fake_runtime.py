"""The "NPU" of the fake toolchain: loads a fake `.om` and executes its ONNX with ONNX Runtime
on the CPU. Shared by the fake `python -m ais_bench` and the fake `InferSession`. With
OMPIPE_FAKE_NPU set, a paced NPU (fake_paced_npu) records or replays the outputs instead."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import fp16
from . import fake_paced_npu
from .fake_om import read_fake_om


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the compiled model sees it (-1: a dynamic dim)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def is_static(self) -> bool:
        return all(dim >= 0 for dim in self.shape)

    @property
    def nbytes(self) -> int:
        """aclruntime's `realsize` (static shapes only)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _specs(entries: list[dict]) -> list[TensorSpec]:
    return [TensorSpec(e["name"], tuple(e["shape"]), np.dtype(e["dtype"])) for e in entries]


def _host_ops(entry: dict | None) -> Callable[[list[np.ndarray]], list[np.ndarray]] | None:
    """The plugin function a fake .om runs after its twin (fake_atc.host_ops_meta), with its settings."""
    if not entry:
        return None
    import importlib

    module, _, name = entry["function"].partition(":")
    function = getattr(importlib.import_module(module), name)
    return lambda outputs: function(outputs, entry["params"])


class FakeOmModel:
    """The compiled model computes as its precision mode says: under ATC's default force_fp16
    every float activation and weight is stored in fp16 (om_pipeline.fp16, "emulated fp16")."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta, onnx_bytes = read_fake_om(self.path)
        self.inputs = _specs(self.meta["inputs"])
        self.outputs = _specs(self.meta["outputs"])
        # a twin's outputs, made into the real graph's by a host stand-in for its Ascend-only tail (fake_atc)
        self._executed = _specs(self.meta.get("executed_outputs", self.meta["outputs"]))
        self._host_ops = _host_ops(self.meta.get("host_ops"))
        self.precision = fp16.precision_of(self.meta)
        self._paced = fake_paced_npu.from_environment(onnx_bytes, self.inputs, self.outputs)
        if self._paced is not None and not self._paced.needs_model:
            return  # replayed: no session, no host CPU spent on the model
        import onnx  # imported here: loading it and ONNX Runtime costs a second, and only the fakes need them

        self._session = fp16.session(onnx.load_from_string(onnx_bytes), self.precision)

    def execute(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One model execution; the outputs in the compiled model's dtypes (--output_type)."""
        if self._paced is not None:
            return self._paced.execute(arrays, self._run)
        return self._run(arrays)

    def _run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        feeds = {spec.name: np.ascontiguousarray(array) for spec, array in zip(self.inputs, arrays)}
        results = self._session.run([spec.name for spec in self._executed], feeds)
        results = [np.asarray(result).astype(spec.dtype, copy=False) for result, spec in zip(results, self._executed)]
        if self._host_ops is not None:
            results = self._host_ops(results)
        return [np.asarray(result).astype(spec.dtype, copy=False) for result, spec in zip(results, self.outputs)]

    def close(self) -> None:
        self._session = None
