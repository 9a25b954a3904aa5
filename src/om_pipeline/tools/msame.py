"""Reading msame's stdout (ascend-tools.md §3): per-execution times, the averages in both
spellings, the result directory and `[ERROR]` lines. msame exits 0 after several argument
errors, so success needs exit 0 AND no `[ERROR]` line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

_INFERENCE_TIME = re.compile(r"^Inference time: ([0-9.eE+-]+)ms", re.MULTILINE)
# Directory mode prints "Inference average time : %.2f ms", file mode "Inference average time: %f ms".
_AVERAGE = re.compile(r"^Inference average time ?: ([0-9.eE+-]+) ms", re.MULTILINE)
_AVERAGE_WITHOUT_FIRST = re.compile(r"^Inference average time without first time: ([0-9.eE+-]+) ms", re.MULTILINE)
# The result dir is printed alone on a line; its name is the timestamp: since 2022
# year+month+day unpadded then _h_m_s_usec (2023610_9_5_7_123456), in 2021 %Y%m%d_%H%M%S.
_RESULT_DIR = re.compile(r"^(\S*?)(\d{6,8}_\d{1,2}_\d{1,2}_\d{1,2}_\d{1,6}|\d{8}_\d{6})/?$", re.MULTILINE)


@dataclass(frozen=True)
class MsameResult:
    ok: bool
    inference_times_ms: list[float] = field(default_factory=list)
    average_ms: float | None = None
    average_without_first_ms: float | None = None
    output_dir: Path | None = None
    errors: list[str] = field(default_factory=list)


def parse_output(text: str, returncode: int) -> MsameResult:
    errors = [line.strip() for line in text.splitlines() if line.startswith("[ERROR]")]
    average = _AVERAGE.search(text)
    without_first = _AVERAGE_WITHOUT_FIRST.search(text)
    result_dir = _RESULT_DIR.search(text)
    return MsameResult(
        ok=returncode == 0 and not errors,
        inference_times_ms=[float(v) for v in _INFERENCE_TIME.findall(text)],
        average_ms=float(average.group(1)) if average else None,
        average_without_first_ms=float(without_first.group(1)) if without_first else None,
        output_dir=Path(result_dir.group(0).rstrip("/")) if result_dir else None,
        errors=errors,
    )


def find_result_dir(root: Path, result: MsameResult) -> Path:
    """The timestamped directory msame printed, or else the newest one under `root`."""
    if result.output_dir is not None:
        printed = result.output_dir if result.output_dir.is_absolute() else root / result.output_dir.name
        if printed.is_dir() and printed.resolve().parent == root.resolve():
            return printed
    candidates = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise UserError(f"msame wrote no result directory under {root}")
    return candidates[-1]
