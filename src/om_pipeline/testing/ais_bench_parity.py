"""The fake ais_bench against the real one: a corpus of command lines, each run through the real
ais_bench (its public source, the compiled `aclruntime` replaced by a stub) and through the fake,
reduced to comparable answers.

An answer says whether the tool ACCEPTED the command line, i.e. got as far as the first call
that needs an NPU (the stub raises ReachedDevice there; the fake's model execution does the
same), or else how it refused: exit status, argparse's message or the exception's last line,
and the `[ERROR]` lines it logged. Paths are written relative to the case's directory ("{dir}").

The real tool runs in a subprocess (`python -m om_pipeline.testing.ais_bench_parity TOOL_DIR
JOBS ANSWERS`) that imports it once and forks per command line, so each starts from a fresh
module state. Nothing of upstream is copied here: the stub stands in for the compiled module.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence
from unittest import mock

UPSTREAM_REPO = "Yanguan619/aclruntime"
UPSTREAM_COMMIT = "8da7f6455bb122ca38b50e625fb7751c7e190ed1"  # 2025-12-18, the last argparse generation
TOOL_SUBDIR = "ais-bench_workload/tool/ais_bench"
PROG = "__main__.py"  # argparse's prog under `python -m ais_bench`
REACHED_DEVICE_STATUS = 77  # the forked child's exit status when it reached the stub's device


class ReachedDevice(BaseException):
    """Raised where the tool would first need the NPU; a BaseException so that neither tool's
    `except Exception` takes it for a failure."""


@dataclass(frozen=True)
class Answer:
    accepted: bool
    exit: int  # 0 when accepted
    error: str = ""  # argparse's message, or the last line of the traceback without module path
    errors: tuple[str, ...] = ()  # the [ERROR] lines logged

    @classmethod
    def from_dict(cls, data: dict) -> "Answer":
        return cls(data["accepted"], data["exit"], data["error"], tuple(data["errors"]))


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # "{dir}" is the case's directory, also the working directory
    tweak: Callable[[Path], None] | None = None  # changes to the standard case directory


def find_tool_dir(source: str | Path) -> Path:
    """The directory holding the `ais_bench` package: `source` itself or its TOOL_SUBDIR."""
    for candidate in (Path(source), Path(source) / TOOL_SUBDIR):
        if (candidate / "ais_bench" / "infer" / "utils.py").is_file():
            if "argparse" not in (candidate / "ais_bench" / "infer" / "utils.py").read_text(encoding="utf-8"):
                raise ValueError(f"{candidate} is not the argparse generation of ais_bench (typer came later)")
            return candidate
    raise ValueError(f"no ais_bench/infer/utils.py in {source} or {Path(source) / TOOL_SUBDIR}")


# ---------------------------------------------------------------------------------------------
# The standard case directory: a batch-4 fake .om of the tiny model, two one-sample inputs


TINY_META = {
    "soc_version": "Ascend310P3", "framework": "5", "precision_mode": "force_fp16", "argv": [],
    "inputs": [{"name": "x", "shape": [4, 3, 4, 4], "dtype": "float32"}],
    "outputs": [{"name": "y", "shape": [4, 2, 4, 4], "dtype": "float32"}, {"name": "m", "shape": [4, 2], "dtype": "float32"}],
}
SAMPLE_BYTES = 3 * 4 * 4 * 4


def write_om(path: Path, meta: dict, onnx_bytes: bytes) -> Path:
    from .fake_om import write_fake_om

    path.parent.mkdir(parents=True, exist_ok=True)
    write_fake_om(path, onnx_bytes, meta)
    path.chmod(0o640)
    return path


def tiny_onnx_bytes() -> bytes:
    from .tiny_model import write_tiny_onnx

    with tempfile.TemporaryDirectory() as tmp:
        return write_tiny_onnx(Path(tmp) / "tiny.onnx", batch=4).read_bytes()


def private_dir(path: Path) -> Path:
    """A directory as ais_bench wants its --input and --output: no group-write, no "other" bits."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o750)
    return path


