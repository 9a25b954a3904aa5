"""The fake `python -m ais_bench` (ascend-tools.md §2), run as a subprocess through the fake
toolchain's PYTHONPATH, and the fake InferSession."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import onnx
import pytest

from om_pipeline import fp16
from om_pipeline.testing.toolchain import FAKE_PYTHON
from om_pipeline.tools import ais_bench


def write_samples(directory, count, seed=0):
    directory.mkdir(mode=0o750, parents=True)
    rng = np.random.RandomState(seed)
    samples = [rng.rand(1, 3, 4, 4).astype(np.float32) for _ in range(count)]
    for n, sample in enumerate(samples):
        sample.tofile(directory / f"img{n}.bin")
    return samples


def reference_outputs(tiny_onnx, sample):
    """What the .om computes: ATC's default force_fp16, emulated (om_pipeline.fp16)."""
    session = fp16.session(onnx.load(str(tiny_onnx)), fp16.Precision())
    return session.run(["y", "m"], {"x": sample})


def results_root(tmp_path):
    root = tmp_path / "result"
    root.mkdir(mode=0o750)  # ais_bench refuses an existing --output with group-write or "other" bits
    root.chmod(0o750)
    return root


def test_batches_pads_and_names_outputs_as_the_real_one(run, python, tiny_onnx, tiny_om_bs4, tmp_path):
    samples = write_samples(tmp_path / "data", 10)
    root = results_root(tmp_path)
    outcome = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--input", tmp_path / "data",
                  "--output", root, "--output_dirname=bs4", "--loop", "2")
    assert outcome.returncode == 0, outcome.output
    assert "[INFO] get filesperbatch files0 size:192 tensor0size:768 filesperbatch:4 runcount:3" in outcome.output
    result_dir = root / "bs4"
    assert sorted(os.listdir(result_dir)) == sorted(f"img{n}_{i}.bin" for n in range(10) for i in (0, 1))
    for n, sample in enumerate(samples):  # padding did not leak into the real samples' outputs
        y, m = reference_outputs(tiny_onnx, sample)
        np.testing.assert_allclose(np.fromfile(result_dir / f"img{n}_0.bin", np.float32).reshape(y.shape), y, rtol=1e-6)
        np.testing.assert_allclose(np.fromfile(result_dir / f"img{n}_1.bin", np.float32).reshape(m.shape), m, rtol=1e-6)

    summary = ais_bench.read_summary(result_dir)
    assert (root / "bs4_summary.json").is_file()
    assert summary["NPU_compute_time"]["count"] == 6 == len(summary["npu_compute_time_list"])  # 3 runs x --loop 2
    assert summary["filesinfo"]["9"] == {"infiles": [str(tmp_path / "data" / "img9.bin")],
                                         "outfiles": [str(result_dir / "img9_0.bin"), str(result_dir / "img9_1.bin")]}
    assert len(summary["filesinfo"]) == 10 and summary["pid"] > 0 and summary["args"][1:3] == ["--model", str(tiny_om_bs4)]
    throughput = ais_bench.parse_throughput(outcome.output)
    assert throughput.batchsize == 4 and throughput.fps == pytest.approx(summary["throughput"])
    assert throughput.fps == pytest.approx(4000 / summary["NPU_compute_time"]["mean"])
    assert ais_bench.parse_compute_time(outcome.output)["mean"] == pytest.approx(summary["NPU_compute_time"]["mean"])


def test_the_printed_lines_in_order(run, python, tiny_om_bs4, tmp_path):
    write_samples(tmp_path / "data", 4)
    outcome = run(python, "-m", "ais_bench", "-m", tiny_om_bs4, "-i", tmp_path / "data", "-o", results_root(tmp_path))
    lines = outcome.output.splitlines()
    expected_prefixes = [
        "[INFO] acl init success", "[INFO] open device 0 success", "[INFO] create new context",
        f"[INFO] load model {tiny_om_bs4} success", "[INFO] create model description success",
        "[INFO] try get model batchsize:4", "[INFO] output path:", "[INFO] get filesperbatch", "[INFO] warm up 1 done",
        "Inference array Processing: 100%|", "[INFO] -----------------Performance Summary------------------",
        "[INFO] NPU_compute_time (ms): min = ", "[INFO] throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(",
        "[INFO] ------------------------------------------------------", "[INFO] unload model success, model Id is 1",
        "[INFO] end to destroy context", "[INFO] end to reset device 0", "[INFO] end to finalize acl",
    ]
    assert len(lines) == len(expected_prefixes)
    for line, prefix in zip(lines, expected_prefixes):
        assert line.startswith(prefix), (line, prefix)
    result_dir = ais_bench.output_dir_from_log(outcome.output)
    assert re.fullmatch(r"\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}", result_dir.name)
    assert ais_bench.find_result_dir(result_dir.parent, None, set()) == result_dir
    assert (result_dir.parent / f"{result_dir.name}_summary.json").is_file()


