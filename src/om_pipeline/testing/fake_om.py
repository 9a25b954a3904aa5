"""The fake `.om` format written by the fake atc and run by the fake ais_bench:

    b"OMPIPE-FAKE-OM 1\\n"
    one JSON line: the compiled model's description (soc_version, framework, inputs and outputs
                   as [{name, shape, dtype}], precision_mode, precision_mode_v2 and keep_dtype
                   ({names, types}) as atc was given them, argv)
    the ONNX model bytes (inputs made static as --input_shape says, outputs as --out_nodes says)

so the fake ais_bench can really run the model with ONNX Runtime, see the batch size the model
was compiled for, and compute as the precision mode says (om_pipeline.fp16: fp16 storage under
force_fp16, ATC's default).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAGIC = b"OMPIPE-FAKE-OM 1\n"


class NotAFakeOm(ValueError):
    pass


def write_fake_om(path: Path, onnx_bytes: bytes, meta: dict[str, Any]) -> None:
    header = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    Path(path).write_bytes(MAGIC + header + b"\n" + onnx_bytes)


def read_fake_om_meta(path: Path) -> dict[str, Any]:
    """The description alone, without reading the model bytes."""
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise NotAFakeOm(f"{path} is not an ompipe fake .om (a real one needs a real NPU)")
        return json.loads(handle.readline())


def read_fake_om(path: Path) -> tuple[dict[str, Any], bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise NotAFakeOm(f"{path} is not an ompipe fake .om (a real one needs a real NPU)")
    header, _, onnx_bytes = data[len(MAGIC):].partition(b"\n")
    return json.loads(header), onnx_bytes