def private_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o640)
    return path


def make_case_dir(directory: Path, onnx_bytes: bytes) -> None:
    private_dir(directory)
    write_om(directory / "model.om", TINY_META, onnx_bytes)
    private_file(directory / "model.onnx", onnx_bytes)
    data = private_dir(directory / "data")
    for n in range(2):
        private_file(data / f"img{n}.bin", bytes(SAMPLE_BYTES))
    private_dir(directory / "out")


def _chmod(relative: str, mode: int) -> Callable[[Path], None]:
    return lambda d: (d / relative).chmod(mode)


def _mkdir(relative: str, mode: int = 0o750) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        (d / relative).mkdir(parents=True)
        (d / relative).chmod(mode)
    return make


def _file(relative: str, data: bytes = b"", mode: int = 0o640) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        (d / relative).write_bytes(data)
        (d / relative).chmod(mode)
    return make


def _symlink(relative: str, target: str) -> Callable[[Path], None]:
    return lambda d: (d / relative).symlink_to(d / target)


def _copy_model(relative: str, mode: int = 0o640) -> Callable[[Path], None]:
    return _then(lambda d: (d / relative).write_bytes((d / "model.om").read_bytes()), _chmod(relative, mode))


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        for step in steps:
            step(d)
    return run


M, D, O = "{dir}/model.om", "{dir}/data", "{dir}/out"  # noqa: E741 - model, data, output

