"""The fake ais_bench's argument rules: the real tool's, option by option, in our own code.

Source: the last argparse generation of ais_bench, upstream commit `8da7f645` (2025-12-18) as
kept in the GitHub fork `Yanguan619/aclruntime`, `ais-bench_workload/tool/ais_bench/ais_bench/`
(AB-2025 in ascend-tools.md): `infer/utils.py` (`get_args`, `check_int_args_max_limit`),
`infer/args_check.py` (the `type=` checkers), `infer/common/path_security_check.py`
(`FileStat`, `check_path_legality`, `makedirs_safe`). docs/ais_bench-args.md tables every rule
with the function it comes from; tests/testing/test_fake_ais_bench_parity.py checks them against
the real parser.

The checkers keep upstream's function names: argparse names a checker that fails with
anything but ArgumentTypeError in its message (`invalid check_positive_integer value: '...'`),
and the real tool fails that way for numbers over 2^31-1 (it builds `argparse.ArgumentError`
with one argument, a TypeError).
"""
from __future__ import annotations

import argparse
import os
import re
import stat

# args_check.py
OM_MODEL_MAX_SIZE = 10 * 1024 * 1024 * 1024
ACL_JSON_MAX_SIZE = 8 * 1024
AIPP_CONFIG_MAX_SIZE = 12.5 * 1024
CPP_INT_MAX_SIZE = 2147483647
INPUT_LIST_MAX_SIZE = 1024
INPUT_NAME_LENGTH_MAX = 256
LOOP_MAX_SIZE = 100000
DEVICE_COUNT_MAX = 256
NUMBER_LIST_MAX_LENGTH = 50000
DYM_INFO_PATTERN = r"[1-9][0-9]{0,4}(\,[1-9][0-9]{0,4}){0,6}"
DYM_RANGE_PATTERN = r"[1-9][0-9]{0,4}([\~\-][1-9][0-9]{0,4}){0,2}(\,[1-9][0-9]{0,4}([\~\-][1-9][0-9]{0,4}){0,2}){0,6}"
DYM_STRING_ILLEGAL = re.compile(r"[^_A-Za-z0-9,;:/.-]")
INPUT_NAME_ILLEGAL = re.compile(r"[^_A-Za-z0-9/.-]")
NUMBER_LIST_ILLEGAL = re.compile(r"[^0-9,]")

# utils.py IntArgsMax: checked after parsing, a ValueError (exit 1), not an argparse error.
INT_ARGS_MAX = (("threads", "--threads", 64), ("warmup_count", "--warmup_count", 10000),
                ("batchsize", "--batchsize", 4096), ("dym_batch", "--dymBatch", 4096),
                ("output_batchsize_axis", "--output_batchsize_axis", 8))

# path_security_check.py
PATH_ILLEGAL = re.compile(r"[^_A-Za-z0-9/.-]")
MAX_PATH_LENGTH = 4096
MAX_NAME_LENGTH = 255
MAX_SIZE_LIMITED_CONFIG_FILE = 10 * 1024 * 1024
MAX_SIZE_LIMITED_NORMAL_FILE = 4 * 1024 * 1024 * 1024
READ_FORBIDDEN_BITS = stat.S_IWGRP | stat.S_IWOTH
WRITE_FORBIDDEN_BITS = stat.S_IWGRP | stat.S_IWOTH | stat.S_IROTH | stat.S_IXOTH
READ, WRITE, NONE = "read", "write", "none"  # FilePermChoice
_PERMISSIONS = {  # perm: forbidden mode bits, os.access mode, role, most and least permission in the messages
    READ: (READ_FORBIDDEN_BITS, os.R_OK, "import", "0o755(rwxr-xr-x)", "0o400(r--------)"),
    WRITE: (WRITE_FORBIDDEN_BITS, os.W_OK, "export", "0o750(rwxr-x---)", "0o200(-w-------)"),
}
_SOLUTION_BASE = ('"gitee repo: Ascend/tools, path:tools/ais_bench-workload/tool/ais_bench/README.md, '
                  'chapter: FAQ/security_error/')
_SOLUTION_LEVEL = "\033[1;32mSOLUTION\033[0m"


def log(level: str, message: str) -> None:
    """ais_bench logs to stdout as `[LEVEL] message` (logging.basicConfig in common/logger.py)."""
    print(f"[{level}] {message}", flush=True)


