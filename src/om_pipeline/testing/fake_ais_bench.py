"""A fake `python -m ais_bench` that behaves as ascend-tools.md §2 describes (AB-2025
`ais_bench/infer/*.py`): same arguments, same batching, same printed lines, same result files,
same exit codes. It runs the ONNX inside a fake `.om` (fake_atc) with ONNX Runtime, so its
outputs are real numbers and its times real (CPU) times.

Its arguments follow the real tool's rules option by option (fake_ais_bench_args,
docs/ais_bench-args.md): what the real parser and its checks before the device refuse, this
refuses, with the same messages and exit status.

With `om_pipeline/testing/fake_python` on PYTHONPATH, `python -m ais_bench ...` runs this.

Environment knob:
    OMPIPE_FAKE_AIS_LAYOUT=2022a   the first generation's output (`ais_infer.py`, AB-2022a):
                                   summary `sumary.json` INSIDE the result dir, throughput line
                                   `batchsize(`, H2D/D2H lines always printed, result dir made
                                   with os.mkdir (its parent must exist, it must not). Arguments
                                   are still checked by AB-2025's rules.
    OMPIPE_FAKE_NPU_COUNT=<n>      the host has n devices (as the fake npu-smi lists them):
                                   `--device` n or above fails to open, as ACL's
                                   `open device <id> failed, runtime result = 507033.`
                                   Unset: every device id opens.
    OMPIPE_FAKE_NPU_FLAKY=<dir>    a device that fails to open once: the first run in each working
                                   directory fails as above (507033), later ones open (a marker per
                                   directory under <dir>): retry tests.
Several devices (`--device 0,1`, docs/scale-out.md of the shared notes, infer_process.py
multidevice_run): one run per device on a copy of the arguments, each writing
`<output>/<dirname>/device<id>_<i>/` and `device<id>_<i>_summary.json`, every device on the full
input unless `--divide_input 1` gives each a `list_share` part (the first `len % n` parts one file
longer); then `multidevice run end qsize:.. result:..`, one `i:<i> device_<id> throughput:..
start_time:.. end_time:..` line per device and `[INFO] summary throughput:<sum>`. The devices run
one after another here (the real tool starts one process per device behind a barrier).

Not emulated (they fail with a RuntimeError saying so): the auto dym modes,
--dymShape_range without --dymShape, --pipeline, --perf/--backend. --profiler/--dump/
--acl_json_path/--energy_consumption/--outputSize/--aipp_config pass the same checks as in the
real tool and then produce nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..batching import (
    INPUT_SUFFIXES,
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
from .fake_ais_bench_args import (
    DYM_INFO_PATTERN,
    READ,
    PathStat,
    build_parser,
    check_dym_hw_list,
    check_dym_str_format,
    check_int_args_max_limit,
    check_path_legality,
    log,
    makedirs_safe,
)
from .fake_om import read_fake_om_meta
from .fake_runtime import FakeOmModel, TensorSpec

PURE_INFER_FAKE_FILE = "pure_infer_data"
PERCENTILE = 99
MAX_FILE_LOAD_COUNT = 100000  # files in one --input directory (common/utils.py)
RESULT_DIR_MODE = 0o750  # infer_process.py PERMISSION_DIR
RUN_MODE_DESC = {
    "array": "Inference array Processing",
    "files": "Inference files Processing",
    "tensor": "Inference tensor Processing",
    "full": "Inference Processing full",
}


def fatal(message: str) -> RuntimeError:
    """ais_bench's habit: log the reason, then raise a bare RuntimeError."""
    log("ERROR", message)
    return RuntimeError()


def legacy_layout() -> bool:
    return os.environ.get("OMPIPE_FAKE_AIS_LAYOUT") == "2022a"


def main(argv: Sequence[str]) -> int:
    """__main__.py: get_args, check_int_args_max_limit, infer_process; exit 2 for what argparse
    refuses, 1 (a traceback) for what the tool's own checks refuse."""
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse: usage on stderr, exit 2 (or 0 for --help)
        return int(exc.code or 0)
    try:
        check_int_args_max_limit(args)
        infer_process(args, [sys.argv[0], *argv])
    except BatchingError as exc:  # logged as ais_bench logs it, then its bare RuntimeError
        log("ERROR", exc.message)
        return crash(RuntimeError())
    except Exception:  # noqa: BLE001 - an uncaught exception is how ais_bench fails (§2.7)
        return crash(None)
    return 0


