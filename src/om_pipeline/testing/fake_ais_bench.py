"""A fake `python -m ais_bench` that behaves as ascend-tools.md §2 describes (AB-2025
`ais_bench/infer/*.py`): same arguments, same batching, same printed lines, same result files,
same exit codes. It runs the ONNX inside a fake `.om` (fake_atc) with ONNX Runtime, so its
outputs are real numbers and its times real (CPU) times.

With `om_pipeline/testing/fake_python` on PYTHONPATH, `python -m ais_bench ...` runs this.

Environment knob:
    OMPIPE_FAKE_AIS_LAYOUT=2022a   the first generation (`ais_infer.py`, AB-2022a): summary
                                   `sumary.json` INSIDE the result dir, throughput line
                                   `batchsize(`, H2D/D2H lines always printed, result dir made
                                   with os.mkdir (its parent must exist, it must not); no path
                                   security checks.
Not emulated (they fail with a RuntimeError saying so): several devices, the auto dym modes,
--dymShape_range, --pipeline, --perf/--backend. --profiler/--dump/--acl_json_path/
--energy_consumption are accepted and produce nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import stat
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..batching import (
    Batch,
    BatchingError,
    batch_array,
    file_nbytes,
    files_per_batch,
    list_input_files,
    output_stem,
    plan_batches,
    save_output,
    split_file_list,
    split_outputs,
)
from .fake_runtime import FakeOmModel, TensorSpec

PURE_INFER_FAKE_FILE = "pure_infer_data"
PERCENTILE = 99
OM_MAX_SIZE = 10 * 1024 ** 3
LEGAL_PATH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/.-")
# An existing --output must not be group-writable nor have any "other" bit (args_check.py).
OUTPUT_FORBIDDEN_BITS = stat.S_IWGRP | stat.S_IWOTH | stat.S_IROTH | stat.S_IXOTH
INPUT_FORBIDDEN_BITS = stat.S_IWGRP | stat.S_IWOTH
RUN_MODE_DESC = {
    "array": "Inference array Processing",
    "files": "Inference files Processing",
    "tensor": "Inference tensor Processing",
    "full": "Inference Processing full",
}


def log(level: str, message: str) -> None:
    print(f"[{level}] {message}", flush=True)  # logging.basicConfig(stream=sys.stdout, format='[%(levelname)s] %(message)s')


def fatal(message: str) -> RuntimeError:
    """ais_bench's habit: log the reason, then raise a bare RuntimeError."""
    log("ERROR", message)
    return RuntimeError()


def legacy_layout() -> bool:
    return os.environ.get("OMPIPE_FAKE_AIS_LAYOUT") == "2022a"


# ---------------------------------------------------------------------------------------------
# Arguments (AB-2025 ais_bench/infer/args_check.py + __main__.py get_args)


def str2bool(value: str) -> bool:
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected true, 1, false, 0 with case insensitive.")


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is an invalid positive int value")
    return number


def nonnegative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is an invalid nonnegative int value")
    return number


def device_ids(value: str) -> int | list[int]:
    try:
        ids = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Argument npu-id invalid input value: {value}. "
            "Please provide a valid integer or a comma-separated list of integers."
        ) from None
    for device in ids:
        if not 0 <= device <= 255:
            raise argparse.ArgumentTypeError(f"device:{device} is invalid. valid value range is [0, 255]")
    return ids if "," in value else ids[0]


def _path_is_legal(path: str, perm: str) -> bool:
    """FileStat.is_basically_legal (path_security_check.py), as far as it applies here."""
    if legacy_layout():
        return True
    if not set(path) <= LEGAL_PATH_CHARS:
        log("ERROR", f"path:{path} contains illegal char")
        return False
    if not os.path.exists(path):
        if perm == "write":
            return True
        log("ERROR", f"path: {path} not exist")
        return False
    mode = stat.S_IMODE(os.stat(path).st_mode)
    forbidden = OUTPUT_FORBIDDEN_BITS if perm == "write" else INPUT_FORBIDDEN_BITS
    if mode & forbidden:
        log("ERROR", f"The file {path} is group writable, or is others writable.")
        return False
    return True


def om_path(value: str) -> str:
    legal = _path_is_legal(value, "read") and os.path.isfile(value)
    if legal and os.path.splitext(value)[1] != ".om":
        log("ERROR", f"path:{value}, file type not in ['om']")
        legal = False
    if not legal or os.path.getsize(value) > OM_MAX_SIZE:
        raise argparse.ArgumentTypeError(f"om path:{value} is illegal. Please check.")
    return value