def _solution(chapter: str) -> None:
    log(_SOLUTION_LEVEL, f"visit \033[1;32m {_SOLUTION_BASE}{chapter}\" \033[0m for detailed solution")


# ---------------------------------------------------------------------------------------------
# Path checks (path_security_check.py)


class OpenException(Exception):
    """Named as upstream's: a path string FileStat refuses escapes uncaught in some places."""


def _legal_path_string(path: str) -> bool:
    """is_legal_path_length + is_match_path_white_list (Linux)."""
    if len(path) > MAX_PATH_LENGTH:
        log("ERROR", f"file total path's length out of range ({MAX_PATH_LENGTH}), please check the file(or directory) path")
        _solution("path_length_overflow_error_log_solution")
        return False
    if any(len(name) > MAX_NAME_LENGTH for name in path.split("/")):
        log("ERROR", f"file base name length out of range ({MAX_NAME_LENGTH}), please check the file(or directory) path")
        _solution("path_length_overflow_error_log_solution")
        return False
    if PATH_ILLEGAL.search(path):
        log("ERROR", "path contains illegal char, legal chars include A-Z a-z 0-9 _ - / .")
        _solution("path_contain_illegal_char_error_log_solution")
        return False
    return True


class PathStat:
    """FileStat: the ABSOLUTE path (os.path.abspath, so relative to the cwd) must be legal."""

    def __init__(self, path: str):
        self.file = os.path.abspath(path)
        if not _legal_path_string(self.file):
            raise OpenException("create FileStat failed")
        self.exists = os.path.exists(self.file)
        self.stat = os.stat(self.file) if self.exists else None

    @property
    def is_link(self) -> bool:
        return os.path.islink(self.file) if self.stat else False

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.stat.st_mode) if self.stat else False

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stat.st_mode) if self.stat else False

    @property
    def permission(self) -> int:
        return stat.S_IMODE(self.stat.st_mode) if self.stat else 0o777

    @property
    def is_user_or_group_owner(self) -> bool:
        return self.stat.st_uid == os.geteuid() or self.stat.st_gid in os.getgroups()

    def is_basically_legal(self, perm: str = NONE) -> bool:
        """check_linux_permission."""
        if not self.exists and perm != WRITE:
            log("ERROR", f"path: {self.file} not exist, please check if file or dir is exist")
            return False
        if self.is_link:
            log("ERROR", f"path :{self.file} is a soft link, not supported, please import file(or directory) directly")
            _solution("soft_link_error_log_solution")
            return False
        if self.exists and not self.is_user_or_group_owner:
            log("ERROR", f"current user isn't path:{self.file}'s owner or ownergroup, "
                         "make sure current user belong to file(or directory)'s owner or ownergroup")
            _solution("owner_or_ownergroup_error_log_solution")
            return False
        if perm == READ or (perm == WRITE and self.exists):
            return self._permitted(perm)
        return True

    def _permitted(self, perm: str) -> bool:
        """Read: no group/other write (<= 0o755), readable. Write: no group write and no
        "other" bit (<= 0o750), writable."""
        forbidden, access, role, most, least = _PERMISSIONS[perm]
        if self.permission & forbidden:
            log("ERROR", f"The file {self.file} is group writable, or is others writable, as {role} file(or directory), "
                         f"permission should not be over {most}")
            _solution("path_permission_error_log_solution")
            return False
        if not os.access(os.path.realpath(self.file), access) or (perm == READ and not self.permission & stat.S_IRUSR):
            log("ERROR", f"Current user doesn't have {perm} permission to the file {self.file}, as {role} file(or directory), "
                         f"permission should be at least {least} ")
            _solution("path_permission_error_log_solution")
            return False
        return True

    def is_legal_file_size(self, max_size: float) -> bool:
        if not self.is_file:
            log("ERROR", f"path: {self.file} is not a file")
            return False
        if self.stat.st_size > max_size:
            log("ERROR", f"file_size:{self.stat.st_size} byte out of max limit {max_size} byte")
            return False
        return True

    def is_legal_file_type(self, file_types: list[str]) -> bool:
        if not self.is_file and self.exists:
            log("ERROR", f"path: {self.file} is not a file")
            return False
        if os.path.splitext(self.file)[1] in {f".{t}" for t in file_types}:
            return True
        log("ERROR", f"path:{self.file}, file type not in {file_types}")
        return False


