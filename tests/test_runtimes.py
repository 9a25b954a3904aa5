"""The runtime interface (om_pipeline/runtimes/base.py), checked once and run over every runtime
in the registry: a new runtime is one module plus its line in RUNTIMES, and these tests hold it
to what the stages rely on. The toy fixture, the fake toolchain for the .om runtimes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from om_pipeline import runtimes
from om_pipeline.commands import build_run
from om_pipeline.context import Options
from om_pipeline.errors import UserError
from om_pipeline.ray_executor import TASK_RESOURCES
from om_pipeline.recipe import load_recipe_file
from om_pipeline.runtimes import RUNTIMES, FilesJob
from om_pipeline.stages.dataset import load_samples
from om_pipeline.stages.eval import read_outputs
from om_pipeline.ui import Printer

MSAME_ARGS = '    msame_args: [--model, "{om}", --input, "{inputs}", --output, "{output}", --outfmt, BIN]\n'
MSAME_PERF_ARGS = '    msame_args: [--model, "{om}", --output, "{output}", --outfmt, BIN, --loop, "5"]\n'


def with_msame(toy) -> None:
    """The toy recipe runs its .om with ais_bench; give it msame's command lines as well."""
    recipe = toy.recipes / "toy.yaml"
    text = recipe.read_text()
    text = text.replace('"--batchsize={bs}"]\n  eval:', '"--batchsize={bs}"]\n' + MSAME_ARGS + "  eval:")
    text = text.replace('"--batchsize={bs}"]\n    loop: 5', '"--batchsize={bs}"]\n' + MSAME_PERF_ARGS + "    loop: 5")
    assert text.count("msame_args") == 2
    recipe.write_text(text)


def built_run(ompipe, toy, tmp_path: Path, name: str):
    """The toy at bs 1 run end to end by `name` through the CLI, then that Run, as the stages see it."""
    with_msame(toy)
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", "--toolchain", "fake",
                    "--bs", "1", "--runtime", name)
    assert result.code == 0, result.err + result.out
    options = Options(runtime=name, bs=1, toolchain="fake", workdir=tmp_path / "work", data=toy.data)
    return build_run(load_recipe_file(toy.recipes / "toy.yaml"), options, Printer(quiet=True))


@pytest.mark.parametrize("name", list(RUNTIMES))
def test_declares_what_the_stages_and_executors_read(name):
    runtime = RUNTIMES[name]
    assert runtime.name == name
    assert isinstance(runtime.runs_om, bool)
    assert runtime.ray_resource in TASK_RESOURCES
    assert all(tool in ("ais_bench", "msame") for tool in runtime.tools)
    assert bool(runtime.tools) == runtime.runs_om  # a tool of the toolchain runs every .om: its identity is fingerprinted
    assert isinstance(runtime.version(), str) and runtime.version()