def crash(error: Exception | None) -> int:
    """The traceback Python prints for an uncaught exception: the current one, or `error`
    raised from it."""
    sys.stdout.flush()
    if error is None:
        traceback.print_exc()
    else:
        try:
            raise error from sys.exc_info()[1]
        except type(error):
            traceback.print_exc()
    return 1


# ---------------------------------------------------------------------------------------------
# The run (AB-2025 infer_process.py infer_process and main)


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
    args_rules(args)
    acl_json_base_check(args)
    refuse_what_is_not_emulated(args)
    if isinstance(args.device, list):
        multidevice_run(args, argv)
    else:
        run_on_device(args, argv)


def run_on_device(args: argparse.Namespace, argv: list[str], subdirectory: str | None = None) -> float:
    """infer_process.py main: one device's run; its throughput."""
    device = args.device
    log("INFO", "acl init success")
    open_device(device)
    log("INFO", "create new context")
    model = FakeOmModel(args.model)
    log("INFO", f"load model {args.model} success")
    log("INFO", "create model description success")
    inputs = resolved_inputs(model.inputs, args)
    if args.batchsize is None:
        args.batchsize = inputs[0].shape[0]
        log("INFO", f"try get model batchsize:{args.batchsize}")
    result_dir = make_result_dir(args, subdirectory)
    plan = plan_run(args, inputs)
    timings = Timings()
    warm_up(model, args, inputs, plan)
    filesinfo = run_batches(model, args, inputs, plan, result_dir, timings)
    throughput = report(args, argv, result_dir, filesinfo, timings)
    log("INFO", "unload model success, model Id is 1")
    log("INFO", "end to destroy context")
    log("INFO", f"end to reset device {device}")
    log("INFO", "end to finalize acl")
    return throughput


def multidevice_run(args: argparse.Namespace, argv: list[str]) -> None:
    """infer_process.py multidevice_run: the single-device run per device, then the totals."""
    devices = list(args.device)
    if args.output is not None and not args.output_dirname:  # one timestamped directory for all devices
        args.output_dirname = time.strftime("%Y_%m_%d-%H_%M_%S")
    inputs = divided_inputs(args, len(devices)) if args.divide_input else [args.input] * len(devices)
    results = []
    for index, (device, device_input) in enumerate(zip(devices, inputs)):
        device_args = argparse.Namespace(**{**vars(args), "device": device, "input": device_input})
        start = time.time()
        throughput = run_on_device(device_args, argv, f"device{device}_{index}")
        results.append((index, device, throughput, start, time.time()))
    log("INFO", f"multidevice run end qsize:{2 * len(devices)} result:0")
    for index, device, throughput, start, end in results:
        print(f"i:{index} device_{device} throughput:{throughput} start_time:{start} end_time:{end}", flush=True)
    log("INFO", f"summary throughput:{sum(r[2] for r in results)}")


def divided_inputs(args: argparse.Namespace, parts: int) -> list[str | None]:
    """seg_input_data_for_multi_process: each input's files (directories expanded, in ais_bench's
    order) cut into `parts` consecutive parts by list_share; part i of every input, comma-joined."""
    if args.input is None:
        return [None] * parts
    inputs = read_fake_om_meta(Path(args.model))["inputs"]  # the real tool opens a session on device 0 for the count
    per_input = input_file_lists(args.input.split(","), len(inputs))
    shares = [list_share(files, parts) for files in per_input]
    return [",".join(f for share in shares for f in share[i]) for i in range(parts)]


def list_share(items: list[str], parts: int) -> list[list[str]]:
    """common/utils.py list_share: `parts` consecutive parts, the first len % parts one longer."""
    size, extra = divmod(len(items), parts)
    bounds = [0]
    for index in range(parts):
        bounds.append(bounds[-1] + size + (index < extra))
    return [items[bounds[i]:bounds[i + 1]] for i in range(parts)]


def open_device(device: int) -> None:
    count = os.environ.get("OMPIPE_FAKE_NPU_COUNT")
    if (count and device >= int(count)) or fails_once():
        log("ERROR", f"open device {device} failed, runtime result = 507033.")
        raise RuntimeError(f"open device {device} failed, runtime result = 507033")
    log("INFO", f"open device {device} success")


