"""tools/msame.py on msame's printed lines (ascend-tools.md §3), both eras."""
from __future__ import annotations

from pathlib import Path

from om_pipeline.tools import msame

DIRECTORY_MODE = """[INFO] acl init success
[INFO] open device 0 success
[INFO] create context success
[INFO] create stream success
[INFO] get run mode success
[INFO] load model ./resnet50.om success
[INFO] create model description success
[INFO] create model output success
out/2023610_9_5_7_123456
[INFO] start to process file:./data/a.bin
[INFO] model execute success
Inference time: 2.345ms
[INFO] output data success
[INFO] start to process file:./data/b.bin
[INFO] model execute success
Inference time: 1.5ms
[INFO] output data success
Inference average time : 1.92 ms
Inference average time without first time: 1.50 ms
[INFO] unload model success, model Id is 1
[INFO] pid: 4242 Execute sample success
[INFO] end to destroy stream
[INFO] end to destroy context
[INFO] end to reset device is 0
[INFO] end to finalize acl
"""

FILE_MODE_2021 = """[INFO] load model ./m.om success
20210224_153012
Inference time: 3ms
Inference time: 2ms
Inference average time: 2.500000 ms
Inference average time without first time: 2.000000 ms
[INFO] Execute sample success.
"""


def test_directory_mode():
    result = msame.parse_output(DIRECTORY_MODE, 0)
    assert result.ok
    assert result.inference_times_ms == [2.345, 1.5]
    assert (result.average_ms, result.average_without_first_ms) == (1.92, 1.5)
    assert result.output_dir == Path("out/2023610_9_5_7_123456")


def test_file_mode_2021_timestamp():
    result = msame.parse_output(FILE_MODE_2021, 0)
    assert result.ok and result.average_ms == 2.5 and result.average_without_first_ms == 2.0
    assert result.output_dir == Path("20210224_153012")


def test_exit_zero_with_an_error_line_is_a_failure():
    text = "[ERROR] loop must in 1 to 100\n"
    result = msame.parse_output(text, 0)
    assert not result.ok and result.errors == ["[ERROR] loop must in 1 to 100"]
    assert not msame.parse_output(DIRECTORY_MODE, 1).ok
