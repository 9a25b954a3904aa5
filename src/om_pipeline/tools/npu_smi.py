"""`npu-smi info` -> the chip name -> atc's `--soc_version` (ascend-tools.md §4)."""
from __future__ import annotations

import re

from ..errors import UserError
from .execute import execute

# First cell "<NPU id> <Name>" of a device block's first row; the second row holds two
# integers (Chip, Device) and the header "| NPU     Name" no integer, so neither matches.
_CHIP_ROW = re.compile(r"^\|\s*\d+\s+([0-9]*[A-Za-z][0-9A-Za-z]*)\s*\|")
_HINT = "pass --soc-version Ascend310P3 (or your chip: 'Ascend' + the Name column of `npu-smi info`)"


def parse_chip_names(text: str) -> list[str]:
    """One chip name per device row, in table order (new wide and old narrow layouts)."""
    return [match.group(1) for line in text.splitlines() if (match := _CHIP_ROW.match(line))]


def soc_version_from_info(text: str) -> str:
    names = parse_chip_names(text)
    if not names:
        raise UserError("npu-smi info lists no NPU chip", hint=_HINT)
    return "Ascend" + names[0]


def detect_soc_version() -> str:
    """Ask `npu-smi info` (A3/950 boards need `-t board`, which this does not read)."""
    try:
        outcome = execute(["npu-smi", "info"])
    except UserError as exc:  # not on PATH
        raise UserError(f"cannot detect the soc version: {exc.message}", hint=_HINT) from None
    if not outcome.ok:
        raise UserError(
            f"cannot detect the soc version: `npu-smi info` failed (exit {outcome.returncode})",
            hint=_HINT,
            details=outcome.output.strip().splitlines()[-5:],
        )
    return soc_version_from_info(outcome.output)
