"""tools/npu_smi.py on the tables of ascend-tools.md §4."""
from __future__ import annotations

from pathlib import Path

import pytest

from om_pipeline.errors import UserError
from om_pipeline.tools import execute, npu_smi
from om_pipeline.tools.execute import Outcome

# The 310P3 table quoted in ascend-tools.md §4 (npu-smi 25.5.2), kept as a file both the parser
# and the fake npu-smi are checked against.
NEW_310P3 = (Path(__file__).parents[1] / "fixtures/ascend-tools/npu-smi-info-310p3.txt").read_text()

# Older, narrower first column (ModelZoo README), two devices; 910B block with HBM usage.
OLD_TWO_DEVICES = """+-------------------+-----------------+------------------------------------------------------+
| NPU     Name      | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device    | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===================+=================+======================================================+
| 0       310P3     | OK              | 15.8         42                0    / 0              |
| 0       0         | 0000:82:00.0    | 0            1074 / 21534                            |
+===================+=================+======================================================+
| 1       910B3     | OK              | 96.5         40                0    / 0              |
| 0       1         | 0000:C1:00.0    | 0            0    / 0          3161 / 65536         |
+===================+=================+======================================================+
"""


def test_chip_names_new_and_old_layouts():
    assert npu_smi.parse_chip_names(NEW_310P3) == ["310P3"]
    assert npu_smi.parse_chip_names(OLD_TWO_DEVICES) == ["310P3", "910B3"]


def test_soc_version():
    assert npu_smi.soc_version_from_info(NEW_310P3) == "Ascend310P3"
    with pytest.raises(UserError, match="no NPU chip") as err:
        npu_smi.soc_version_from_info("| NPU     Name  | Health |\n")
    assert "--soc-version Ascend310P3" in err.value.hint


def test_detect_goes_through_the_seam():
    seen = []

    def fake(request):
        seen.append(request.argv)
        return Outcome(request.argv, 0, NEW_310P3)

    with execute.swapped(fake):
        assert npu_smi.detect_soc_version() == "Ascend310P3"
    assert seen == [("npu-smi", "info")]


def test_detect_failures_hint_at_the_flag():
    def missing(request):
        raise UserError("npu-smi not found on PATH")

    with execute.swapped(missing), pytest.raises(UserError, match="npu-smi not found") as err:
        npu_smi.detect_soc_version()
    assert "--soc-version" in err.value.hint

    with execute.swapped(lambda request: Outcome(request.argv, 8, "dcmi module initialize failed\n")):
        with pytest.raises(UserError, match=r"exit 8") as err:
            npu_smi.detect_soc_version()
    assert err.value.details == ["dcmi module initialize failed"]
