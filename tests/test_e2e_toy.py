"""End to end on the toy fixture: a tiny upstream git repo, our patch, a recipe, generated
images, and the fake Ascend toolchain (real runner, real argv, real parsing, real metric)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from om_pipeline import fp16
from om_pipeline.testing import toy_plugin
from om_pipeline.testing.dry_run import closing_table
from om_pipeline.tools import execute

FAKE = ("--toolchain", "fake")


def run_toy(ompipe, toy, *extra):
    return ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", *FAKE, *extra)


def expected_metrics(toy, workdir: Path, bs: int) -> dict[str, float]:
    """The metric computed directly: the plugin's preprocessing, ONNX Runtime on the exported
    model computing as the .om does (ATC's default force_fp16, emulated), one sample at a time
    (no batching, no files, no fake tools)."""
    session = fp16.session(onnx.load(str(workdir / f"toy/onnx/toy_bs{bs}.ascend.sim.onnx")), fp16.Precision())
    settings = toy_plugin.Settings()
    evaluator = toy_plugin.evaluator(toy.data, settings)
    for sample in toy_plugin.list_samples(toy.data, settings):
        (image,) = toy_plugin.preprocess(sample, settings)
        batch = np.repeat(image[None], bs, axis=0)
        evaluator.add(sample, [session.run(None, {"image": batch})[0][0]])
    return evaluator.result()


def test_full_run_with_fake_toolchain_then_all_cached(ompipe, toy, tmp_path):
    first = run_toy(ompipe, toy)
    assert first.code == 0, first.err + first.out
    assert set(closing_table(first.out).values()) == {"RUN"}
    assert len(closing_table(first.out)) == 12  # every stage, atc, compare and ais_bench included
    results = json.loads((tmp_path / "work/toy/results/toy_ais_bench_bs4.json").read_text())
    expected = expected_metrics(toy, tmp_path / "work", 4)
    assert results["metrics"]["top1"] == pytest.approx(expected["top1"], abs=0)
    assert results["metrics"]["mean_confidence"] == pytest.approx(expected["mean_confidence"], rel=1e-6)
    assert results["argv"]["atc"][0] == "atc" and "--input_shape=image:4,3,16,16" in results["argv"]["atc"]
    assert results["argv"]["infer"][1:3] == ["-m", "ais_bench"]
    assert results["perf"]["fps"] > 0 and results["perf"]["batchsize"] == 4
    assert results["compare"]["rungs"] == ["pytorch", "onnx", "simplified onnx", "om (fp16 emulated)"]
    assert 0.999 < results["compare"]["stats"]["om (fp16 emulated)"]["logits"]["cosine"] < 1
    assert results["compare"]["stats"]["simplified onnx"]["logits"]["cosine"] == pytest.approx(1, abs=1e-6)
    assert results["precision"] == "fp16-emulated" and "emulated fp16" in results["provenance"]
    assert results["weights"]["verified_by"] == "sha256" and not results["random_weights"]  # the toy pins both; sha256 is checked first
    assert (tmp_path / "work/toy/om/toy_bs4.om").is_file()
    assert not (tmp_path / "work/toy/.staging").exists() or not any((tmp_path / "work/toy/.staging").iterdir())
    assert "$ atc --framework=5" in (tmp_path / "work/toy/logs/atc-bs4-ascend.log").read_text().splitlines()[0]

    second = run_toy(ompipe, toy)
    assert second.code == 0
    assert set(closing_table(second.out).values()) == {"CACHED"}
    assert json.loads((tmp_path / "work/toy/results/toy_ais_bench_bs4.json").read_text())["metrics"] == results["metrics"]


def edit_recipe(toy, old: str, new: str) -> None:
    recipe = toy.recipes / "toy.yaml"
    text = recipe.read_text()
    assert old in text
    recipe.write_text(text.replace(old, new))


def test_changed_parameter_reruns_exactly_the_downstream_stages(ompipe, toy):
    assert run_toy(ompipe, toy).code == 0
    edit_recipe(toy, "      - --log=error\n", "      - --log=info\n")
    rerun = run_toy(ompipe, toy)
    assert rerun.code == 0
    ran = {k for k, v in closing_table(rerun.out).items() if v == "RUN"}
    assert ran == {"atc-bs4-ascend", "compare-bs4-ais_bench", "infer-bs4-ais_bench", "eval-bs4-ais_bench", "perf-bs4-ais_bench"}
    edit_recipe(toy, "  eval: {}", "  eval: {params: {labels: labels.json}}")  # the default, stated: params changed
    rerun = run_toy(ompipe, toy)
    assert {k for k, v in closing_table(rerun.out).items() if v == "RUN"} == {"eval-bs4-ais_bench"}


def test_dry_run_executes_nothing_and_shows_argv(ompipe, toy, tmp_path):
    calls = []
    real = execute._executor

    def spy(request):
        calls.append(request.argv)
        return real(request)

    with execute.swapped(spy):
        result = run_toy(ompipe, toy, "--dry-run")
    assert result.code == 0, result.err
    assert [argv[:2] for argv in calls] == [("npu-smi", "info")]  # only the soc_version probe
    assert not (tmp_path / "work/toy/src").exists() and not (tmp_path / "work/toy/.ompipe/stages").exists()
    assert "$ atc --framework=5 --model=" in result.out
    assert "--soc_version=Ascend310P3 --log=error" in result.out
    assert " -m ais_bench --model=" in result.out and "--batchsize=4" in result.out
    assert set(closing_table(result.out).values()) == {"RUN"}


def test_check_exits_1_when_something_would_run(ompipe, toy):
    assert run_toy(ompipe, toy, "--check").code == 1
    assert run_toy(ompipe, toy).code == 0
    assert run_toy(ompipe, toy, "--check").code == 0


def test_stage_command_runs_only_what_the_stage_needs(ompipe, toy):
    result = ompipe("stage", "toy", "atc", "--bs", "8", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", *FAKE)
    assert result.code == 0, result.err
    ran = {k for k, v in closing_table(result.out).items() if v == "RUN"}
    assert ran == {"clone", "patch", "weights", "export-bs8-ascend", "simplify-bs8-ascend", "atc-bs8-ascend"}


def test_onnxruntime_backend_gives_the_same_metric(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    result = run_toy(ompipe, toy, "--backend", "onnxruntime")
    assert result.code == 0, result.err
    ais = json.loads((tmp_path / "work/toy/results/toy_ais_bench_bs4.json").read_text())["metrics"]
    ort = json.loads((tmp_path / "work/toy/results/toy_onnxruntime_bs4.json").read_text())["metrics"]
    assert ort["top1"] == ais["top1"]
    assert ort["mean_confidence"] == pytest.approx(ais["mean_confidence"], rel=1e-3)  # fp32 vs the .om's fp16
    assert ort["mean_confidence"] != ais["mean_confidence"]
    assert closing_table(result.out)["clone"] == "CACHED"  # backend-independent stages are shared


def test_onnxruntime_fp16_preview_gives_the_om_metric_beside_fp32(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    assert run_toy(ompipe, toy, "--backend", "onnxruntime").code == 0
    result = run_toy(ompipe, toy, "--backend", "onnxruntime", "--precision", "fp16")
    assert result.code == 0, result.err
    table = closing_table(result.out)
    assert table["infer-bs4-onnxruntime-fp16"] == table["eval-bs4-onnxruntime-fp16"] == "RUN"
    assert table["perf-bs4-onnxruntime-fp16"] == "SKIPPED" and table["export-bs4-onnxruntime"] == "CACHED"
    results = tmp_path / "work/toy/results"
    ais = json.loads((results / "toy_ais_bench_bs4.json").read_text())
    fp32 = json.loads((results / "toy_onnxruntime_bs4.json").read_text())
    half = json.loads((results / "toy_onnxruntime_bs4_fp16.json").read_text())
    assert (fp32["precision"], half["precision"], ais["precision"]) == ("fp32", "fp16-emulated", "fp16-emulated")
    assert fp32["provenance"] == [] and half["provenance"] == ["emulated fp16"]
    assert half["metrics"]["mean_confidence"] == pytest.approx(ais["metrics"]["mean_confidence"], rel=1e-6)
    assert half["metrics"]["mean_confidence"] != fp32["metrics"]["mean_confidence"]
    assert half["compare"]["rungs"] == ["pytorch", "onnx", "simplified onnx", "onnx (fp16 emulated)"]
    assert (tmp_path / "work/toy/infer/onnxruntime_bs4_fp16").is_dir() and (tmp_path / "work/toy/infer/onnxruntime_bs4").is_dir()


def test_fp16_preview_needs_the_onnxruntime_backend(ompipe, toy):
    result = run_toy(ompipe, toy, "--precision", "fp16")
    assert result.code == 1 and "--runtime onnxruntime" in result.err and "Traceback" not in result.err


def test_random_weights_are_marked(ompipe, toy, tmp_path):
    result = run_toy(ompipe, toy, "--weights", "random", "--limit", "5")
    assert result.code == 0, result.err
    assert "random weights" in result.out
    results = json.loads((tmp_path / "work/toy/results/toy_ais_bench_bs4.json").read_text())
    assert results["random_weights"] is True and results["samples"] == 5


def test_source_without_the_weights_blob(ompipe, toy, tmp_path):
    """A snapshot whose big files are absent clones fine; the weights stage names the file."""
    blob = subprocess.run(["git", "-C", toy.upstream, "rev-parse", "HEAD:weights/toy.pt"], capture_output=True, text=True).stdout.strip()
    mirror = tmp_path / "mirror"
    subprocess.run(["git", "clone", "-q", "--bare", toy.upstream, mirror], check=True)
    (mirror / "objects" / blob[:2] / blob[2:]).unlink()
    failed = run_toy(ompipe, toy, "--source", mirror)
    assert failed.code == 1
    assert "weights/toy.pt is absent from the upstream checkout" in failed.err
    assert "--weights random" in failed.err and "Traceback" not in failed.err
    assert run_toy(ompipe, toy, "--source", mirror, "--weights", "random").code == 0
    assert (mirror / "objects" / blob[:2]).exists() is False or not (mirror / "objects" / blob[:2] / blob[2:]).exists()


def test_failed_atc_shows_the_tool_error_and_keeps_no_om(ompipe, toy, tmp_path):
    edit_recipe(toy, "--input_shape={input_shape}", "--input_shape=images:{bs},3,16,16")
    result = run_toy(ompipe, toy)
    assert result.code == 1
    assert "images" in result.err and "--input_shape" in result.err
    assert not (tmp_path / "work/toy/om").exists()


def wait_until_atc_is_under_way(process: subprocess.Popen, log: Path) -> None:
    """Poll the condition (atc's start line in its log), not a fixed sleep; give up after 120 s
    or when ompipe ends first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and "ATC start working" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)


def test_sigkill_halfway_is_rerun_not_taken_as_done(toy, tmp_path):
    """Kill the whole ompipe process while atc runs; the next run must redo atc."""
    env = {**os.environ, "OMPIPE_FAKE_DELAY": "30", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "om_pipeline.cli", "run", "toy", "--recipes", str(toy.recipes), "--data", str(toy.data),
            "--workdir", str(tmp_path / "work"), *FAKE]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_until_atc_is_under_way(process, tmp_path / "work/toy/logs/atc-bs4-ascend.log")
    assert process.poll() is None, "ompipe ended before atc was under way"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "work/toy/om/toy_bs4.om").exists()
    assert not (tmp_path / "work/toy/.ompipe/stages/atc-bs4-ascend.json").exists()
    env.pop("OMPIPE_FAKE_DELAY")
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    rows = closing_table(rerun.stdout)
    assert rows["atc-bs4-ascend"] == "RUN" and rows["export-bs4-ascend"] == "CACHED"