def fails_once() -> bool:
    """OMPIPE_FAKE_NPU_FLAKY: True the first time this working directory asks."""
    directory = os.environ.get("OMPIPE_FAKE_NPU_FLAKY")
    if not directory:
        return False
    marker = Path(directory) / hashlib.sha256(os.getcwd().encode()).hexdigest()
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


def args_rules(args: argparse.Namespace) -> None:
    """infer_process.py args_rules, in its order (the first broken rule is the one reported)."""
    if args.profiler and args.dump:
        log("ERROR", "parameter --profiler cannot be true at the same time as parameter --dump, please check them!\n")
        raise RuntimeError("error bad parameters --profiler and --dump")
    if args.output_dirname and args.output_dirname[0] == "/":
        raise ValueError("--output_dirname do not support abs path!")
    if (args.profiler or args.dump) and args.output is None:
        log("ERROR", "when dump or profiler, miss output path, please check them!")
        raise RuntimeError("miss output parameter!")
    if args.profiler and args.warmup_count != 0 and args.input is not None:
        log("INFO", "profiler mode with input change warmup_count to 0")
        args.warmup_count = 0
    if args.output is None and args.output_dirname is not None:
        log("ERROR", "parameter --output_dirname cann't be used alone. "
                     "Please use it together with the parameter --output!\n")
        raise RuntimeError("error bad parameters --output_dirname")
    if args.threads > 1 and not args.pipeline:
        log("INFO", "need to set --pipeline when setting threads number to be more than one.")
        args.threads = 1


def acl_json_base_check(args: argparse.Namespace) -> None:
    """infer_process.py acl_json_base_check: the file must hold JSON; it may switch the profiler."""
    if args.acl_json_path is None:
        return
    try:
        check_path_legality(args.acl_json_path, perm=READ)  # ms_open's checks are a subset of these
        content = json.loads(Path(args.acl_json_path).read_text(encoding="utf-8"))
    except Exception as err:  # noqa: BLE001 - upstream turns any failure into this one
        log("ERROR", f"can't read acl_json_path:{args.acl_json_path}")
        raise Exception from err  # noqa: TRY002 - upstream's bare Exception, as its traceback shows
    if isinstance(content.get("profiler"), dict) and content["profiler"].get("switch") == "on":
        args.profiler = True
    if content.get("dump") is not None:
        args.profiler = False


def refuse_what_is_not_emulated(args: argparse.Namespace) -> None:
    unsupported = {
        "--perf/--backend": args.perf,
        "--dymShape_range": args.dym_shape_range is not None and args.dym_shape is None,
        "--auto_set_dymshape_mode/--auto_set_dymdims_mode": args.auto_set_dymshape_mode or args.auto_set_dymdims_mode,
        "--pipeline": args.pipeline,
    }
    for what, used in unsupported.items():
        if used:
            raise RuntimeError(f"ompipe fake ais_bench does not emulate {what}")


def resolved_inputs(specs: list[TensorSpec], args: argparse.Namespace) -> list[TensorSpec]:
    """The input shapes of this run: dynamic dims filled from --dymBatch/--dymHW/--dymDims/
    --dymShape; a dynamic dim left over is an error, as with the real tool. Their formats are
    checked first, as set_session_options checks them before it calls the device."""
    check_dym_formats(args)
    overrides = _dym_overrides(args)
    resolved = []
    for index, spec in enumerate(specs):
        shape = list(overrides.get(spec.name, spec.shape))
        if args.dym_batch and shape and shape[0] == -1:
            shape[0] = args.dym_batch
        if args.dym_hw and len(shape) == 4 and shape[2:] == [-1, -1]:
            shape[2:] = [int(v) for v in args.dym_hw.split(",")]
        if any(dim < 0 for dim in shape):
            raise RuntimeError("dynamic batch om model detected, but dymbatch, dymdims or dymshape not set!")
        if spec.is_static and tuple(shape) != spec.shape:
            raise fatal(f"input {index} {spec.name}: shape {shape} does not fit the static model shape {list(spec.shape)}")
        resolved.append(TensorSpec(spec.name, tuple(shape), spec.dtype))
    return resolved