def input_paths(value: str) -> str:
    for path in value.split(","):
        if not _path_is_legal(path, "read"):
            raise argparse.ArgumentTypeError(f"input path:{path} is illegal. Please check.")
    return value


def output_path(value: str) -> str:
    if not _path_is_legal(value, "write"):
        raise argparse.ArgumentTypeError(f"output path:{value} is illegal. Please check.")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add = parser.add_argument
    add("--model", "-m", type=om_path, required=True, help="The path of the om model")
    add("--input", "-i", type=input_paths, default=None, help="Input file or dir")
    add("--output", "-o", type=output_path, default=None, help="Inference data output path")
    add("--output_dirname", type=output_path, default=None, help="Actual output directory name")
    add("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"], help="Output file format (NPY or BIN or TXT)")
    add("--loop", "-l", type=positive_int, default=1, help="The round of the PureInfer.")
    add("--debug", type=str2bool, default=False, help="Debug switch,print model information")
    add("--device", "-d", type=device_ids, default=0, help="The NPU device ID to use")
    add("--dymBatch", dest="dym_batch", type=positive_int, default=0, help="Dynamic batch size param")
    add("--dymHW", dest="dym_hw", default=None, help="Dynamic image size param")
    add("--dymDims", dest="dym_dims", default=None, help="Dynamic dims param")
    add("--dymShape", "--dym-shape", dest="dym_shape", default=None, help="Dynamic shape param")
    add("--outputSize", dest="output_size", default=None, help="Output size for dynamic shape mode")
    add("--auto_set_dymshape_mode", type=str2bool, default=False, help="Auto_set_dymshape_mode")
    add("--auto_set_dymdims_mode", type=str2bool, default=False, help="Auto_set_dymdims_mode")
    add("--batchsize", type=positive_int, default=None, help="Batch size of input tensor")
    add("--pure_data_type", default="zero", choices=["zero", "random"], help="Null data type for pure inference")
    add("--profiler", type=str2bool, default=False, help="Profiler switch")
    add("--dump", type=str2bool, default=False, help="Dump switch")
    add("--acl_json_path", default=None, help="Acl json path for profiling or dump")
    add("--output_batchsize_axis", type=nonnegative_int, default=0, help="Splitting axis number")
    add("--run_mode", default="array", choices=list(RUN_MODE_DESC), help="Run mode")
    add("--display_all_summary", type=str2bool, default=False, help="Display all summary include h2d d2h info")
    add("--warmup_count", "--warmup-count", type=nonnegative_int, default=1, help="Warmup count before inference")
    add("--dymShape_range", dest="dym_shape_range", default=None, help="Dynamic shape range")
    add("--aipp_config", default=None, help="File type: .config, to set actual aipp params before infer")
    add("--energy_consumption", type=str2bool, default=False, help="Obtain power consumption data")
    add("--npu_id", type=nonnegative_int, default=0, help="The NPU ID to use")
    add("--backend", default=None, choices=["trtexec"], help="Backend trtexec")
    add("--perf", type=str2bool, default=False, help="Perf switch")
    add("--pipeline", type=str2bool, default=False, help="Pipeline switch")
    add("--profiler_rename", type=str2bool, default=True, help="Profiler rename switch")
    add("--dump_npy", type=str2bool, default=False, help="dump data convert to npy")
    add("--divide_input", type=str2bool, default=False, help="Divide inputs across devices")
    add("--threads", type=positive_int, default=1, help="Number of threads for computing")
    return parser