def test_precision_mode_is_recorded_and_passed_when_not_the_default(ompipe, toy, tmp_path):
    edit_recipe(toy, "  atc:\n    args:", "  atc:\n    precision_mode: must_keep_origin_dtype\n    args:")
    result = run_toy(ompipe, toy, "--dry-run")
    assert "--log=error --precision_mode=must_keep_origin_dtype" in result.out
    assert run_toy(ompipe, toy).code == 0
    results = json.loads((tmp_path / "work/toy/results/toy_ais_bench_bs4.json").read_text())
    assert results["atc"]["precision_mode"] == "must_keep_origin_dtype"


def test_files_beside_the_recipe_are_inputs_of_atc(ompipe, toy):
    (toy.recipes / "toy").mkdir(exist_ok=True)
    (toy.recipes / "toy" / "fusion_switch.cfg").write_text("ConvReluFusionPass:off\n")
    edit_recipe(toy, "      - --log=error\n", "      - --log=error\n      - --fusion_switch_file={recipe_dir}/toy/fusion_switch.cfg\n")
    first = run_toy(ompipe, toy)
    assert first.code == 0, first.err
    (toy.recipes / "toy" / "fusion_switch.cfg").write_text("ConvReluFusionPass:on\n")
    rerun = run_toy(ompipe, toy)
    assert {k for k, v in closing_table(rerun.out).items() if v == "RUN"} == {
        "atc-bs4-ascend", "compare-bs4-ais_bench", "infer-bs4-ais_bench", "eval-bs4-ais_bench", "perf-bs4-ais_bench"}


