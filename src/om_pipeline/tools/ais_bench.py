"""Reading what `python -m ais_bench` prints and writes, for every generation of the tool
(ascend-tools.md §2.4-2.7): the throughput line (`batchsize(` before 2023, `batchsize.mean(`
after, plus the multi-device total), the result directory and both summary-file layouts.
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

# §2.6 "Robust regex"; case-insensitive because one fork prints "Throughput".
_THROUGHPUT = re.compile(
    r"throughput 1000\*batchsize(?:\.mean)?\(([^)]*)\)/NPU_compute_time\.mean\(([^)]*)\): ([0-9.eE+-]+)",
    re.IGNORECASE,
)
_SUMMARY_THROUGHPUT = re.compile(r"\[INFO\] summary throughput:\s*([0-9.eE+-]+)")
_COMPUTE_TIME = re.compile(r"NPU_compute_time \(ms\): (.*)$", re.MULTILINE)
_STAT = re.compile(r"(min|max|mean|median|percentile\(99%\)) = ([0-9.eE+-]+|nan|inf)")
_OUTPUT_PATH = re.compile(r"^\[INFO\] output path:(.*)$", re.MULTILINE)
RESULT_DIR_NAME = re.compile(r"\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}")  # time.strftime("%Y_%m_%d-%H_%M_%S")
_TRACEBACK = "Traceback (most recent call last):"
# ais_bench since 2023 (path_security_check.py, ascend-tools.md 2.2) refuses a path holding any
# other character, and caps --batchsize (check_int_args_max_limit).
_LEGAL_PATH_CHARACTER = re.compile(r"[A-Za-z0-9_/.-]")
MAX_BATCHSIZE = 4096


def illegal_path_characters(path: str) -> str:
    """The characters of `path` that ais_bench refuses, each once, sorted ('' when none)."""
    return "".join(sorted(set(_LEGAL_PATH_CHARACTER.sub("", path))))


@dataclass(frozen=True)
class Throughput:
    batchsize: float
    mean_ms: float  # NPU_compute_time mean
    fps: float


def parse_throughput(text: str) -> Throughput | None:
    """The summary's throughput. Several blocks (one per device) with a multi-device total:
    the total fps, the first block's batch size and the mean of the devices' means.
    Several blocks without a total (dymShape_range runs a block per shape): the last one."""
    blocks = [tuple(float(v) for v in match) for match in _THROUGHPUT.findall(text)]
    if not blocks:
        return None
    total = _SUMMARY_THROUGHPUT.search(text)
    if total:
        return Throughput(blocks[0][0], statistics.fmean(b[1] for b in blocks), float(total.group(1)))
    return Throughput(*blocks[-1])


def parse_compute_time(text: str) -> dict[str, float] | None:
    """The last `NPU_compute_time (ms): ...` line as {min, max, mean, median, p99}; the
    multi-thread pipeline mode prints only the mean."""
    lines = _COMPUTE_TIME.findall(text)
    if not lines:
        return None
    return {("p99" if key.startswith("percentile") else key): float(value) for key, value in _STAT.findall(lines[-1])}


def output_dir_from_log(text: str) -> Path | None:
    """The result directory ais_bench announces (`[INFO] output path:<dir>`)."""
    match = _OUTPUT_PATH.search(text)
    return Path(match.group(1).strip()) if match else None


def existing_result_dirs(output_root: Path) -> set[str]:
    """Names under `--output` before a run, to tell the new timestamped directory apart."""
    return {p.name for p in Path(output_root).iterdir() if p.is_dir()} if Path(output_root).is_dir() else set()


def find_result_dir(output_root: Path, dirname: str | None, before: set[str]) -> Path:
    """The directory a run wrote its outputs to: `<output>/<output_dirname>`, or the one new
    `<output>/<%Y_%m_%d-%H_%M_%S>` directory (§2.4)."""
    output_root = Path(output_root)
    if dirname:
        result = output_root / dirname
        if not result.is_dir():
            raise UserError(f"ais_bench wrote no {result}")
        return result
    new = sorted(
        p for p in output_root.iterdir() if p.is_dir() and RESULT_DIR_NAME.fullmatch(p.name) and p.name not in before
    ) if output_root.is_dir() else []
    if len(new) != 1:
        found = ", ".join(p.name for p in new) or "none"
        raise UserError(
            f"expected one new timestamped result directory under {output_root}, found {found}",
            hint="pass --output_dirname so the result directory has a known name",
        )
    return new[0]


def summary_path(result_dir: Path) -> Path:
    """`<dir>_summary.json` beside the result dir (AB-2022b on), else the misspelt
    `<dir>/sumary.json` inside it (AB-2022a, `ais_infer.py`) (§2.5)."""
    result_dir = Path(result_dir)
    for candidate in (result_dir.parent / f"{result_dir.name}_summary.json", result_dir / "sumary.json"):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"no summary JSON for {result_dir}: neither {result_dir.name}_summary.json beside it nor sumary.json inside",
        hint="the summary is written only when --output is given",
    )


def read_summary(result_dir: Path) -> dict:
    path = summary_path(result_dir)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def error_tail(text: str, lines: int = 15) -> list[str]:
    """What to show when ais_bench failed: its `[ERROR]` lines (ais_bench mostly raises a bare
    `RuntimeError()` after logging the reason) and the tail of the last traceback; without
    either, the last lines of the output (argparse errors)."""
    all_lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    errors = [line for line in all_lines if line.startswith("[ERROR]")][-(lines // 3 or 1):]
    starts = [i for i, line in enumerate(all_lines) if line.startswith(_TRACEBACK)]
    traceback = all_lines[starts[-1]:] if starts else []
    if not errors and not traceback:
        return all_lines[-lines:]
    return errors + traceback[-(lines - len(errors)):]
