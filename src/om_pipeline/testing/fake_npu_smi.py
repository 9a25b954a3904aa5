"""A fake `npu-smi`: `npu-smi info` prints the 310P table of ascend-tools.md §4 (captured on
npu-smi 25.5.2); anything else is a usage error (exit 1).

Environment knobs:
    OMPIPE_FAKE_CHIP=<name>      the chip in the Name column (default 310P3), e.g. 910B3
    OMPIPE_FAKE_NPU_COUNT=<n>    how many devices the table lists (default 1), as a server with
                                 several cards: NPU ids 32896, 32897, ..., device ids 0..n-1
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

HEADER = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 25.5.2                                   Version: 25.5.2                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+"""
DEVICE = """\
| {npu:<8}{chip:<22}| OK              | NA           54                0     / 0             |
| 0       {device:<22}| 0000:{bus:02x}:00.0    | 0            1904 / 44213                            |
+===============================+=================+======================================================+"""
PROCESSES = """\
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+"""
NO_PROCESS = """\
| No running processes found in NPU {npu:<69}|
+===============================+=================+======================================================+"""
FIRST_NPU_ID = 32896


def table(chip: str, count: int) -> str:
    ids = [FIRST_NPU_ID + i for i in range(count)]
    return "\n".join([HEADER, *(DEVICE.format(npu=npu, chip=chip, device=i, bus=i) for i, npu in enumerate(ids)), PROCESSES,
                      *(NO_PROCESS.format(npu=npu) for npu in ids)])

USAGE = """Usage: npu-smi info [-h] [-t type] [-i id] [-c chip_id] [-m]
ompipe fake npu-smi: only `npu-smi info` is emulated"""


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["info"]:
        print(USAGE, file=sys.stderr)
        return 1
    print(table(os.environ.get("OMPIPE_FAKE_CHIP") or "310P3", int(os.environ.get("OMPIPE_FAKE_NPU_COUNT") or 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