def check_dym_formats(args: argparse.Namespace) -> None:
    """set_session_options: the first of --dymBatch/--dymHW/--dymDims/--dymShape given is the
    one used, and its string must be well formed (a ValueError)."""
    if args.dym_batch:
        return
    if args.dym_hw is not None:
        check_dym_hw_list(args.dym_hw.split(","))
    elif args.dym_dims is not None or args.dym_shape is not None:
        check_dym_str_format(args.dym_dims if args.dym_dims is not None else args.dym_shape, DYM_INFO_PATTERN)


def _dym_overrides(args: argparse.Namespace) -> dict[str, list[int]]:
    value = args.dym_shape or args.dym_dims
    if not value:
        return {}
    overrides = {}
    for item in filter(None, value.split(";")):
        name, _, dims = item.rpartition(":")
        overrides[name] = [int(d) for d in dims.split(",")]
    return overrides


def make_result_dir(args: argparse.Namespace, subdirectory: str | None = None) -> str | None:
    """`<output>/<dirname or timestamp>[/device<id>_<i>]`."""
    if args.output is None:
        return None
    result_dir = os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"), *filter(None, [subdirectory]))
    if legacy_layout():
        os.mkdir(result_dir)
    elif not os.path.exists(result_dir):
        makedirs_safe(result_dir, RESULT_DIR_MODE)
    else:  # reused: check_output_dir_legality, a readable directory
        check_path_legality(result_dir, READ, is_file=False)
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
        return [checked_input_files(path) for path in items]
    raise fatal(f"Invalid args. {items[0]}  of --input is invalid")


def checked_input_files(directory: str) -> list[str]:
    """get_fileslist_from_dir: every entry of an --input directory, input file or not, must
    pass the path checks; then the input files in ais_bench's order."""
    found = 0
    for name in os.listdir(directory):
        if found > MAX_FILE_LOAD_COUNT:
            raise OverflowError(f"file count under directory: {directory} is over {MAX_FILE_LOAD_COUNT}!")
        path = os.path.join(directory, name)
        entry = PathStat(path)
        if not entry.is_basically_legal(READ):
            raise RuntimeError(f"input data:{path} is illegal")
        found += not entry.is_dir and name.endswith(INPUT_SUFFIXES)
    return list_input_files(directory)


def batch_arrays(batch: Batch, inputs: list[TensorSpec], args: argparse.Namespace, pure: bool) -> list[np.ndarray]:
    if pure:
        return [pure_data(spec, args.pure_data_type) for spec in inputs]
    return [batch_array(files, batch.padding, spec.dtype, spec.shape) for files, spec in zip(batch.files, inputs)]


def pure_data(spec: TensorSpec, kind: str) -> np.ndarray:
    """Zeros, or random bytes 0-255 (reinterpreted in the input's dtype, as ais_bench does)."""
    data = np.random.randint(0, 256, spec.nbytes, dtype=np.uint8) if kind == "random" else np.zeros(spec.nbytes, np.uint8)
    return data.view(spec.dtype).reshape(spec.shape)


def check_files_mode(args: argparse.Namespace, plan: Plan) -> None:
    """--run_mode files hands file names to the C++ side (convert_real_files), after the
    warm-up: it takes neither generated data nor .npy files."""
    if args.run_mode != "files":
        return
    if plan.pure:
        raise RuntimeError("not support pure infer")
    for batch in plan.batches:
        npy = [f for files in batch.files for f in files if f.endswith((".npy", ".NPY"))]
        if npy:
            raise RuntimeError(f"not support npy file:{npy[0]}")


def warm_up(model: FakeOmModel, args: argparse.Namespace, inputs: list[TensorSpec], plan: Plan) -> None:
    arrays = batch_arrays(plan.batches[0], inputs, args, plan.pure)
    for _ in range(args.warmup_count):
        model.execute(arrays)
    log("INFO", f"warm up {args.warmup_count} done")


def run_batches(
    model: FakeOmModel, args: argparse.Namespace, inputs: list[TensorSpec], plan: Plan,
    result_dir: str | None, timings: Timings,
) -> dict[int, dict[str, list[str]]]:
    check_files_mode(args, plan)
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
) -> float:
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
    return throughput


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