def main(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse: usage on stderr, exit 2 (or 0 for --help)
        return int(exc.code or 0)
    try:
        infer_process(args, [sys.argv[0], *argv])
    except BatchingError as exc:  # logged as ais_bench logs it, then its bare RuntimeError
        return crash(exc.message)
    except Exception:  # noqa: BLE001 - an uncaught exception is how ais_bench fails (§2.7)
        return crash(None)
    return 0


def crash(message: str | None) -> int:
    if message:
        log("ERROR", message)
    sys.stdout.flush()
    traceback.print_exc()
    return 1


# ---------------------------------------------------------------------------------------------
# The run (AB-2025 infer_process.py main)


@dataclass
class Timings:
    npu_compute_ms: list[float] = field(default_factory=list)
    h2d_ms: list[float] = field(default_factory=list)
    d2h_ms: list[float] = field(default_factory=list)


@dataclass
class Plan:
    batches: list[Batch]
    per_batch: int  # input files per model execution
    pure: bool  # no --input: generated data


def infer_process(args: argparse.Namespace, argv: list[str]) -> None:
    check_args(args)
    device = args.device
    log("INFO", "acl init success")
    log("INFO", f"open device {device} success")
    log("INFO", "create new context")
    model = FakeOmModel(args.model)
    log("INFO", f"load model {args.model} success")
    log("INFO", "create model description success")
    inputs = resolved_inputs(model.inputs, args)
    if args.batchsize is None:
        args.batchsize = inputs[0].shape[0]
        log("INFO", f"try get model batchsize:{args.batchsize}")
    result_dir = make_result_dir(args)
    plan = plan_run(args, inputs)
    timings = Timings()
    warm_up(model, args, inputs, plan)
    filesinfo = run_batches(model, args, inputs, plan, result_dir, timings)
    report(args, argv, result_dir, filesinfo, timings)
    log("INFO", "unload model success, model Id is 1")
    log("INFO", "end to destroy context")
    log("INFO", f"end to reset device {device}")
    log("INFO", "end to finalize acl")


def check_args(args: argparse.Namespace) -> None:
    """args_rules + what the fake cannot do."""
    if args.profiler and args.dump:
        raise fatal("parameter --profiler cannot be true at the same time as parameter --dump, please check them!\n")
    if (args.profiler or args.dump) and args.output is None:
        raise fatal("when dump or profiler, miss output path, please check them!")
    if args.output is None and args.output_dirname is not None:
        raise fatal("parameter --output_dirname cann't be used alone. "
                    "Please use it together with the parameter --output!\n")
    unsupported = {
        "several devices (--device a,b)": isinstance(args.device, list),
        "--auto_set_dymshape_mode/--auto_set_dymdims_mode": args.auto_set_dymshape_mode or args.auto_set_dymdims_mode,
        "--dymShape_range": args.dym_shape_range is not None,
        "--pipeline": args.pipeline,
        "--perf/--backend": args.perf or args.backend is not None,
    }
    for what, used in unsupported.items():
        if used:
            raise RuntimeError(f"ompipe fake ais_bench does not emulate {what}")


def resolved_inputs(specs: list[TensorSpec], args: argparse.Namespace) -> list[TensorSpec]:
    """The input shapes of this run: dynamic dims filled from --dymBatch/--dymHW/--dymDims/
    --dymShape; a dynamic dim left over is an error, as with the real tool."""
    overrides = _dym_overrides(args)
    resolved = []
    for index, spec in enumerate(specs):
        shape = list(overrides.get(spec.name, spec.shape))
        if args.dym_batch and shape and shape[0] == -1:
            shape[0] = args.dym_batch
        if args.dym_hw and len(shape) == 4 and shape[2:] == [-1, -1]:
            shape[2:] = [int(v) for v in args.dym_hw.split(",")]
        if any(dim < 0 for dim in shape):
            raise fatal("dynamic batch om model detected, but dymbatch, dymdims or dymshape not set!")
        if spec.is_static and tuple(shape) != spec.shape:
            raise fatal(f"input {index} {spec.name}: shape {shape} does not fit the static model shape {list(spec.shape)}")
        resolved.append(TensorSpec(spec.name, tuple(shape), spec.dtype))
    return resolved


def _dym_overrides(args: argparse.Namespace) -> dict[str, list[int]]:
    value = args.dym_shape or args.dym_dims
    if not value:
        return {}
    overrides = {}
    for item in filter(None, value.split(";")):
        name, _, dims = item.rpartition(":")
        overrides[name] = [int(d) for d in dims.split(",")]
    return overrides


def make_result_dir(args: argparse.Namespace) -> str | None:
    if args.output is None:
        return None
    result_dir = os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))
    if legacy_layout():
        os.mkdir(result_dir)
    elif not os.path.exists(result_dir):
        os.makedirs(result_dir, 0o755)
    log("INFO", f"output path:{result_dir}")
    return result_dir