ASCEND_ONLY_PLUGIN = '''
import onnx
from om_pipeline.testing import toy_plugin
from om_pipeline.testing.toy_plugin import Settings, evaluator, list_samples, preprocess, torch_forward


def export(ctx):
    toy_plugin.export(ctx)
    if ctx.target == "ascend":  # as CenterNet's DeformableConv2D: an op only atc knows
        model = onnx.load(str(ctx.out))
        for node in model.graph.node:
            if node.op_type == "Relu":
                node.op_type = "NPUMish"  # registered by the CANN plugins (ai.onnx 11-18)
        onnx.save(model, str(ctx.out))
'''


def test_fake_atc_runs_the_standard_op_twin_of_an_ascend_only_graph(ompipe, toy, tmp_path):
    (toy.recipes / "toy_ascend.py").write_text(ASCEND_ONLY_PLUGIN)
    edit_recipe(toy, "plugin: om_pipeline.testing.toy_plugin", "plugin: file:toy_ascend.py")
    edit_recipe(toy, "  simplify:\n    tool: onnxsim\n", "")
    result = run_toy(ompipe, toy)
    assert result.code == 0, result.err
    assert "NPUMish" in [n.op_type for n in __import__("onnx").load(str(tmp_path / "work/toy/onnx/toy_bs4.ascend.onnx")).graph.node]
    compare = json.loads((tmp_path / "work/toy/results/compare_ais_bench_bs4.json").read_text())
    assert compare["rungs"] == ["pytorch", "om (fp16 emulated)"]  # the Ascend graph is no ONNX Runtime rung
    ort = run_toy(ompipe, toy, "--backend", "onnxruntime")
    assert ort.code == 0, ort.err
    ais = json.loads((tmp_path / "work/toy/results/toy_ais_bench_bs4.json").read_text())["metrics"]
    assert json.loads((tmp_path / "work/toy/results/toy_onnxruntime_bs4.json").read_text())["metrics"]["top1"] == ais["top1"]


