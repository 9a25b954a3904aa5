"""The fake atc records --precision_mode / --precision_mode_v2 / --keep_dtype in the fake .om,
and the fake runtime (ais_bench, InferSession, msame) computes as they say: fp16 storage under
ATC's default force_fp16, fp32 under must_keep_origin_dtype / origin."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from om_pipeline.testing.fake_om import read_fake_om_meta
from om_pipeline.testing.fake_runtime import FakeOmModel

ATC_FLAGS = ["--framework=5", "--soc_version=Ascend310P3"]


def compile_om(run, tiny_onnx, tmp_path, *flags):
    outcome = run("atc", f"--model={tiny_onnx}", *ATC_FLAGS, f"--output={tmp_path}/m", "--input_shape=x:2,3,4,4", *flags)
    return outcome, tmp_path / "m.om"


def outputs(om, batch):
    return FakeOmModel(om).execute([batch])


@pytest.fixture
def batch():
    return np.random.RandomState(5).rand(2, 3, 4, 4).astype(np.float32)


@pytest.fixture
def fp32(tiny_onnx, batch):
    return onnxruntime.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(["y", "m"], {"x": batch})


def test_default_is_force_fp16_emulated(run, tiny_onnx, tmp_path, batch, fp32):
    outcome, om = compile_om(run, tiny_onnx, tmp_path)
    assert outcome.ok, outcome.output
    assert read_fake_om_meta(om)["precision_mode"] == "force_fp16"
    y, m = outputs(om, batch)
    assert y.dtype == np.float32  # --output_type defaults to the original model's
    assert not np.array_equal(y, fp32[0])
    np.testing.assert_array_equal(y, y.astype(np.float16).astype(np.float32))  # values stored in fp16
    np.testing.assert_allclose(y, fp32[0], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("flag", ["--precision_mode=must_keep_origin_dtype", "--precision_mode_v2=origin"])
def test_origin_modes_compute_fp32(run, tiny_onnx, tmp_path, batch, fp32, flag):
    outcome, om = compile_om(run, tiny_onnx, tmp_path, flag)
    assert outcome.ok, outcome.output
    y, m = outputs(om, batch)
    np.testing.assert_array_equal(y, fp32[0])
    np.testing.assert_array_equal(m, fp32[1])


def test_keep_dtype_file_is_recorded_and_keeps_the_node(run, tiny_onnx, tmp_path, batch, fp32):
    keep = tmp_path / "keep.cfg"
    keep.write_text("ReduceMean_2\n", encoding="utf-8")
    outcome, om = compile_om(run, tiny_onnx, tmp_path, f"--keep_dtype={keep}")
    assert outcome.ok, outcome.output
    assert read_fake_om_meta(om)["keep_dtype"] == {"names": ["ReduceMean_2"], "types": []}
    y, m = outputs(om, batch)
    # ReduceMean reads the fp16-stored y but keeps its fp32 output: the mean of y exactly
    np.testing.assert_allclose(m, y.mean(axis=(2, 3)), rtol=1e-6)
    assert not np.array_equal(m, m.astype(np.float16).astype(np.float32))


def test_both_precision_flags_are_e10056(run, tiny_onnx, tmp_path):
    outcome, om = compile_om(run, tiny_onnx, tmp_path, "--precision_mode=force_fp16", "--precision_mode_v2=fp16")
    assert outcome.returncode == 255 and not om.exists()
    assert "E10056: Cannot configure both parameters --precision_mode and --precision_mode_v2 simultaneously." in outcome.output


def test_missing_keep_dtype_file_is_e10001(run, tiny_onnx, tmp_path):
    outcome, om = compile_om(run, tiny_onnx, tmp_path, f"--keep_dtype={tmp_path}/none.cfg")
    assert outcome.returncode == 255 and not om.exists()
    assert (f"E10001: Value {tmp_path}/none.cfg for parameter --keep_dtype is invalid. "
            "Reason: File defined by keep_dtype is not found.") in outcome.output


def test_bf16_modes_are_not_emulated(run, tiny_onnx, tmp_path):
    outcome, om = compile_om(run, tiny_onnx, tmp_path, "--precision_mode=allow_mix_precision_bf16")
    assert outcome.returncode == 255 and not om.exists()
    assert "does not emulate" in outcome.output
