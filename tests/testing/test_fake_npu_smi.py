"""The fake npu-smi, run as `npu-smi` from the fake toolchain's PATH (ascend-tools.md §4)."""
from __future__ import annotations

from om_pipeline.tools import execute, npu_smi

# The 310P3 table quoted in ascend-tools.md §4 (npu-smi 25.5.2).
SPEC_TABLE = """+--------------------------------------------------------------------------------------------------------+
| npu-smi 25.5.2                                   Version: 25.5.2                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 32896   310P3                 | OK              | NA           54                0     / 0             |
| 0       0                     | 0000:00:00.0    | 0            1904 / 44213                            |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| No running processes found in NPU 32896                                                                |
+===============================+=================+======================================================+
"""


def test_info_prints_the_spec_table(run):
    outcome = run("npu-smi", "info")
    assert outcome.returncode == 0
    assert outcome.output == SPEC_TABLE


def test_chip_knob_and_detection_through_the_seam(toolchain, monkeypatch):
    monkeypatch.setenv("OMPIPE_FAKE_CHIP", "910B3")
    execute.set_toolchain_env(toolchain)  # the root conftest resets it after the test
    assert npu_smi.detect_soc_version() == "Ascend910B3"


def test_other_subcommands_are_usage_errors(run):
    outcome = run("npu-smi", "info", "-t", "board", "-i", "0")
    assert outcome.returncode == 1 and outcome.output.startswith("Usage: npu-smi info")
