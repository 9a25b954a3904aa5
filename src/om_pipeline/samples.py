"""The on-disk layout of a sample's model outputs: output i of sample <id> is `<id>_<i>.<ext>`
in one directory per run (and per view), whichever tool wrote it, so eval does not care which ran.

- `.bin`: a raw tool output (ais_bench's and msame's default, our ONNX Runtime backend's), or
  `.txt` where the guide asks msame for TXT (GFocalV2).
- `.npy` is also what chunked infer keeps of a sample: the plugin's reduce_outputs of its raw
  outputs, written atomically (a killed run leaves no half file to be read back as complete).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserError

RAW_EXTENSIONS = ("bin", "txt")  # what the eval stage reads as a tool's raw output, in this order
REDUCED_EXTENSION = "npy"


def output_path(directory: str | Path, sample_id: str, index: int, extension: str = "bin") -> Path:
    """`<directory>/<sample_id>_<index>.<extension>`."""
    return Path(directory) / f"{sample_id}_{index}.{extension}"


def has_output(directory: Path, sample_id: str, index: int) -> bool:
    """Whether the tool left raw output `index` of the sample (in either format eval reads)."""
    return any(output_path(directory, sample_id, index, extension).exists() for extension in RAW_EXTENSIONS)


def read_outputs(directory: Path, sample_id: str, specs) -> list[np.ndarray]:
    """The sample's raw outputs, one per spec (`.bin`, else msame's `.txt`), each checked
    against and shaped by its spec (name, shape, dtype)."""
    arrays = []
    for index, spec in enumerate(specs):
        path = output_path(directory, sample_id, index)
        text = output_path(directory, sample_id, index, "txt")  # msame --outfmt TXT, as the GFocalV2 guide runs it
        if not path.is_file() and not text.is_file():
            raise UserError(f"no output {path.name} for sample {sample_id} in {directory}", hint="rerun the infer stage (--force)")
        array = np.fromfile(path, dtype=spec.dtype) if path.is_file() else np.array(text.read_text().split(), dtype=np.float64).astype(spec.dtype)
        if array.size != int(np.prod(spec.shape)):
            raise UserError(f"{path} holds {array.size} values; output {spec.name} has shape {spec.shape}")
        arrays.append(array.reshape(spec.shape))
    return arrays


def read_reduced(directory: Path, sample_id: str) -> list[np.ndarray] | None:
    """`<id>_<i>.npy`, i = 0, 1, ...: what chunked infer keeps (the plugin's reduce_outputs); None when absent."""
    arrays = []
    while (path := output_path(directory, sample_id, len(arrays), REDUCED_EXTENSION)).is_file():
        arrays.append(np.load(path, allow_pickle=False))
    return arrays or None


def write_reduced(directory: Path, sample_id: str, index: int, array: np.ndarray) -> Path:
    """Write `<id>_<index>.npy` under a temporary name, then rename it into place: a run killed
    while writing leaves no file that read_reduced would take for a finished one."""
    final = output_path(directory, sample_id, index, REDUCED_EXTENSION)
    partial = final.with_name(f".{final.name}.partial")
    with open(partial, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(partial, final)
    return final