def check_path_legality(path: str, perm: str = WRITE, max_size: float = MAX_SIZE_LIMITED_CONFIG_FILE,
                        is_file: bool = True, suffix: list[str] | None = None) -> None:
    """path_security_check.check_path_legality: a ValueError naming what is wrong."""
    try:
        file_stat = PathStat(path)
    except OpenException as err:
        raise ValueError("The path string is illegal. Please check.") from err
    if is_file != file_stat.is_file:
        raise ValueError(f"The path:{path} is not a file." if is_file else f"The path:{path} is not a directory.")
    if not file_stat.is_basically_legal(perm):
        raise ValueError(f"The path:{path} is illegal. Please check the error log for more detail.")
    if suffix and file_stat.is_file and not file_stat.is_legal_file_type(suffix):
        raise ValueError(f"The suffix of path:{path} not in {suffix}. Please check.")
    if file_stat.is_file and not file_stat.is_legal_file_size(max_size):
        raise ValueError(f"The file:{path} size is larger than {max_size}. Please check.")


def makedirs_safe(path: str, mode: int = 0o750) -> None:
    """Every missing directory on the way is made with `mode` (umask applies)."""
    current = ""
    for part in filter(None, os.path.abspath(path).split("/")):
        current += "/" + part
        if os.path.exists(current):
            continue
        try:
            os.mkdir(current, mode=mode)
        except Exception as err:  # noqa: BLE001 - upstream wraps any failure the same way
            raise RuntimeError(f"can not make dir: {current}") from err


# ---------------------------------------------------------------------------------------------
# The `type=` checkers (args_check.py), upstream's names


def str2bool(v: str) -> bool:
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected true, 1, false, 0 with case insensitive.")


def _digits(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value} contains special characters other than numbers.")
    try:
        return int(value)
    except ValueError as err:  # str.isdigit accepts digits int() does not ("²")
        raise argparse.ArgumentTypeError(f"Argument: {value} is not a legal integer.") from err


def check_positive_integer(value: str) -> int:
    number = _digits(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is an invalid positive int value")
    if number > CPP_INT_MAX_SIZE:
        raise TypeError(f"{value} is an invalid cpp int value")  # upstream's one-argument ArgumentError
    return number


def check_nonnegative_integer(value: str) -> int:
    number = _digits(value)
    if number > CPP_INT_MAX_SIZE:
        raise TypeError(f"{value} is an invalid cpp int value")
    return number


def check_loop_size(value: str) -> int:
    number = _digits(value)
    if number <= 0 or number > LOOP_MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is an invalid loop size value")
    return number


def check_batchsize_valid(value: str) -> int:
    return check_positive_integer(value)


def check_device_range_valid(value: str) -> int | list[int]:
    """One id 0-255, or a comma list of at most 256 of them (also --npu_id's checker)."""
    try:
        if "," in value:
            ids = [int(v) for v in value.split(",")]
            if len(ids) > DEVICE_COUNT_MAX:
                raise argparse.ArgumentTypeError(f"too much device id in --device, max permitted count is {DEVICE_COUNT_MAX}")
            for device in ids:
                if not 0 <= device <= 255:
                    raise argparse.ArgumentTypeError(f"{device} of device:{value} is invalid. valid value range is [0, 255]")
            return ids
        if not value.isdigit():
            raise argparse.ArgumentTypeError(f"{value} contains special characters other than numbers.")
        device = int(value)
        if device > 255:
            raise argparse.ArgumentTypeError(f"device:{device} is invalid. valid value range is [0, 255]")
        return device
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"Argument npu-id invalid input value: {value}. "
            "Please provide a valid integer or a comma-separated list of integers.") from err


def check_dym_string(value: str) -> str:
    if value and DYM_STRING_ILLEGAL.search(value):
        raise argparse.ArgumentTypeError(f'dym string "{value}" is not a legal string')
    return value


