"""Fake `msame` (ascend-tools.md §3): the same options, printed lines, files and exit codes as
Ascend/tools msame (main.cpp, sample_process.cpp, model_process.cpp, utils.cpp, 2022 and later),
running the fake .om's graph with ONNX Runtime.

- `--input`: comma-separated .bin files (one per model input), or directories: file names come
  from the FIRST directory (entries not starting with '.', sorted), the same name is read from
  every directory; `--loop` is ignored in directory mode; no `--input`: zero-filled input.
- output: `<output>/<timestamp>/` (year+month+day unpadded, `_h_m_s_usec`), printed alone on a
  line; files `<name>_output_<i>.bin|.txt` with `<name>` the input file name without its last
  extension (directory mode) or the model's base name.
- exits 0 after several argument errors (wrong model suffix, unknown parameter, loop out of
  range), as the real one does; a wrapper must look for `[ERROR]` lines.
"""
from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .fake_runtime import FakeOmModel

OPTIONS = {"model", "input", "output", "outfmt", "help", "dump", "profiler", "loop", "dymBatch", "dymDims", "dymHW",
           "dymShape", "device", "outputSize", "debug"}


def info(message: str) -> None:
    print(f"[INFO] {message}", flush=True)


def error(message: str) -> None:
    print(f"[ERROR] {message}", flush=True)


def parse(argv: Sequence[str]) -> dict[str, str] | None:
    """getopt_long with required arguments: `--k v` and `--k=v`."""
    values: dict[str, str] = {}
    items = list(argv)
    while items:
        token = items.pop(0)
        name, equals, value = token.lstrip("-").partition("=")
        if not token.startswith("--") or name not in OPTIONS:
            error(f"unknown parameter {token}")
            return None
        if not equals:
            if not items:
                error(f"option {token} requires an argument")
                return None
            value = items.pop(0)
        values[name] = value
    return values


def timestamp(now: datetime.datetime) -> str:
    """utils.cpp printCurrentTime since 2022-03: no zero padding (2023610_9_5_7_123456)."""
    return f"{now.year}{now.month}{now.day}_{now.hour}_{now.minute}_{now.second}_{now.microsecond}"


def input_sets(spec: str | None, n_inputs: int) -> list[tuple[str, list[Path | None]]]:
    """(output name, one file per model input) per execution."""
    if spec is None:
        return [("", [None] * n_inputs)]
    items = [Path(item) for item in spec.split(",") if item]
    if ".bin" in items[0].name:
        return [("", items)]
    names = sorted(entry.name for entry in items[0].iterdir() if not entry.name.startswith("."))
    return [(name.rsplit(".", 1)[0], [directory / name for directory in items]) for name in names]


def read_inputs(model: FakeOmModel, files: list[Path | None]) -> list[np.ndarray]:
    arrays = []
    for spec, path in zip(model.inputs, files):
        if path is None:
            arrays.append(np.zeros(spec.shape, dtype=spec.dtype))
            continue
        data = np.fromfile(path, dtype=np.uint8)
        if data.size != spec.nbytes:
            raise ValueError(f"input file {path} size {data.size} is not the model input size {spec.nbytes}")
        arrays.append(data.view(spec.dtype).reshape(spec.shape))
    return arrays


def save(array: np.ndarray, path: Path, fmt: str) -> None:
    if fmt == "TXT":
        rows = array.reshape(-1, array.shape[-1] if array.ndim else 1)
        path.write_text("".join(" ".join(f"{v:g}" for v in row) + "\n" for row in rows))
    else:
        array.tofile(path)


def main(argv: Sequence[str]) -> int:
    options = parse(argv)
    if options is None:
        return 0  # the real msame exit(0)s on an unknown parameter
    if "help" in options or "model" not in options:
        print("usage: msame --model m.om [--input ...] --output out/ [--outfmt TXT|BIN] [--loop N] [--device 0]")
        return 0
    if ".om" not in options["model"]:
        error("input model file type is not .om , please check your model type!")
        return 0
    loop = int(options.get("loop", "1"))
    if not 1 <= loop <= 100:
        error("loop must in 1 to 100")
        return 0
    fmt = options.get("outfmt", "BIN").upper()
    info("acl init success")
    info(f"open device {options.get('device', '0')} success")
    info("create context success")
    info("create stream success")
    info("get run mode success")
    model = FakeOmModel(options["model"])
    info(f"load model {options['model']} success")
    info("create model description success")
    info("create model output success")
    output_dir = None
    if "output" in options:
        root = Path(options["output"])
        root.mkdir(mode=0o775, exist_ok=True)
        output_dir = root / timestamp(datetime.datetime.now())
        output_dir.mkdir(mode=0o775)
        print(output_dir, flush=True)
    sets = input_sets(options.get("input"), len(model.inputs))
    directory_mode = bool(sets) and sets[0][0] != ""
    times = []
    for name, files in sets:
        if files[0] is not None:
            info(f"start to process file:{files[0]}")
        arrays = read_inputs(model, files)
        for _ in range(1 if directory_mode else loop):
            started = time.perf_counter()
            outputs = model.execute(arrays)
            times.append((time.perf_counter() - started) * 1000)
            print(f"Inference time: {times[-1]}ms", flush=True)
        info("model execute success")
        if output_dir is not None:
            stem = name or Path(options["model"]).name.rsplit(".", 1)[0]
            for index, array in enumerate(outputs):
                save(array, output_dir / f"{stem}_output_{index}.{fmt.lower()}", fmt)
            info("output data success")
    if directory_mode:
        print(f"Inference average time : {np.mean(times):.2f} ms")
        if len(times) > 1:
            print(f"Inference average time without first time: {np.mean(times[1:]):.2f} ms")
    else:
        print(f"Inference average time: {np.mean(times):f} ms")
        if len(times) > 1:
            print(f"Inference average time without first time: {np.mean(times[1:]):f} ms")
    info(f"pid: {os.getpid()} Execute sample success")
    info("unload model success, model Id is 1")
    info("end to destroy stream")
    info("end to destroy context")
    info("end to reset device is 0")
    info("end to finalize acl")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as exc:  # the real one prints an [ERROR] line and returns FAILED (1)
        error(str(exc))
        sys.exit(1)
