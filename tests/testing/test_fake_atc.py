"""The fake atc, run as `atc` from the fake toolchain's PATH (ascend-tools.md §1)."""
from __future__ import annotations

import platform
import subprocess

import onnx

from om_pipeline.testing import read_fake_om
from om_pipeline.tools import atc
from om_pipeline.tools.execute import subprocess_env

ATC_FLAGS = ["--framework=5", "--soc_version=Ascend310P3"]
START, SUCCESS, FAILURE = atc.START_LINE, atc.SUCCESS_BANNER, atc.FAILURE_BANNER


def test_success_writes_the_om_and_fusion_result(run, tiny_onnx, tmp_path):
    outcome = run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output", "out/deep/tiny_bs4", "--input_shape=x:4,3,4,4")
    assert outcome.returncode == 0
    assert outcome.output.splitlines() == [START, "...", SUCCESS]
    assert atc.parse_output(outcome.output).ok
    om = atc.find_om(tmp_path / "out/deep/tiny_bs4")
    assert om.name == "tiny_bs4.om"  # parent directories created
    meta, onnx_bytes = read_fake_om(om)
    assert meta["inputs"] == [{"name": "x", "shape": [4, 3, 4, 4], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "y", "shape": [4, 2, 4, 4], "dtype": "float32"},
                               {"name": "m", "shape": [4, 2], "dtype": "float32"}]
    assert meta["soc_version"] == "Ascend310P3" and meta["precision_mode"] == "force_fp16"
    assert meta["argv"][0] == "atc" and "--input_shape=x:4,3,4,4" in meta["argv"]
    stored = onnx.load_from_string(onnx_bytes)
    assert [d.dim_value for d in stored.graph.input[0].type.tensor_type.shape.dim] == [4, 3, 4, 4]
    assert (tmp_path / "out/deep/fusion_result.json").is_file()  # beside the .om, never in the caller's cwd
    assert not (tmp_path / "fusion_result.json").exists()


def test_output_with_om_suffix_gives_om_om_as_the_real_one(run, tiny_onnx, tmp_path):
    assert run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=m.om", "--input_shape=x:1,3,4,4").ok
    assert (tmp_path / "m.om.om").is_file()


def test_wrong_input_shape_name_is_e10016_exit_255_and_no_om(run, tiny_onnx, tmp_path):
    outcome = run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=tiny", "--input_shape=image:1,3,4,4")
    assert outcome.returncode == 255
    lines = outcome.output.splitlines()
    assert lines[:3] == [START, "...", FAILURE]
    assert lines[3] == ("E10016: Op name image specified in --input_shape is not found in the model. Confirm whether "
                        "this node name exists, or whether the node is not split with the specified delimiter ';'.")
    result = atc.parse_output(outcome.output)
    assert not result.ok and result.errors[0].startswith("E10016:")
    assert "opname[image] does not exist in model" in result.errors[0]
    assert not list(tmp_path.glob("*.om"))


def test_unknown_out_node_is_e10016(run, tiny_onnx, tmp_path):
    outcome = run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=tiny", "--out_nodes=Conv_1120:0")
    assert outcome.returncode == 255
    assert "E10016: Op name Conv_1120 specified in --out_nodes is not found" in outcome.output
    assert not list(tmp_path.glob("*.om"))


def test_out_nodes_choose_and_order_the_outputs(run, tiny_onnx, tmp_path):
    assert run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=tiny", "--input_shape=x:2,3,4,4",
               "--out_nodes=ReduceMean_2:0;Conv_0:0").ok
    meta, _ = read_fake_om(tmp_path / "tiny.om")
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [("m", [2, 2]), ("c", [2, 2, 4, 4])]


def test_flag_errors_go_to_stderr_then_the_banner(run, tiny_onnx):
    unknown = run("atc", "--modle=x.onnx")
    assert unknown.returncode == 255
    assert unknown.output.splitlines() == [START, "ERROR: unknown command line flag 'modle'", FAILURE]
    missing = run("atc", "--model")
    assert missing.returncode == 255
    assert "ERROR: flag '--model' is missing its argument; flag description: The model file." in missing.output


def test_help_exits_zero(run):
    outcome = run("atc", "--help")
    assert outcome.returncode == 0
    assert outcome.output.splitlines()[:2] == [START, "usage: atc <args>"]


def test_required_flags_in_atc_order(run, tiny_onnx, tmp_path):
    no_framework = run("atc", f"--model={tiny_onnx}", "--output=o")
    assert "E10007: --framework is required. The value must be 0(Caffe) or 1(MindSpore) or 3(TensorFlow) or 5(Onnx)." \
        in no_framework.output
    caffe = run("atc", f"--model={tiny_onnx}", "--framework=0", "--output=o", "--soc_version=Ascend310")
    assert "E10001: Value 0 for parameter --framework is invalid" in caffe.output
    no_soc = run("atc", f"--model={tiny_onnx}", "--framework=5", "--output=o")
    assert "E10054: The required parameter --soc_version for ATC is empty." in no_soc.output
    no_model = run("atc", "--model=absent.onnx", *ATC_FLAGS, "--output=o")
    assert ("E10001: Value absent.onnx for parameter --model is invalid. Reason: [Errno 2] No such file or directory"
            in no_model.output)
    bad_value = run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=o", "--precision_mode=fp99")
    assert "E10001: Value fp99 for parameter --precision_mode is invalid." in bad_value.output
    assert all(o.returncode == 255 for o in (no_framework, caffe, no_soc, no_model, bad_value))
    assert not list(tmp_path.glob("*.om"))


def test_dynamic_graph_gets_the_arch_suffix(run, tiny_onnx, tmp_path):
    assert run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=dyn", "--input_shape=x:-1,3,4,4").ok
    om = atc.find_om(tmp_path / "dyn")
    assert om.name == f"dyn_linux_{platform.machine()}.om"
    assert read_fake_om(om)[0]["inputs"][0]["shape"] == [-1, 3, 4, 4]


def test_arch_suffix_knob(run, tiny_onnx, tmp_path):
    assert run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=s", "--input_shape=x:1,3,4,4",
               "--host_env_cpu=aarch64", OMPIPE_FAKE_ATC_ARCH_SUFFIX="1").ok
    assert atc.find_om(tmp_path / "s").name == "s_linux_aarch64.om"


def test_forced_failure_knob(run, tiny_onnx, tmp_path):
    outcome = run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=f", "--input_shape=x:1,3,4,4",
                  OMPIPE_FAKE_ATC_FAIL="EZ3002")
    assert outcome.returncode == 255
    assert [e.split(":")[0] for e in atc.parse_output(outcome.output).errors] == ["EZ3002"]
    assert not list(tmp_path.glob("*.om"))


def test_delay_knob_lets_a_kill_land_before_the_model_is_written(toolchain, tiny_onnx, tmp_path):
    env = subprocess_env({**toolchain, "OMPIPE_FAKE_DELAY": "30"})
    proc = subprocess.Popen(["atc", f"--model={tiny_onnx}", *ATC_FLAGS, "--output=slow", "--input_shape=x:1,3,4,4"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == START  # under way; the model comes after the 30 s delay
    proc.terminate()
    assert proc.wait(timeout=10) != 0
    assert not list(tmp_path.glob("*.om"))