def test_old_layout_knob(run, python, tiny_om_bs4, tmp_path):
    write_samples(tmp_path / "data", 4)
    root = results_root(tmp_path)
    outcome = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--input", tmp_path / "data", "--output", root,
                  "--output_dirname", "old", OMPIPE_FAKE_AIS_LAYOUT="2022a")
    assert outcome.returncode == 0, outcome.output
    assert "[INFO] throughput 1000*batchsize(4)/NPU_compute_time.mean(" in outcome.output
    assert "[INFO] H2D_latency (ms): min = " in outcome.output and "[INFO] D2H_latency (ms): min = " in outcome.output
    assert (root / "old" / "sumary.json").is_file() and not (root / "old_summary.json").exists()
    summary = ais_bench.read_summary(root / "old")
    assert "count" not in summary["NPU_compute_time"] and "pid" not in summary
    assert ais_bench.parse_throughput(outcome.output).fps == pytest.approx(summary["throughput"])
    again = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--output", root, "--output_dirname", "old",
                OMPIPE_FAKE_AIS_LAYOUT="2022a")
    assert again.returncode == 1 and "FileExistsError" in again.output  # os.mkdir, as ais_infer.py did


def test_pure_inference_npy_and_str2bool_flags(run, python, tiny_onnx, tiny_om_bs4, tmp_path):
    root = results_root(tmp_path)
    outcome = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--output", root, "--output_dirname=pure",
                  "--outfmt", "NPY", "--display_all_summary=TRUE", "--debug", "0", "--batchsize", "8")
    assert outcome.returncode == 0, outcome.output
    assert "try get model batchsize" not in outcome.output  # given, not guessed
    assert "[INFO] throughput 1000*batchsize.mean(8)/" in outcome.output
    assert "[INFO] H2D_latency (ms)" in outcome.output
    assert sorted(os.listdir(root / "pure")) == ["pure_infer_data_0.npy", "pure_infer_data_1.npy"]
    y, _ = reference_outputs(tiny_onnx, np.zeros((4, 3, 4, 4), np.float32))
    np.testing.assert_allclose(np.load(root / "pure" / "pure_infer_data_0.npy"), y, rtol=1e-6)


def test_size_mismatch_fails_like_ais_bench(run, python, tiny_om_bs4, tmp_path):
    (tmp_path / "data").mkdir()
    np.zeros(25, np.float32).tofile(tmp_path / "data" / "odd.bin")
    outcome = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--input", tmp_path / "data")
    assert outcome.returncode == 1
    assert "[ERROR] arg0 tensorsize: 768 filesize: 100 not match" in outcome.output
    assert "Traceback (most recent call last):" in outcome.output
    assert ais_bench.error_tail(outcome.output)[0] == "[ERROR] arg0 tensorsize: 768 filesize: 100 not match"


def test_argument_errors_exit_2(run, python, tiny_onnx, tiny_om_bs4, tmp_path):
    not_om = run(python, "-m", "ais_bench", "--model", tiny_onnx)
    assert not_om.returncode == 2 and f"om path:{tiny_onnx} is illegal. Please check." in not_om.output
    bad_bool = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--debug", "maybe")
    assert bad_bool.returncode == 2 and "Boolean value expected" in bad_bool.output
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    too_open = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--output", open_dir)
    assert too_open.returncode == 2
    assert (f"[ERROR] The file {open_dir} is group writable, or is others writable, as export file(or directory), "
            "permission should not be over 0o750(rwxr-x---)") in too_open.output
    dirname_alone = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--output_dirname", "x")
    assert dirname_alone.returncode == 1 and "cann't be used alone" in dirname_alone.output