def test_msame_as_the_inference_tool(ompipe, toy, tmp_path):
    """GFocalV2's guide runs msame (bs 1, TXT outputs): same metric as ais_bench and ONNX Runtime."""
    edit_recipe(toy, '  infer:\n    args: ["--model={om}", "--input={inputs}", "--output={output}", "--outfmt=BIN", "--batchsize={bs}"]',
                '  infer:\n    args: ["--model={om}", "--input={inputs}", "--output={output}", "--outfmt=BIN", "--batchsize={bs}"]\n'
                '    msame_args: [--model, "{om}", --input, "{inputs}", --output, "{output}", --outfmt, TXT]')
    edit_recipe(toy, '    args: ["--model={om}", "--loop=20", "--batchsize={bs}"]',
                '    args: ["--model={om}", "--loop=20", "--batchsize={bs}"]\n    msame_args: [--model, "{om}", --loop, "20"]')
    assert run_toy(ompipe, toy, "--bs", "4", "--infer-tool", "msame").code == 1  # msame runs bs 1 only
    result = run_toy(ompipe, toy, "--bs", "1", "--infer-tool", "msame")
    assert result.code == 0, result.err
    assert closing_table(result.out)["infer-bs1-msame"] == "RUN"
    results = json.loads((tmp_path / "work/toy/results/toy_msame_bs1.json").read_text())
    assert results["argv"]["infer"][0] == "msame" and results["argv"]["infer"][-2:] == ["--outfmt", "TXT"]
    assert results["perf"]["fps"] > 0 and results["tool"] == "msame"
    assert len(list((tmp_path / "work/toy/infer/msame_bs1").glob("*_0.txt"))) == 12
    assert run_toy(ompipe, toy, "--bs", "1").code == 0
    ais = json.loads((tmp_path / "work/toy/results/toy_ais_bench_bs1.json").read_text())["metrics"]
    assert results["metrics"]["top1"] == ais["top1"]
    assert results["metrics"]["mean_confidence"] == pytest.approx(ais["mean_confidence"], abs=1e-5)  # TXT keeps 6 digits


