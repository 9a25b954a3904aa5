"""tools/ais_bench.py on the literal outputs of every ais_bench generation (ascend-tools.md §2)."""
from __future__ import annotations

import json

import pytest

from om_pipeline.errors import UserError
from om_pipeline.tools import ais_bench
from om_pipeline.tools.ais_bench import Throughput

# AB-2023 / AIT-2024 / AB-2025 (README example of the real tool)
MODERN = """[INFO] acl init success
[INFO] open device 0 success
[INFO] load model pth_resnet50_bs1.om success
[INFO] create model description success
[INFO] try get model batchsize:1
[INFO] output path:./result/2022_08_26-06_44_54
[INFO] warm up 1 done
Inference array Processing: 100%|████████████████████████████████| 1/1 [00:00<00:00, 10.73it/s]
[INFO] -----------------Performance Summary------------------
[INFO] NPU_compute_time (ms): min = 0.6610000133514404, max = 0.6610000133514404, mean = 0.6610000133514404, median = 0.6610000133514404, percentile(99%) = 0.6610000133514404
[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(0.6610000133514404): 1512.8592735267011
[INFO] ------------------------------------------------------
[INFO] unload model success, model Id is 1
"""

# AB-2022a / AB-2022b: H2D/D2H lines and the older throughput wording
OLD = """[INFO] -----------------Performance Summary------------------
[INFO] H2D_latency (ms): min = 0.05, max = 0.07, mean = 0.06, median = 0.06, percentile(99%) = 0.0698
[INFO] NPU_compute_time (ms): min = 2.25, max = 2.75, mean = 2.5, median = 2.5, percentile(99%) = 2.745
[INFO] D2H_latency (ms): min = 0.01, max = 0.02, mean = 0.015, median = 0.015, percentile(99%) = 0.0199
[INFO] throughput 1000*batchsize(8)/NPU_compute_time.mean(2.5): 3200.0
[INFO] ------------------------------------------------------
"""

MULTI_DEVICE = """[INFO] throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(2.0): 2000.0
[INFO] throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(4.0): 1000.0
[INFO] multidevice run end qsize:4 result:0
[INFO] i:0 device_0 throughput:2000.0 start_time:1.0 end_time:2.0
[INFO] i:1 device_1 throughput:1000.0 start_time:1.0 end_time:2.0
[INFO] summary throughput:3000.0
"""


def test_throughput_every_wording():
    assert ais_bench.parse_throughput(MODERN) == Throughput(1.0, 0.6610000133514404, 1512.8592735267011)
    assert ais_bench.parse_throughput(OLD) == Throughput(8.0, 2.5, 3200.0)
    auto_dym = "[INFO] throughput 1000*batchsize.mean(1.0)/NPU_compute_time.mean(0.5): 2000.0"
    assert ais_bench.parse_throughput(auto_dym) == Throughput(1.0, 0.5, 2000.0)
    fork = "[INFO] Throughput 1000*batchsize.mean(2)/NPU_compute_time.mean(1.0): 2000.0"
    assert ais_bench.parse_throughput(fork).fps == 2000.0
    assert ais_bench.parse_throughput("[INFO] warm up 1 done\n") is None


def test_throughput_multi_device_uses_the_summary_total():
    assert ais_bench.parse_throughput(MULTI_DEVICE) == Throughput(4.0, 3.0, 3000.0)


def test_compute_time():
    assert ais_bench.parse_compute_time(MODERN) == {
        "min": 0.6610000133514404, "max": 0.6610000133514404, "mean": 0.6610000133514404,
        "median": 0.6610000133514404, "p99": 0.6610000133514404,
    }
    assert ais_bench.parse_compute_time(OLD)["p99"] == 2.745  # not the H2D line
    assert ais_bench.parse_compute_time("[INFO] NPU_compute_time (ms): mean = 1.5\n") == {"mean": 1.5}
    assert ais_bench.parse_compute_time("nothing") is None


def test_output_dir_from_log():
    assert str(ais_bench.output_dir_from_log(MODERN)) == "result/2022_08_26-06_44_54"
    assert ais_bench.output_dir_from_log(OLD) is None


def test_find_result_dir_timestamped_or_named(tmp_path):
    (tmp_path / "2022_08_26-06_44_54").mkdir()
    before = ais_bench.existing_result_dirs(tmp_path)
    (tmp_path / "2022_08_26-06_45_10").mkdir()
    (tmp_path / "profiler").mkdir()
    assert ais_bench.find_result_dir(tmp_path, None, before).name == "2022_08_26-06_45_10"
    with pytest.raises(UserError, match="found none"):
        ais_bench.find_result_dir(tmp_path, None, ais_bench.existing_result_dirs(tmp_path))
    (tmp_path / "bs4").mkdir()
    assert ais_bench.find_result_dir(tmp_path, "bs4", set()).name == "bs4"
    with pytest.raises(UserError, match="wrote no"):
        ais_bench.find_result_dir(tmp_path, "bs8", set())


def test_read_summary_both_layouts(tmp_path):
    new = tmp_path / "2023_06_10-10_00_00"
    new.mkdir()
    (tmp_path / "2023_06_10-10_00_00_summary.json").write_text(json.dumps({"throughput": 1.5, "pid": 7}))
    assert ais_bench.read_summary(new) == {"throughput": 1.5, "pid": 7}
    old = tmp_path / "2022_08_26-06_44_54"
    old.mkdir()
    (old / "sumary.json").write_text(json.dumps({"throughput": 2.5}))
    assert ais_bench.read_summary(old) == {"throughput": 2.5}
    with pytest.raises(UserError, match="no summary JSON"):
        ais_bench.read_summary(tmp_path / "missing")


def test_error_tail_keeps_the_logged_reason_and_the_traceback_end():
    text = ("[INFO] try get model batchsize:1\n[ERROR] arg0 tensorsize: 196608 filesize: 602112 not match\n"
            "Traceback (most recent call last):\n" + "".join(f'  File "x.py", line {n}, in f\n    g()\n' for n in range(20))
            + "RuntimeError\n")
    tail = ais_bench.error_tail(text, lines=6)
    assert tail[0] == "[ERROR] arg0 tensorsize: 196608 filesize: 602112 not match"
    assert tail[-1] == "RuntimeError" and len(tail) == 6


def test_error_tail_of_an_argparse_error():
    text = "usage: __main__.py [-h] --model MODEL\n__main__.py: error: argument --model/-m: om path:x is illegal. Please check.\n"
    assert ais_bench.error_tail(text)[-1].endswith("om path:x is illegal. Please check.")