CORPUS: tuple[Case, ...] = (
    # Accepted: the shapes our recipes use, and legal variations.
    Case("pure_inference", ("--model", M)),
    Case("recipe_infer", ("--model", M, "--input", D, "--output", O, "--outfmt", "TXT")),
    Case("recipe_perf", (f"--model={M}", "--loop=20", "--batchsize=4")),
    Case("recipe_infer_dirname", ("--model", M, "--input", D, "--output", O, "--output_dirname", "result_bs4", "--outfmt", "BIN")),
    Case("recipe_infer_batchsize", ("--model", M, "--input", D, "--output", O, "--batchsize", "4")),
    Case("short_flags", ("-m", M, "-i", D, "-o", O, "-l", "2", "-d", "0")),
    Case("unique_prefixes", ("--mod", M, "--batch", "4", "--warm", "0")),
    Case("bool_spellings", ("--model", M, "--debug", "0", "--display_all_summary", "TRUE", "--profiler_rename", "n")),
    Case("input_file_list", ("--model", M, "--input", f"{D}/img0.bin,{D}/img1.bin", "--output", O)),
    Case("pure_random_no_warmup", ("--model", M, "--pure_data_type", "random", "--warmup_count", "0")),
    Case("limits_at_maximum", ("--model", M, "--loop", "100000", "--batchsize", "4096", "--warmup_count", "10000",
                               "--threads", "64", "--output_batchsize_axis", "8", "--device", "255")),
    Case("threads_without_pipeline", ("--model", M, "--threads", "2")),
    Case("result_dir_reused", ("--model", M, "--output", O, "--output_dirname", "again"), _mkdir("out/again")),
    Case("output_made_on_the_way", ("--model", M, "--output", "{dir}/new/deeper")),
    Case("energy_npu_id", ("--model", M, "--energy_consumption", "0", "--npu_id", "3")),
    # Refused by argparse (exit 2): names.
    Case("model_missing_option", ("--input", D)),
    Case("old_alias_om", ("--om", M)),
    Case("old_alias_r", ("--model", M, "-r", "5")),
    Case("ait_spelling_dym_shape", ("--model", M, "--dym-shape", "x:4,3,4,4")),
    Case("ait_spelling_warmup_count", ("--model", M, "--warmup-count", "5")),
    Case("unknown_bs", ("--model", M, "--bs", "4")),
    Case("ambiguous_prefix", ("--model", M, "--out", O)),
    # Refused by argparse: numbers.
    Case("loop_zero", ("--model", M, "--loop", "0")),
    Case("loop_over_max", ("--model", M, "--loop", "100001")),
    Case("loop_negative", ("--model", M, "--loop", "-1")),
    Case("loop_float", ("--model", M, "--loop", "1.5")),
    Case("loop_plus_sign", ("--model", M, "--loop=+3")),
    Case("batchsize_zero", ("--model", M, "--batchsize", "0")),
    Case("batchsize_word", ("--model", M, "--batchsize", "four")),
    Case("batchsize_over_cpp_int", ("--model", M, "--batchsize", "99999999999")),
    Case("dymbatch_zero", ("--model", M, "--dymBatch", "0")),
    Case("threads_zero", ("--model", M, "--threads", "0")),
    Case("device_over_255", ("--model", M, "--device", "256")),
    Case("device_word", ("--model", M, "--device", "npu0")),
    Case("device_list_out_of_range", ("--model", M, "--device", "0,256")),
    Case("npu_id_word", ("--model", M, "--npu_id", "x")),
    # Refused by argparse: choices, booleans, strings.
    Case("outfmt_lowercase", ("--model", M, "--outfmt", "bin")),
    Case("debug_maybe", ("--model", M, "--debug", "maybe")),
    Case("run_mode_unknown", ("--model", M, "--run_mode", "stream")),
    Case("pure_data_type_unknown", ("--model", M, "--pure_data_type", "ones")),
    Case("dymhw_space", ("--model", M, "--dymHW", "4 4")),
    Case("output_size_float", ("--model", M, "--outputSize", "1.5")),
    Case("dymshape_range_bad", ("--model", M, "--dymShape_range", "x:1~")),
    # Refused by argparse: paths.
    Case("model_not_om", ("--model", "{dir}/model.onnx")),
    Case("model_absent", ("--model", "{dir}/absent.om")),
    Case("model_is_directory", ("--model", D)),
    Case("model_symlink", ("--model", "{dir}/link.om"), _symlink("link.om", "model.om")),
    Case("model_path_with_space", ("--model", "{dir}/my model.om"), _copy_model("my model.om")),
    Case("model_group_writable", ("--model", "{dir}/shared.om"), _copy_model("shared.om", 0o660)),
    Case("model_relative", ("--model", "model.om", "--input", "data", "--output", "out")),
    Case("output_too_open", ("--model", M, "--output", O), _chmod("out", 0o755)),
    Case("output_is_a_file", ("--model", M, "--output", f"{D}/img0.bin")),
    Case("output_dirname_checked_against_cwd", ("--model", M, "--output", O, "--output_dirname", "result"),
         _mkdir("result", 0o755)),
    # An absolute --output_dirname lives under the case's directory, never the machine's /tmp: the
    # parser checks a path that exists before the tool refuses it for being absolute.
    Case("output_dirname_absolute_too_open", ("--model", M, "--output", O, "--output_dirname", "{dir}/result"),
         _mkdir("result", 0o755)),
    Case("input_absent", ("--model", M, "--input", "{dir}/nowhere")),
    Case("input_too_open", ("--model", M, "--input", D), _chmod("data", 0o777)),
    Case("input_list_with_absent_file", ("--model", M, "--input", f"{D}/img0.bin,{D}/img9.bin")),
    Case("acl_json_absent", ("--model", M, "--acl_json_path", "{dir}/acl.json")),
    Case("aipp_config_wrong_suffix", ("--model", M, "--aipp_config", "{dir}/aipp.cfg"), _file("aipp.cfg")),
    # Refused by the tool's own checks after parsing (exit 1, a traceback).
    Case("batchsize_over_4096", ("--model", M, "--batchsize", "4097")),
    Case("warmup_over_max", ("--model", M, "--warmup_count", "10001")),
    Case("threads_over_64", ("--model", M, "--threads", "65")),
    Case("batchsize_axis_over_8", ("--model", M, "--output_batchsize_axis", "9")),
    Case("dymbatch_over_4096", ("--model", M, "--dymBatch", "4097")),
    Case("output_dirname_alone", ("--model", M, "--output_dirname", "result")),
    Case("output_dirname_absolute", ("--model", M, "--output", O, "--output_dirname", "{dir}/result")),
    Case("profiler_and_dump", ("--model", M, "--output", O, "--profiler", "1", "--dump", "1")),
    Case("dump_without_output", ("--model", M, "--dump", "true")),
    Case("acl_json_not_json", ("--model", M, "--acl_json_path", "{dir}/acl.json"), _file("acl.json", b"{not json")),
    Case("dymdims_bad_format", ("--model", M, "--dymDims", "x:4,a")),
    Case("dymhw_three_numbers", ("--model", M, "--dymHW", "4,4,4")),
    Case("result_dir_too_open", ("--model", M, "--output", O, "--output_dirname", "again"), _mkdir("out/again", 0o770)),
    Case("input_dirs_more_than_model_inputs", ("--model", M, "--input", f"{D},{D}")),
    Case("input_dir_with_illegal_name", ("--model", M, "--input", D), _file("data/notes v1.txt")),
    Case("input_dir_with_open_file", ("--model", M, "--input", D), _file("data/img2.bin", bytes(SAMPLE_BYTES), 0o666)),
    Case("input_dir_without_inputs", ("--model", M, "--input", "{dir}/empty"), _mkdir("empty")),
    Case("input_file_of_wrong_size", ("--model", M, "--input", D), _file("data/img0.bin", bytes(100))),
)