NOISY_TORCH_PLUGIN = '''
import numpy as np
from om_pipeline.testing import toy_plugin
from om_pipeline.testing.toy_plugin import Settings, evaluator, export, list_samples, preprocess


def torch_forward(ctx):
    forward = toy_plugin.torch_forward(ctx)
    return lambda arrays: [-output for output in forward(arrays)]  # as a precision collapse would
'''


def test_golden_comparison_stops_the_run_before_the_dataset_wide_evaluation(ompipe, toy, tmp_path):
    (toy.recipes / "toy_noisy.py").write_text(NOISY_TORCH_PLUGIN)
    edit_recipe(toy, "plugin: om_pipeline.testing.toy_plugin", "plugin: file:toy_noisy.py")
    result = run_toy(ompipe, toy)
    assert result.code == 1
    assert "golden comparison out of tolerance" in result.err and "onnx logits: cosine -1.000000 < 0.999" in result.err
    assert closing_table(result.out)["compare-bs4-ais_bench"] == "FAILED"
    assert not (tmp_path / "work/toy/infer").exists()
    log = tmp_path / "work/toy/logs/compare-bs4-ais_bench.log"
    assert str(log) in result.err and '"cosine": -' in log.read_text()  # the hint points at numbers that exist


def test_ctrl_c_discards_the_stage_in_progress(toy, tmp_path):
    env = {**os.environ, "OMPIPE_FAKE_DELAY": "30", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "om_pipeline.cli", "run", "toy", "--recipes", str(toy.recipes), "--data", str(toy.data),
            "--workdir", str(tmp_path / "work"), *FAKE]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_until_atc_is_under_way(process, tmp_path / "work/toy/logs/atc-bs4-ascend.log")
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "atc-bs4-ascend" in out and "interrupted" in out  # the closing table names the stage
    assert not (tmp_path / "work/toy/om").exists() and not (tmp_path / "work/toy/.staging/atc-bs4-ascend").exists()


def test_the_guides_output_dirname_names_the_result_directory(ompipe, toy, tmp_path):
    edit_recipe(toy, '"--outfmt=BIN", "--batchsize={bs}"]', '"--outfmt=BIN", "--batchsize={bs}", --output_dirname, "dumpout_bs{bs}"]')
    result = run_toy(ompipe, toy)
    assert result.code == 0, result.err
    assert len(list((tmp_path / "work/toy/infer/ais_bench_bs4").glob("*_0.bin"))) == 12


def test_evaluator_artifacts_are_kept_beside_the_metrics(ompipe, toy, tmp_path):
    (toy.recipes / "toy_keep.py").write_text('''
from om_pipeline.testing import toy_plugin
from om_pipeline.testing.toy_plugin import Settings, export, list_samples, preprocess, torch_forward


class Keeping(toy_plugin.Top1):
    def artifacts(self):
        return {"per_sample": {"count": self.count}}


def evaluator(data, settings):
    return Keeping()
''')
    edit_recipe(toy, "plugin: om_pipeline.testing.toy_plugin", "plugin: file:toy_keep.py")
    assert run_toy(ompipe, toy, "--backend", "onnxruntime").code == 0
    kept = json.loads((tmp_path / "work/toy/results/eval_onnxruntime_bs4/per_sample.json").read_text())
    assert kept == {"count": 12}