def test_infer_session(tiny_onnx, tiny_om_bs4, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_PYTHON))
    from ais_bench.infer.interface import InferSession

    session = InferSession(0, str(tiny_om_bs4), loop=2)
    (desc,) = session.get_inputs()
    assert (desc.name, desc.shape, str(desc.datatype), desc.realsize) == ("x", [4, 3, 4, 4], "dtype.float32", 768)
    assert [o.name for o in session.get_outputs()] == ["y", "m"]
    batch = np.random.RandomState(3).rand(4, 3, 4, 4).astype(np.float32)
    y, m = session.infer([batch])
    expected = reference_outputs(tiny_onnx, batch)
    np.testing.assert_allclose(y, expected[0], rtol=1e-6)
    np.testing.assert_allclose(m, expected[1], rtol=1e-6)
    times = session.summary().exec_time_list
    assert len(times) == 2 and all(end >= start for start, end in times)
    with pytest.raises(RuntimeError, match="768"):
        session.infer([batch[:1]])
    session.free_resource()
    InferSession.finalize()


def test_summary_json_is_plain_json(run, python, tiny_om_bs4, tmp_path):
    root = results_root(tmp_path)
    assert run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--output", root, "--output_dirname", "j").ok
    keys = list(json.loads((root / "j_summary.json").read_text()))
    assert keys == ["filesinfo", "args", "NPU_compute_time", "H2D_latency", "D2H_latency",
                    "npu_compute_time_list", "throughput", "pid"]


def test_dynamic_batch_model_needs_a_dym_option(run, python, tiny_onnx, tmp_path):
    assert run("atc", f"--model={tiny_onnx}", "--framework=5", "--soc_version=Ascend310P3", "--output=dyn",
               "--input_shape=x:-1,3,4,4").ok
    (om,) = tmp_path.glob("dyn_linux_*.om")
    without = run(python, "-m", "ais_bench", "--model", om)
    assert without.returncode == 1
    # set_session_options raises it without logging it first
    assert "RuntimeError: dynamic batch om model detected, but dymbatch, dymdims or dymshape not set!" in without.output
    with_batch = run(python, "-m", "ais_bench", "--model", om, "--dymShape", "x:2,3,4,4")
    assert with_batch.returncode == 0, with_batch.output
    assert "[INFO] try get model batchsize:2" in with_batch.output


@pytest.mark.parametrize("divide", [False, True])
def test_several_devices_run_each_on_all_or_on_a_list_share_part(run, python, tiny_om_bs4, tmp_path, divide):
    write_samples(tmp_path / "data", 5)
    root = results_root(tmp_path)
    extra = ("--divide_input", "1") if divide else ()
    outcome = run(python, "-m", "ais_bench", "--model", tiny_om_bs4, "--input", tmp_path / "data", "--output", root,
                  "--output_dirname", "multi", "--device", "0,1", *extra)
    assert outcome.returncode == 0, outcome.output
    per_device = {}
    for index, device in enumerate((0, 1)):
        result_dir = root / "multi" / f"device{device}_{index}"
        assert (root / "multi" / f"device{device}_{index}_summary.json").is_file()
        per_device[device] = sorted(p.name for p in result_dir.glob("*_0.bin"))
        assert f"[INFO] open device {device} success" in outcome.output
    if divide:  # list_share of 5 files in 2: the first part one longer, consecutive in ais_bench's order
        assert per_device == {0: ["img0_0.bin", "img1_0.bin", "img2_0.bin"], 1: ["img3_0.bin", "img4_0.bin"]}
    else:  # without --divide_input every device runs the whole input
        assert per_device[0] == per_device[1] == [f"img{n}_0.bin" for n in range(5)]
    lines = re.findall(r"^i:(\d) device_(\d) throughput:([0-9.]+) start_time:[0-9.]+ end_time:[0-9.]+$", outcome.output, re.M)
    assert [(i, d) for i, d, _ in lines] == [("0", "0"), ("1", "1")]
    assert "[INFO] multidevice run end qsize:4 result:0" in outcome.output
    assert ais_bench.parse_throughput(outcome.output).fps == pytest.approx(sum(float(t) for *_, t in lines))
