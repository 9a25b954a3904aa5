"""ais_bench's batching rules (ascend-tools.md §2.3-2.4), in one place.

Used by the fake ais_bench (so it batches exactly as the real one) and by ompipe's own ONNX
Runtime backend (so both backends read the same `.bin` files and write the same
`<stem>_<i>.<fmt>` outputs). Pure functions over paths and arrays; no ais_bench import.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

import numpy as np

from .errors import UserError
from .samples import output_path

INPUT_SUFFIXES = (".bin", ".BIN", ".npy", ".NPY")
OUTPUT_FORMATS = ("BIN", "NPY", "TXT")

PathLike = TypeVar("PathLike", str, Path)


class BatchingError(UserError):
    """The inputs do not fit the model the way ais_bench batches them. The message is the
    line ais_bench itself logs, so the fake can print it verbatim."""


def natural_sort(paths: Iterable[PathLike]) -> list[PathLike]:
    """ais_bench's `natural_sort`: digit runs compare as numbers, the rest case-insensitively.
    It sorts plainly first (`files_list.sort()`), which decides ties such as `a.bin`/`A.bin`."""

    def key(path: PathLike) -> list[int | str]:
        parts = re.split(r"([0-9]+)", str(path))
        return [int(part) if part.isdigit() else part.lower() for part in parts]

    return sorted(sorted(paths, key=str), key=key)


def list_input_files(directory: str | Path) -> list[str]:
    """The files ais_bench reads from one `--input` directory: `.bin/.BIN/.npy/.NPY` only,
    sub-directories skipped, natural sort of the full paths (§2.3)."""
    directory = str(directory)
    files = [
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.endswith(INPUT_SUFFIXES) and not os.path.isdir(os.path.join(directory, name))
    ]
    if not files:
        raise BatchingError(
            f"{directory} of input args not find valid file,valid file format:[*.npy *.NPY *.bin *.BIN]"
        )
    return natural_sort(files)


def split_file_list(files: Sequence[str], n_inputs: int) -> list[list[str]]:
    """`--input a.bin,b.bin,...` (files, not directories): k consecutive chunks of len//k
    files, chunk j feeding model input j. ais_bench fails when the count does not divide."""
    size = len(files) // n_inputs
    if size == 0 or len(files) % n_inputs:
        lists = math.ceil(len(files) / size) if size else len(files)
        raise BatchingError(f"fileslist:{lists} intensor:{n_inputs} not match")
    return [list(files[j * size:(j + 1) * size]) for j in range(n_inputs)]


def file_nbytes(path: str | Path) -> int:
    """ais_bench's `get_file_datasize`: a `.npy` counts its array bytes, anything else its size."""
    if str(path).endswith((".npy", ".NPY")):
        return int(np.load(path).nbytes)
    return os.path.getsize(path)


def files_per_batch(tensor_bytes: int, file_bytes: int) -> int:
    """How many input files fill one model input (input 0 decides for all inputs, §2.3)."""
    if file_bytes == 0 or tensor_bytes % file_bytes:
        raise BatchingError(f"arg0 tensorsize: {tensor_bytes} filesize: {file_bytes} not match")
    return tensor_bytes // file_bytes


@dataclass(frozen=True)
class Batch:
    """One model execution. `files[j]` are the real files of model input j; `padding` more
    samples fill the batch with the first file's data and are never written out."""

    files: tuple[tuple[str, ...], ...]
    padding: int = 0

    @property
    def samples(self) -> list[tuple[str, ...]]:
        """Per real sample, its file for each model input (ais_bench pairs them by position)."""
        return list(zip(*self.files))


def plan_batches(files: Sequence[Sequence[str]], per_batch: int) -> list[Batch]:
    """Cut each model input's file list into batches of `per_batch` files; the last batch of
    every input is padded (ais_bench's `list_split` with `PADDING_INFER_FAKE_FILE`).
    `files` holds one list per model input, already in ais_bench order."""
    counts = {len(input_files) for input_files in files}
    if len(counts) != 1:
        raise BatchingError(f"the model inputs got different numbers of files: {[len(f) for f in files]}")
    (count,) = counts
    batches = []
    for start in range(0, count, per_batch):
        chunk = tuple(tuple(input_files[start:start + per_batch]) for input_files in files)
        batches.append(Batch(chunk, per_batch - len(chunk[0])))
    return batches


