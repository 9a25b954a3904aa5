"""A fake `npu-smi`: `npu-smi info` prints the 310P table of ascend-tools.md §4 (captured on
npu-smi 25.5.2); anything else is a usage error (exit 1).

Environment knob:
    OMPIPE_FAKE_CHIP=<name>   the chip in the Name column (default 310P3), e.g. 910B3
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

TABLE = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 25.5.2                                   Version: 25.5.2                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 32896   {chip:<22}| OK              | NA           54                0     / 0             |
| 0       0                     | 0000:00:00.0    | 0            1904 / 44213                            |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| No running processes found in NPU 32896                                                                |
+===============================+=================+======================================================+"""

USAGE = """Usage: npu-smi info [-h] [-t type] [-i id] [-c chip_id] [-m]
ompipe fake npu-smi: only `npu-smi info` is emulated"""


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["info"]:
        print(USAGE, file=sys.stderr)
        return 1
    print(TABLE.format(chip=os.environ.get("OMPIPE_FAKE_CHIP") or "310P3"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