def plan_run(args: argparse.Namespace, inputs: list[TensorSpec]) -> Plan:
    if args.input is None:
        files = tuple((PURE_INFER_FAKE_FILE,) for _ in inputs)
        return Plan([Batch(files)], 1, pure=True)
    files = input_file_lists(args.input.split(","), len(inputs))
    file_size = file_nbytes(files[0][0])
    per_batch = files_per_batch(inputs[0].nbytes, file_size)
    runcount = math.ceil(len(files[0]) / per_batch)
    log("INFO", f"get filesperbatch files0 size:{file_size} tensor0size:{inputs[0].nbytes} "
                f"filesperbatch:{per_batch} runcount:{runcount}")
    return Plan(plan_batches(files, per_batch), per_batch, pure=False)


def input_file_lists(items: list[str], n_inputs: int) -> list[list[str]]:
    """check_input_parameter + create_infileslist_from_inputs_list (io_operations.py)."""
    if os.path.isfile(items[0]):
        for index, path in enumerate(items):
            if not os.path.isfile(path):
                raise fatal(f"Invalid input args.--input:{items} input[{index}]:{path} {path} not exist")
        return split_file_list(items, n_inputs)
    if os.path.isdir(items[0]):
        if len(items) != n_inputs:
            raise fatal(f"Invalid args. args input dir num:{len(items)} not equal to model inputs num:{n_inputs}")
        for path in items:
            if not os.path.isdir(path):
                raise fatal(f"Invalid args. {path} of input args is not a real dir path")
        return [list_input_files(path) for path in items]
    raise fatal(f"Invalid args. {items[0]}  of --input is invalid")


def batch_arrays(batch: Batch, inputs: list[TensorSpec], args: argparse.Namespace, pure: bool) -> list[np.ndarray]:
    if pure:
        return [pure_data(spec, args.pure_data_type) for spec in inputs]
    if args.run_mode == "files" and any(f.endswith((".npy", ".NPY")) for files in batch.files for f in files):
        raise RuntimeError(f"not support npy file:{batch.files[0][0]}")
    return [batch_array(files, batch.padding, spec.dtype, spec.shape) for files, spec in zip(batch.files, inputs)]


def pure_data(spec: TensorSpec, kind: str) -> np.ndarray:
    """Zeros, or random bytes 0-255 (reinterpreted in the input's dtype, as ais_bench does)."""
    data = np.random.randint(0, 256, spec.nbytes, dtype=np.uint8) if kind == "random" else np.zeros(spec.nbytes, np.uint8)
    return data.view(spec.dtype).reshape(spec.shape)


def warm_up(model: FakeOmModel, args: argparse.Namespace, inputs: list[TensorSpec], plan: Plan) -> None:
    if args.run_mode == "files" and plan.pure:
        raise RuntimeError("not support pure infer")
    arrays = batch_arrays(plan.batches[0], inputs, args, plan.pure)
    for _ in range(args.warmup_count):
        model.execute(arrays)
    log("INFO", f"warm up {args.warmup_count} done")


def run_batches(
    model: FakeOmModel, args: argparse.Namespace, inputs: list[TensorSpec], plan: Plan,
    result_dir: str | None, timings: Timings,
) -> dict[int, dict[str, list[str]]]:
    filesinfo: dict[int, dict[str, list[str]]] = {}
    started = time.perf_counter()
    for index, batch in enumerate(plan.batches):
        h2d_start = time.perf_counter()
        arrays = batch_arrays(batch, inputs, args, plan.pure)
        timings.h2d_ms.append((time.perf_counter() - h2d_start) * 1000)
        outputs = execute_loop(model, arrays, args.loop, timings)
        d2h_start = time.perf_counter()
        outputs = [np.array(output) for output in outputs]
        timings.d2h_ms.append((time.perf_counter() - d2h_start) * 1000)
        if result_dir is not None:
            save_batch(outputs, batch, index, plan, args, result_dir, filesinfo)
    progress_bar(RUN_MODE_DESC[args.run_mode], len(plan.batches), time.perf_counter() - started)
    return filesinfo


def execute_loop(model: FakeOmModel, arrays: list[np.ndarray], loop: int, timings: Timings) -> list[np.ndarray]:
    """--loop executions of one batch, each one NPU_compute_time sample; the C++ backend
    reports progress with "\\r" when looping (ModelInferenceProcessor.cpp)."""
    for i in range(loop):
        start = time.perf_counter()
        outputs = model.execute(arrays)
        timings.npu_compute_ms.append((time.perf_counter() - start) * 1000)
        if loop > 1:
            sys.stdout.write(f"\rloop inference exec: ({i + 1}/{loop})")
            sys.stdout.flush()
    if loop > 1:
        print(flush=True)
    return outputs