def build_cases(cases: Sequence[Case], root: Path, onnx_bytes: bytes) -> list[tuple[list[str], Path]]:
    """Each case's directory under `root` and its argv: [(argv, directory)]."""
    jobs = []
    for case in cases:
        directory = root / case.name
        make_case_dir(directory, onnx_bytes)
        if case.tweak:
            case.tweak(directory)
        jobs.append(([arg.replace("{dir}", str(directory)) for arg in case.argv], directory))
    return jobs


# ---------------------------------------------------------------------------------------------
# Answers


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*)(:.*)?$")


def answer(status: int, reached: bool, stdout: str, stderr: str, directory: Path) -> Answer:
    def relative(text: str) -> str:
        return text.replace(str(directory), "{dir}").rstrip()

    errors = tuple(relative(line) for line in stdout.splitlines() if line.startswith("[ERROR]"))
    if reached:
        return Answer(True, 0, "", errors)
    lines = [line for line in stderr.splitlines() if line.strip()]
    error = ""
    if status == 2:
        error = next((line.split(": error: ", 1)[1] for line in reversed(lines) if ": error: " in line), "")
    elif lines:
        match = _EXCEPTION_LINE.match(lines[-1])
        error = match.group(1) + (match.group(2) or "") if match else lines[-1]
    return Answer(False, status, relative(error), errors)


def run_fake(jobs: Sequence[tuple[list[str], Path]]) -> list[Answer]:
    """The fake in this process, stopped at its first model execution."""
    from . import fake_ais_bench
    from .fake_runtime import FakeOmModel

    def reach(*_args, **_kwargs):
        raise ReachedDevice()

    answers = []
    cwd = os.getcwd()
    for argv, directory in jobs:
        out, err = io.StringIO(), io.StringIO()
        reached, status = False, 0
        try:
            os.chdir(directory)
            with mock.patch.object(FakeOmModel, "execute", reach), mock.patch.object(sys, "argv", [PROG, *argv]), \
                    contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = fake_ais_bench.main(argv)
        except ReachedDevice:
            reached = True
        finally:
            os.chdir(cwd)
        answers.append(answer(status, reached, out.getvalue(), err.getvalue(), directory))
    return answers