@pytest.mark.parametrize("name", list(RUNTIMES))
def test_conformance(ompipe, toy, tmp_path, name):
    run = built_run(ompipe, toy, tmp_path, name)
    runtime = run.runtime
    assert runtime.target == ("ascend" if runtime.runs_om else "onnxruntime")
    assert run.model_stage == ("atc" if runtime.runs_om else "simplify")
    runtime.check()  # bs 1 suits every runtime

    config = run.recipe.stages.infer
    args = runtime.recipe_args(config)
    assert runtime.fingerprint(args).params["tool"] == name
    assert runtime.fingerprint(args).value == runtime.fingerprint(list(args)).value

    # infer_files: every sample's outputs as <id>_<i>.bin, in the runtime's output order and shapes
    _, samples = load_samples(run.model_dir)
    ids = [sample.id for sample in samples]
    staging = tmp_path / "scratch"
    staging.mkdir()
    job = FilesJob(view=None, ids=ids, inputs_root=run.model_dir, out=staging / "out", staging=staging, args=args,
                   log=tmp_path / "conformance.log", quiet=True)
    argv = runtime.files_argv(job)
    assert (argv is None) != runtime.runs_om
    if argv:
        assert all(isinstance(token, str) for token in argv) and str(run.shared_path(run.om_name)) in " ".join(argv)
    info = runtime.infer_files(job)
    assert info.get("samples") == len(ids)
    specs = runtime.outputs()
    produced = {sample_id: read_outputs(job.out, sample_id, specs) for sample_id in ids}
    for outputs in produced.values():
        assert [np.shape(array) for array in outputs] == [tuple(spec.shape) for spec in specs]

    # ... the same numbers the infer stage wrote, and (fp16 aside) ONNX Runtime's
    for sample_id, outputs in produced.items():
        recorded = read_outputs(run.path(run.infer_name), sample_id, specs)
        assert all(np.array_equal(a, b) for a, b in zip(outputs, recorded))
    baseline = runtimes.for_run("onnxruntime", run).session() if not runtime.runs_om else None

    # session: the model in memory gives what the files hold, or a clear refusal
    try:
        session = runtime.session()
    except UserError as refusal:
        assert refusal.hint and "ais_bench" in refusal.hint
    else:
        first = samples[0]
        feeds = [np.fromfile(run.model_dir / "inputs" / spec.name / f"{first.id}.bin", dtype=spec.dtype).reshape(1, *spec.shape)
                 for spec in run.recipe.model.inputs]
        outputs = session(feeds)
        assert all(np.allclose(np.asarray(a)[0], b, rtol=1e-3, atol=1e-3) for a, b in zip(outputs, produced[first.id]))
        if baseline:
            assert all(np.array_equal(a, b) for a, b in zip(outputs, baseline(feeds)))

    # measure: the perf stage's statistics
    perf_staging = tmp_path / "perf"
    perf_staging.mkdir()
    perf_args = runtime.recipe_args(run.recipe.stages.perf)
    stats = runtime.measure(perf_args, perf_staging, tmp_path / "perf.log", None, loop=3)
    assert ("argv" in stats) == runtime.runs_om
    assert stats["fps"] > 0 and stats["batchsize"] == 1 and stats["mean_ms"] > 0
    assert runtime.numerics() in ("fp32", "fp16-emulated")


def test_msame_refuses_a_batch_size_above_one_before_anything_runs(ompipe, toy):
    with_msame(toy)
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", "--toolchain", "fake",
                    "--bs", "4", "--runtime", "msame")
    assert result.code == 1 and "bs 1 models only" in result.err and "--runtime ais_bench" in result.err
    assert not (Path("work") / "toy").exists()


def test_bench_builds_every_run_through_the_checks(ompipe, toy):
    """bench used to build its runs by hand and skip msame's bs-1 rule: now the factory refuses
    the second batch size before the first is measured."""
    with_msame(toy)
    result = ompipe("bench", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", "--toolchain", "fake",
                    "--bs", "1,4", "--runtime", "msame")
    assert result.code == 1 and "bs 1 models only" in result.err
    assert not (Path("work") / "toy" / "results").exists()


def test_an_unknown_runtime_names_the_known_ones(ompipe, toy):
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--runtime", "tensorrt")
    assert result.code == 1 and "unknown runtime 'tensorrt'" in result.err
    assert all(name in result.err for name in RUNTIMES) and "Traceback" not in result.err


def test_the_old_spellings_still_choose_the_runtime(ompipe, toy):
    """--backend and --infer-tool are hidden from --help and mean what they meant."""
    with_msame(toy)
    common = ("--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", "--toolchain", "fake", "--dry-run")
    assert "infer-bs4-onnxruntime" in ompipe("run", "toy", *common, "--backend", "onnxruntime").out
    assert "infer-bs4-ais_bench" in ompipe("run", "toy", *common, "--backend", "ais_bench").out
    assert "infer-bs1-msame" in ompipe("run", "toy", *common, "--bs", "1", "--infer-tool", "msame").out
    help_text = ompipe("run", "--help").out
    assert "--runtime" in help_text and "--backend" not in help_text and "--infer-tool" not in help_text


def test_the_recipe_chooses_the_om_runtime_when_the_ascend_tools_are_present(ompipe, toy):
    with_msame(toy)
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace("  infer:\n", "  infer:\n    tool: msame\n", 1))
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--bs", "1", "--dry-run")
    assert result.code == 0 and "runtime: msame (fake toolchain)" in result.out + result.err