def save_batch(
    outputs: list[np.ndarray], batch: Batch, index: int, plan: Plan, args: argparse.Namespace,
    result_dir: str, filesinfo: dict[int, dict[str, list[str]]],
) -> None:
    """save_tensors_to_file: one file per real sample and output; padding samples are skipped."""
    for output_index, output in enumerate(outputs):
        pieces = split_outputs(output, plan.per_batch, args.output_batchsize_axis)
        for position, sample in enumerate(batch.samples):
            record = filesinfo.setdefault(index * plan.per_batch + position, {"infiles": list(sample), "outfiles": []})
            path = save_output(pieces[position], result_dir, output_stem(sample[0]), output_index, args.outfmt)
            record["outfiles"].append(str(path))


def progress_bar(desc: str, total: int, seconds: float) -> None:
    """tqdm's final state, as it ends up in a log."""
    rate = total / seconds if seconds > 0 else 0.0
    print(f"{desc}: 100%|{'█' * 20}| {total}/{total} [00:00<00:00, {rate:.2f}it/s]", flush=True)


# ---------------------------------------------------------------------------------------------
# Summary (AB-2025 summary.py; AB-2022a frontend/summary.py)


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, f"percentile({PERCENTILE}%)": 0.0}
    return {
        "min": np.min(values), "max": np.max(values), "mean": np.mean(values), "median": np.median(values),
        f"percentile({PERCENTILE}%)": np.percentile(values, PERCENTILE),
    }


def stats_line(name: str, values: dict[str, float]) -> str:
    return (f"{name} (ms): min = {values['min']}, max = {values['max']}, mean = {values['mean']}, "
            f"median = {values['median']}, percentile({PERCENTILE}%) = {values[f'percentile({PERCENTILE}%)']}")


def report(
    args: argparse.Namespace, argv: list[str], result_dir: str | None,
    filesinfo: dict[int, dict[str, list[str]]], timings: Timings,
) -> None:
    npu, h2d, d2h = stats(timings.npu_compute_ms), stats(timings.h2d_ms), stats(timings.d2h_ms)
    throughput = 1000 * args.batchsize / npu["mean"] if npu["mean"] else 0
    legacy = legacy_layout()
    wording = "batchsize" if legacy else "batchsize.mean"  # changed between 2022-11 and 2023-04 (§6)
    show_latency = legacy or args.display_all_summary
    log("INFO", "-----------------Performance Summary------------------")
    if show_latency:
        log("INFO", stats_line("H2D_latency", h2d))
    log("INFO", stats_line("NPU_compute_time", npu))
    if show_latency:
        log("INFO", stats_line("D2H_latency", d2h))
    log("INFO", f"throughput 1000*{wording}({args.batchsize})/NPU_compute_time.mean({npu['mean']}): {throughput}")
    log("INFO", "------------------------------------------------------")
    if result_dir is not None:
        write_summary(result_dir, argv, filesinfo, timings, (npu, h2d, d2h), throughput, legacy)


def write_summary(
    result_dir: str, argv: list[str], filesinfo: dict, timings: Timings,
    summaries: tuple[dict, dict, dict], throughput: float, legacy: bool,
) -> None:
    npu, h2d, d2h = summaries
    info: dict = {"filesinfo": filesinfo, "args": argv}
    if legacy:  # `<dir>/sumary.json`, stats without counts (§2.5)
        info.update(NPU_compute_time=npu, H2D_latency=h2d, D2H_latency=d2h, throughput=throughput)
        path = os.path.join(result_dir, "sumary.json")
    else:  # `<dir>_summary.json` beside the dir
        info.update(
            NPU_compute_time={**npu, "count": len(timings.npu_compute_ms)},
            H2D_latency={**h2d, "count": len(timings.h2d_ms)},
            D2H_latency={**d2h, "count": len(timings.d2h_ms)},
            npu_compute_time_list=timings.npu_compute_ms,
            throughput=throughput,
            pid=os.getpid(),
        )
        path = result_dir + "_summary.json"
    Path(path).write_text(json.dumps(info), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