def check_dym_str_format(dym_str: str, pattern: str) -> None:
    """`name:dims;name:dims`, names of legal chars, dims matching `pattern` (a ValueError)."""
    items = dym_str.split(";")
    if len(items) > INPUT_LIST_MAX_SIZE:
        raise ValueError(f"dymshape range string's format is illegal! input count over {INPUT_LIST_MAX_SIZE}")
    for item in items:
        name_and_dims = item.split(":")
        if len(name_and_dims) != 2:
            raise ValueError("dymshape range string's format is illegal! input info format wrong!")
        name, dims = name_and_dims
        if len(name) > INPUT_NAME_LENGTH_MAX:
            raise ValueError(f"dymshape range string's format is illegal! input name len is output of [1, {INPUT_LIST_MAX_SIZE}]")
        if INPUT_NAME_ILLEGAL.search(name):
            raise ValueError("dymshape range string's format is illegal! input name contain illegal char!")
        if not re.fullmatch(pattern, dims):
            raise ValueError("dymshape range string's format is illegal! range string's format is illegal!")


def check_dym_hw_list(hw_list: list[str]) -> None:
    """interface_check.py: --dymHW is "h,w", each in [1, 2^31-1] (a ValueError)."""
    if len(hw_list) != 2:
        raise ValueError('int count not match, legal format of dymHW string is "int,int"')
    try:
        height, width = int(hw_list[0]), int(hw_list[1])
    except ValueError as err:
        raise ValueError('data type not match, legal format of dymHW string is "int,int"') from err
    if not 1 <= height <= CPP_INT_MAX_SIZE:
        raise ValueError(f"height of dym_hw string is out of range [1, {CPP_INT_MAX_SIZE}]")
    if not 1 <= width <= CPP_INT_MAX_SIZE:
        raise ValueError(f"width of dym_hw string is out of range [1, {CPP_INT_MAX_SIZE}]")


def check_dym_range_string(value: str) -> str:
    """A `.info` file that exists, else a range string."""
    if not value:
        return value
    if os.path.exists(value):
        try:
            check_path_legality(value, perm=READ, suffix=["info"])
        except ValueError as err:
            raise argparse.ArgumentTypeError("file contain dymShape range is not a legal path") from err
    else:
        try:
            check_dym_str_format(value, DYM_RANGE_PATTERN)
        except ValueError:
            raise argparse.ArgumentTypeError("dym range string is not a legal format string") from None
    return value


def check_number_list(value: str) -> str:
    if not value:
        return value
    if NUMBER_LIST_ILLEGAL.search(value):
        raise argparse.ArgumentTypeError("number list is contain illegal char!")
    if len(value) > NUMBER_LIST_MAX_LENGTH:
        raise argparse.ArgumentTypeError(f"number list is over max length: {NUMBER_LIST_MAX_LENGTH}!")
    return value


def _stat_or_refuse(path: str, what: str) -> PathStat:
    try:
        return PathStat(path)
    except OpenException as err:
        raise argparse.ArgumentTypeError(f"{what} path string is illegal. Please check.") from err


def _legal_file(value: str, what: str, suffix: str, max_size: float) -> str:
    """om / acl json / aipp config: readable, of that suffix, not over the size."""
    file_stat = _stat_or_refuse(value, what)
    if not (file_stat.is_basically_legal(READ) and file_stat.is_legal_file_type([suffix])
            and file_stat.is_legal_file_size(max_size)):
        raise argparse.ArgumentTypeError(f"{what} path:{value} is illegal. Please check.")
    return value


def check_om_path_legality(value: str) -> str:
    return _legal_file(value, "om", "om", OM_MODEL_MAX_SIZE)


def check_acl_json_path_legality(value: str) -> str:
    return _legal_file(value, "acl json", "json", ACL_JSON_MAX_SIZE) if value else value


def check_aipp_config_path_legality(value: str) -> str:
    return _legal_file(value, "aipp config", "config", AIPP_CONFIG_MAX_SIZE) if value else value


def check_input_path_legality(value: str) -> str:
    """Every comma-separated path must exist and be readable (files or directories alike)."""
    if not value:
        return value
    paths = value.split(",")
    if len(paths) > INPUT_LIST_MAX_SIZE:
        raise TypeError(f"input list:{paths} has too many input. Please check.")
    for path in paths:
        if not _stat_or_refuse(path, "input").is_basically_legal(READ):
            raise argparse.ArgumentTypeError(f"input path:{path} is illegal. Please check.")
    return value


