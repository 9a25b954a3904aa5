"""The fake npu-smi, run as `npu-smi` from the fake toolchain's PATH (ascend-tools.md §4)."""
from __future__ import annotations

from pathlib import Path

from om_pipeline.tools import execute, npu_smi

# The 310P3 table quoted in ascend-tools.md §4 (npu-smi 25.5.2).
SPEC_TABLE = (Path(__file__).parents[1] / "fixtures/ascend-tools/npu-smi-info-310p3.txt").read_text()


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


def test_device_count_knob_lists_that_many_devices(run, monkeypatch):
    monkeypatch.setenv("OMPIPE_FAKE_NPU_COUNT", "4")
    outcome = run("npu-smi", "info")
    assert npu_smi.parse_chip_names(outcome.output) == ["310P3"] * 4
    assert "No running processes found in NPU 32899" in outcome.output
    assert {len(line) for line in outcome.output.splitlines()} == {len(SPEC_TABLE.splitlines()[0])}