def file_bytes(path: str | Path) -> bytes:
    """A file's data as ais_bench hands it to the device: raw bytes of a `.bin`, the array
    bytes of a `.npy`. No dtype conversion happens (§2.3)."""
    if str(path).endswith((".npy", ".NPY")):
        return np.ascontiguousarray(np.load(path)).tobytes()
    return Path(path).read_bytes()


def read_input_file(path: str | Path, dtype: np.dtype | str, shape: Sequence[int] | None = None) -> np.ndarray:
    """One input file as an array of the model input's dtype (the bytes reinterpreted, as
    ais_bench does), reshaped to `shape` when given."""
    return _as_array(file_bytes(path), dtype, shape, what=str(path))


def batch_array(
    files: Sequence[str], padding: int, dtype: np.dtype | str, shape: Sequence[int]
) -> np.ndarray:
    """The tensor for one model input of one batch: the files' bytes end to end, then
    `padding` copies of the batch's first file (ais_bench's `get_narray_from_files_list`)."""
    chunks = [file_bytes(path) for path in files]
    data = b"".join(chunks) + chunks[0] * padding
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise BatchingError(f"ndata size:{len(data)} not match {expected}")
    return _as_array(data, dtype, shape, what=files[0])


def _as_array(data: bytes, dtype: np.dtype | str, shape: Sequence[int] | None, what: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if len(data) % dtype.itemsize:
        raise BatchingError(f"{what}: {len(data)} bytes is not a whole number of {dtype} values")
    array = np.frombuffer(data, dtype=dtype)
    if shape is None:
        return array
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise BatchingError(f"{what}: {array.size} {dtype} values do not fill shape {tuple(shape)}")
    return array.reshape(shape)


def output_stem(first_input_file: str | Path) -> str:
    """Output files are named after the sample's input-0 file, cut at the FIRST dot (§2.4)."""
    return os.path.basename(str(first_input_file)).split(".")[0]


def split_outputs(array: np.ndarray, per_batch: int, axis: int = 0) -> list[np.ndarray]:
    """One batched model output split into one piece per input file (`np.array_split`
    along `--output_batchsize_axis`); the axis must divide evenly unless there is one file."""
    if axis >= array.ndim:
        raise BatchingError(f"ndata.shape:{array.shape} len:{array.ndim} <= output_batchsize_axis:{axis}  is invalid")
    if per_batch != 1 and array.shape[axis] % per_batch:
        raise BatchingError(
            f"save out files error array shape:{array.shape} files_count_perbatch:{per_batch} "
            f"ndata.shape {axis}:{array.shape[axis]}"
        )
    return np.array_split(array, per_batch, axis)


def save_output(array: np.ndarray, directory: str | Path, stem: str, index: int, fmt: str) -> Path:
    """Write model output `index` of one sample as ais_bench's `save_data_to_files` does."""
    if fmt not in OUTPUT_FORMATS:
        raise BatchingError(f"--outfmt {fmt} is not one of {', '.join(OUTPUT_FORMATS)}")
    path = output_path(directory, stem, index, fmt.lower())
    with open(path, "wb") as handle:
        if fmt == "NPY":
            np.save(handle, array)
        elif fmt == "TXT":
            _write_txt(handle, array)
        else:
            array.tofile(handle)
    return path


def _write_txt(handle, array: np.ndarray) -> None:
    # One row of the last axis per line, each value followed by a space (np.savetxt with
    # newline=" "), then "\n": so every line ends with " \n" (§2.4).
    rows = array.reshape(-1, array.shape[-1])
    fmt = "%f" if array.dtype in (np.float16, np.float32, np.float64) else "%d"
    for row in rows:
        np.savetxt(handle, np.c_[row], fmt=fmt, newline=" ")
        handle.write(b"\n")
