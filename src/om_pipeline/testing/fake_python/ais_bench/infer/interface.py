"""Fake `ais_bench.infer.interface` (ascend-tools.md §2.8): the part of `InferSession` that
in-process (streaming) inference uses, over a fake `.om`."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from om_pipeline.testing.fake_runtime import FakeOmModel, TensorSpec


class dtype(enum.Enum):  # noqa: N801 - named as aclruntime.dtype; str() gives "dtype.float32" as there
    uint8 = "uint8"
    int8 = "int8"
    uint16 = "uint16"
    int16 = "int16"
    uint32 = "uint32"
    int32 = "int32"
    uint64 = "uint64"
    int64 = "int64"
    float16 = "float16"
    float32 = "float32"
    double64 = "float64"
    bool = "bool"


@dataclass(frozen=True)
class TensorDesc:
    """aclruntime.tensor_desc: name, datatype, format (0 = NCHW), shape, size and realsize (bytes)."""

    name: str
    datatype: dtype
    format: int
    shape: list[int]
    size: int
    realsize: int


@dataclass
class SessionSummary:
    exec_time_list: list[list[float]] = field(default_factory=list)  # [start_ms, end_ms] per execution (since ~2023-10)


def _desc(spec: TensorSpec) -> TensorDesc:
    size = spec.nbytes if spec.is_static else 0
    return TensorDesc(spec.name, dtype(spec.dtype.name), 0, list(spec.shape), size, size)


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None,
                 debug: bool = False, loop: int = 1):
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        self._model = FakeOmModel(model_path)
        self._summary = SessionSummary()

    def get_inputs(self) -> list[TensorDesc]:
        return [_desc(spec) for spec in self._model.inputs]

    def get_outputs(self) -> list[TensorDesc]:
        return [_desc(spec) for spec in self._model.outputs]

    def infer(self, feeds: Sequence[Any], mode: str = "static", custom_sizes: int = 100000,
              out_array: bool = True) -> list[np.ndarray]:
        """Static mode only. Feeds go to the model as their bytes (no dtype conversion, as
        the real session copies them to the device), so each must have the input's size.
        Returns arrays whatever out_array says."""
        if mode != "static":
            raise RuntimeError(f"ompipe fake InferSession does not emulate mode {mode!r}")
        arrays = [self._as_input(feed, spec) for feed, spec in zip(feeds, self._model.inputs)]
        outputs: list[np.ndarray] = []
        for _ in range(self.loop):
            start = time.perf_counter() * 1000
            outputs = self._model.execute(arrays)
            self._summary.exec_time_list.append([start, time.perf_counter() * 1000])
        return outputs

    @staticmethod
    def _as_input(feed: Any, spec: TensorSpec) -> np.ndarray:
        array = np.ascontiguousarray(np.asarray(feed))
        if array.nbytes != spec.nbytes:
            raise RuntimeError(f"input {spec.name}: {array.nbytes} bytes given, the model needs {spec.nbytes}")
        # the bytes reinterpreted, not copied: the real session's copy to the device is DMA, which
        # costs the host no CPU (an 11.7 MB GFocalV2 input copied here took ms per batch)
        return array.reshape(-1).view(np.uint8).view(spec.dtype).reshape(spec.shape)

    def summary(self) -> SessionSummary:
        return self._summary

    def reset_summaryinfo(self) -> None:
        self._summary = SessionSummary()

    def free_resource(self) -> None:
        self._model.close()

    @staticmethod
    def finalize() -> None:
        """Releases ACL in the real one; nothing to do here."""