def run_upstream(tool_dir: Path, jobs: Sequence[tuple[list[str], Path]], timeout: float = 600) -> list[Answer]:
    """The real ais_bench in tool_dir, in a subprocess (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        request, reply = Path(tmp) / "jobs.json", Path(tmp) / "answers.json"
        request.write_text(json.dumps([[argv, str(directory)] for argv, directory in jobs]), encoding="utf-8")
        subprocess.run([sys.executable, "-m", __name__, str(tool_dir), str(request), str(reply)], check=True,
                       timeout=timeout)
        return [Answer.from_dict(item) for item in json.loads(reply.read_text(encoding="utf-8"))]


# ---------------------------------------------------------------------------------------------
# Inside that subprocess: the stubs, and one fork per command line


def _stub_aclruntime():
    """What ais_bench's Python side calls of the compiled module before the first inference:
    the model description (read from the fake .om), static-batch setup, no AIPP input. Any
    other attribute is the device."""
    import types

    from .fake_om import read_fake_om
    import numpy as np

    module = types.ModuleType("aclruntime")

    class SessionOptions:
        def __init__(self):
            self.acl_json_path, self.log_level, self.loop = None, 2, 1

    def desc(entry: dict):
        shape = list(entry["shape"])
        size = int(np.prod(shape)) * np.dtype(entry["dtype"]).itemsize if all(d >= 0 for d in shape) else 0
        return types.SimpleNamespace(name=entry["name"], datatype=entry["dtype"], format=0, shape=shape,
                                     size=size, realsize=size)

    class InferenceSession:
        def __init__(self, model_path, device_id, options):
            self._meta, _ = read_fake_om(model_path)
            self._options = options

        def get_inputs(self):
            return [desc(e) for e in self._meta["inputs"]]

        def get_outputs(self):
            return [desc(e) for e in self._meta["outputs"]]

        def options(self):
            return self._options

        def set_staticbatch(self):
            pass

        def get_dym_aipp_input_exist(self):
            return 0

        def __getattr__(self, name):
            raise ReachedDevice(name)

    module.session_options = SessionOptions
    module.InferenceSession = InferenceSession

    def device(name):
        raise ReachedDevice(name)

    module.__getattr__ = device
    return module


def _stub_environment() -> None:
    """aclruntime 0.0.2 as pkg_resources sees it (else ais_bench switches to --run_mode tensor);
    tqdm only if it is not installed (it draws progress bars after the first inference)."""
    import types

    sys.modules["aclruntime"] = _stub_aclruntime()
    resources = types.ModuleType("pkg_resources")

    def get_distribution(name):
        if name != "aclruntime":
            raise LookupError(name)
        return types.SimpleNamespace(version="0.0.2")

    resources.get_distribution = get_distribution
    sys.modules["pkg_resources"] = resources
    try:
        import tqdm  # noqa: F401
    except ImportError:
        progress = types.ModuleType("tqdm")
        progress.tqdm = lambda iterable=None, **_kwargs: iterable
        sys.modules["tqdm"] = progress


def _run_forked(argv: list[str], directory: str) -> dict:
    import runpy

    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: run `python -m ais_bench argv` from `directory`
            status = 1
            try:
                os.chdir(directory)
                with open(out_path, "wb") as out, open(err_path, "wb") as err:
                    os.dup2(out.fileno(), 1)
                    os.dup2(err.fileno(), 2)
                sys.argv = [PROG, *argv]
                try:
                    runpy.run_module("ais_bench", run_name="__main__", alter_sys=True)
                    status = 0
                except ReachedDevice:
                    status = REACHED_DEVICE_STATUS
                except SystemExit as exc:
                    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
                    traceback.print_exc()
                    status = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(wait_status)
        reached = status == REACHED_DEVICE_STATUS
        read = lambda p: p.read_text(encoding="utf-8", errors="replace") if p.exists() else ""  # noqa: E731
        return asdict(answer(0 if reached else status, reached, read(out_path), read(err_path), Path(directory)))


def _upstream_main(tool_dir: str, request: str, reply: str) -> None:
    _stub_environment()
    sys.path.insert(0, tool_dir)
    import ais_bench.infer.infer_process  # noqa: F401 - imported once, before the forks

    jobs = json.loads(Path(request).read_text(encoding="utf-8"))
    Path(reply).write_text(json.dumps([_run_forked(argv, directory) for argv, directory in jobs]), encoding="utf-8")


if __name__ == "__main__":
    _upstream_main(*sys.argv[1:4])