def check_output_path_legality(value: str) -> str:
    """--output and --output_dirname alike, each relative to the cwd: absent is fine; present,
    a directory without group-write or any "other" bit."""
    if not value:
        return value
    file_stat = _stat_or_refuse(value, "output")
    if file_stat.exists and not file_stat.is_dir:
        raise argparse.ArgumentTypeError("output path is not a directory")
    if not file_stat.is_basically_legal(WRITE):
        raise argparse.ArgumentTypeError(f"output path:{value} is illegal. Please check.")
    return value


# ---------------------------------------------------------------------------------------------
# The parser (utils.py get_args): the same options in the same order (the order decides how
# argparse words an ambiguous prefix), no aliases of other generations.

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add = parser.add_argument
    add("--model", "-m", type=check_om_path_legality, required=True, help="The path of the om model")
    add("--input", "-i", type=check_input_path_legality, default=None, help="Input file or dir")
    add("--output", "-o", type=check_output_path_legality, default=None, help="Inference data output path")
    add("--output_dirname", type=check_output_path_legality, default=None, help="Actual output directory name")
    add("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"], help="Output file format (NPY or BIN or TXT)")
    add("--loop", "-l", type=check_loop_size, default=1, help="The round of the PureInfer.")
    add("--debug", type=str2bool, default=False, help="Debug switch,print model information")
    add("--device", "-d", type=check_device_range_valid, default=0, help="The NPU device ID to use")
    add("--dymBatch", dest="dym_batch", type=check_positive_integer, default=0, help="Dynamic batch size param")
    add("--dymHW", dest="dym_hw", type=check_dym_string, default=None, help="Dynamic image size param")
    add("--dymDims", dest="dym_dims", type=check_dym_string, default=None, help="Dynamic dims param")
    add("--dymShape", dest="dym_shape", type=check_dym_string, default=None, help="Dynamic shape param")
    add("--outputSize", dest="output_size", type=check_number_list, default=None, help="Output size for dynamic shape mode")
    add("--auto_set_dymshape_mode", type=str2bool, default=False, help="Auto_set_dymshape_mode")
    add("--auto_set_dymdims_mode", type=str2bool, default=False, help="Auto_set_dymdims_mode")
    add("--batchsize", type=check_batchsize_valid, default=None, help="Batch size of input tensor")
    add("--pure_data_type", type=str, default="zero", choices=["zero", "random"], help="Null data type for pure inference")
    add("--profiler", type=str2bool, default=False, help="Profiler switch")
    add("--dump", type=str2bool, default=False, help="Dump switch")
    add("--acl_json_path", type=check_acl_json_path_legality, default=None, help="Acl json path for profiling or dump")
    add("--output_batchsize_axis", type=check_nonnegative_integer, default=0, help="Splitting axis number")
    add("--run_mode", type=str, default="array", choices=["array", "files", "tensor", "full"], help="Run mode")
    add("--display_all_summary", type=str2bool, default=False, help="Display all summary include h2d d2h info")
    add("--warmup_count", type=check_nonnegative_integer, default=1, help="Warmup count before inference")
    add("--dymShape_range", dest="dym_shape_range", type=check_dym_range_string, default=None, help="Dynamic shape range")
    add("--aipp_config", type=check_aipp_config_path_legality, default=None, help="File type: .config")
    add("--energy_consumption", type=str2bool, default=False, help="Obtain power consumption data")
    add("--npu_id", type=check_device_range_valid, default=0, help="The NPU ID to use")
    add("--backend", type=str, default=None, choices=["trtexec"], help="Backend trtexec")
    add("--perf", type=str2bool, default=False, help="Perf switch")
    add("--pipeline", type=str2bool, default=False, help="Pipeline switch")
    add("--profiler_rename", type=str2bool, default=True, help="Profiler rename switch")
    add("--dump_npy", type=str2bool, default=False, help="dump data convert to npy")
    add("--divide_input", type=str2bool, default=False, help="Divide inputs across devices")
    add("--threads", dest="threads", type=check_positive_integer, default=1, help="Number of threads for computing")
    return parser


def check_int_args_max_limit(args: argparse.Namespace) -> None:
    """utils.py: the caps checked after parsing (a ValueError, exit 1 with a traceback)."""
    for dest, flag, limit in INT_ARGS_MAX:
        value = getattr(args, dest)
        if value is not None and value > limit:
            raise ValueError(f"{flag}: {value} is over {limit}")
