"""The fake ais_bench refuses what the real one refuses (issue 19): a corpus of command lines
gives the same answers (accepted, or exit status + message + [ERROR] lines) from the fake and
from the real parser, and every ais_bench command line our recipes generate is accepted.

With OMPIPE_UPSTREAM_AIS_BENCH (a checkout of the ais_bench source at its last argparse
generation, e.g. Yanguan619/aclruntime at 8da7f645) the real parser runs, its compiled
`aclruntime` stubbed (om_pipeline.testing.ais_bench_parity). Without it the corpus is checked
against the answers recorded from that parser by scripts/record_ais_bench_answers.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from om_pipeline.recipe import builtin_recipe_dir, find_recipe
from om_pipeline.testing import ais_bench_parity as parity
from om_pipeline.testing.dry_run import flags, planned_commands
from om_pipeline.testing.fake_ais_bench_args import PATH_ILLEGAL
from om_pipeline.tools import execute

UPSTREAM = os.environ.get("OMPIPE_UPSTREAM_AIS_BENCH")
needs_upstream = pytest.mark.skipif(not UPSTREAM, reason="set OMPIPE_UPSTREAM_AIS_BENCH to an ais_bench checkout")
ANSWERS = Path(__file__).parents[1] / "fixtures" / "ais_bench" / "answers.json"
# The options the recipes' ais_bench commands use (tests/recipes/test_*_recipe.py).
RECIPE_OPTIONS = ("--model", "--input", "--output", "--output_dirname", "--outfmt", "--loop", "--batchsize")


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return parity.tiny_onnx_bytes()


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(ANSWERS.read_text(encoding="utf-8"))


def case_root(tmp_path_factory, name: str) -> Path:
    root = tmp_path_factory.mktemp(name)
    if PATH_ILLEGAL.search(str(root)):  # the answers would all be "illegal path", for both tools
        pytest.skip(f"ais_bench refuses any path under {root} (legal: A-Z a-z 0-9 _ - / .); set TMPDIR")
    return root


@pytest.fixture(scope="module")
def fake_answers(tmp_path_factory, onnx_bytes) -> dict[str, parity.Answer]:
    jobs = parity.build_cases(parity.CORPUS, case_root(tmp_path_factory, "fake"), onnx_bytes)
    return dict(zip((c.name for c in parity.CORPUS), parity.run_fake(jobs)))


def differences(expected: dict[str, parity.Answer], actual: dict[str, parity.Answer], argparse_messages: bool = True) -> list[str]:
    """One line per case whose answers differ. argparse words its own messages differently
    between Python versions; `argparse_messages=False` compares only the status for those."""
    found = []
    for name, want in expected.items():
        got = actual[name]
        if not argparse_messages and want.exit == 2 == got.exit:
            want, got = dataclasses.replace(want, error=""), dataclasses.replace(got, error="")
        if want != got:
            found.append(f"{name}: real {want} / fake {got}")
    return found


def test_the_corpus_covers_every_option_our_recipes_use_accepted_and_refused(recorded):
    names = [case.name for case in parity.CORPUS]
    assert len(names) >= 40 and len(set(names)) == len(names)
    answers = {name: parity.Answer.from_dict(a) for name, a in recorded["answers"].items()}
    for option in RECIPE_OPTIONS:
        uses = [c.name for c in parity.CORPUS if any(a == option or a.startswith(option + "=") for a in c.argv)]
        assert any(answers[n].accepted for n in uses), f"no accepted case uses {option}"
        assert any(not answers[n].accepted for n in uses), f"no refused case uses {option}"
    statuses = {(a.accepted, a.exit) for a in answers.values()}
    assert statuses == {(True, 0), (False, 1), (False, 2)}


def test_the_recorded_answers_name_their_source_and_match_the_corpus(recorded):
    assert recorded["source"]["repo"] == parity.UPSTREAM_REPO and recorded["source"]["commit"] == parity.UPSTREAM_COMMIT
    assert recorded["source"]["path"] == parity.TOOL_SUBDIR
    assert list(recorded["answers"]) == [case.name for case in parity.CORPUS], "rerun scripts/record_ais_bench_answers.py"


def test_the_fake_gives_the_recorded_answers(recorded, fake_answers):
    expected = {name: parity.Answer.from_dict(a) for name, a in recorded["answers"].items()}
    same_python = recorded["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert differences(expected, fake_answers, argparse_messages=same_python) == []


@pytest.fixture(scope="module")
def tool_dir() -> Path:
    return parity.find_tool_dir(UPSTREAM)


@pytest.mark.upstream
@needs_upstream
def test_the_fake_gives_the_real_parsers_answers(tool_dir, fake_answers, onnx_bytes, tmp_path_factory):
    real = parity.run_upstream(tool_dir, parity.build_cases(parity.CORPUS, case_root(tmp_path_factory, "real"), onnx_bytes))
    assert differences(dict(zip(fake_answers, real)), fake_answers) == []
    print(f"\n{len(real)} command lines, the same answers from both: {sum(a.accepted for a in real)} accepted, "
          f"{sum(a.exit == 2 for a in real)} refused by argparse, {sum(a.exit == 1 for a in real)} by the tool's checks")


# ---------------------------------------------------------------------------------------------
# The command lines our recipes generate


DATASETS = {  # how tests/recipes/test_<model>_recipe.py make each model's dataset: module, function, options
    "centernet": ("om_pipeline.data.centernet_tinycoco", "write_tiny_coco", {"images": 2}),
    "gfocalv2": ("om_pipeline.data.gfocalv2_tinycoco", "write_tiny_coco", {"images": 4}),
    "pointrend": ("om_pipeline.data.pointrend_synth", "synthesize", {"images": 2, "size": (1024, 2048)}),
    "superpoint": ("om_pipeline.data.synth_hpatches", "synthesize", {"sequences": 1, "seed": 0}),
    "transpose": ("om_pipeline.data.transpose_synth", "synthesize", {"images": 2, "seed": 0}),
}


def make_dataset(model: str, directory: Path) -> None:
    assert model in DATASETS, f"add how to make {model}'s dataset to DATASETS"
    module, function, options = DATASETS[model]
    getattr(importlib.import_module(module), function)(directory, **options)


def builtin_models() -> list[str]:
    return sorted(path.stem for path in builtin_recipe_dir().glob("*.yaml"))


def dry_run(argv: list[str], cwd: Path) -> list[list[str]]:
    """`ompipe run ... --dry-run` in-process (as the `ompipe` fixture runs it): its commands."""
    from om_pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setenv("OMPIPE_CACHE", str(cwd / "cache"))
        for name in ("OMPIPE_RECIPES", "OMPIPE_TOOLCHAIN"):
            patch.delenv(name, raising=False)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        finally:
            execute.set_toolchain_env({})
    assert code == 0, err.getvalue() + out.getvalue()
    return planned_commands(out.getvalue())


def recipe_runs(all_batch_sizes: bool) -> list[tuple[str, int, tuple[str, ...]]]:
    """(model, bs, extra options): every model, its batch sizes (or only its default), with
    its own infer tool, and ais_bench as the alternative where a recipe's tool is msame."""
    runs = []
    for model in builtin_models():
        recipe = find_recipe(model).recipe
        tools = [()] if recipe.stages.infer.tool == "ais_bench" else [("--infer-tool", "ais_bench")]
        for bs in recipe.batch_sizes if all_batch_sizes else [recipe.bs]:
            runs += [(model, bs, extra) for extra in tools]
    return runs


def ais_bench_argv(all_batch_sizes: bool, root: Path) -> list[tuple[str, list[str]]]:
    """(label, ais_bench options) of every ais_bench command the dry runs show."""
    commands = []
    for model, bs, extra in recipe_runs(all_batch_sizes):
        data = root / "data" / model
        if not data.exists():
            make_dataset(model, data)
        cwd = root / f"{model}-bs{bs}"
        cwd.mkdir()
        argv = ["run", model, "--dry-run", "--bs", str(bs), *extra, "--toolchain", "fake", "--data", str(data), "--workdir", "work"]
        ais = [c[3:] for c in dry_run(argv, cwd) if c[1:3] == ["-m", "ais_bench"]]
        assert len(ais) >= 2, f"{model} bs{bs}: expected infer and perf ais_bench commands, got {ais}"
        commands += [(f"{model} bs{bs} #{n}", options) for n, options in enumerate(ais)]
    return commands


def materialize(model: str, options: list[str], onnx_bytes: bytes) -> None:
    """What the stages before it leave for an ais_bench command: the .om (a stand-in with the
    recipe's input names, dtypes and batch size, each sample a few bytes so batches stay small),
    one input file per --input directory, the --output directory (0o750, as stages/infer.py
    makes it)."""
    recipe = find_recipe(model).recipe
    given = flags(options)
    bs = int(Path(given["model"]).stem.rsplit("_bs", 1)[1])
    inputs = [{"name": t.name, "shape": [bs, 2, 2], "dtype": t.dtype} for t in recipe.model.inputs]
    meta = {**parity.TINY_META, "inputs": inputs}
    if not Path(given["model"]).exists():
        parity.write_om(Path(given["model"]), meta, onnx_bytes)
    for index, directory in enumerate(given.get("input", "").split(",") if "input" in given else []):
        spec = inputs[index]
        parity.private_dir(Path(directory))
        sample = 4 * np.dtype(spec["dtype"]).itemsize
        parity.private_file(Path(directory) / "0.bin", bytes(sample))
    if "output" in given:
        parity.private_dir(Path(given["output"]))


@pytest.fixture(scope="module")
def recipe_jobs(tmp_path_factory, onnx_bytes) -> list[tuple[str, list[str], Path]]:
    all_batch_sizes = bool(UPSTREAM)  # all of them against the real parser; the defaults otherwise
    root = case_root(tmp_path_factory, "recipes")
    jobs = []
    for label, options in ais_bench_argv(all_batch_sizes, root):
        materialize(label.split()[0], options, onnx_bytes)
        cwd = parity.private_dir(root / "cwd" / label.replace(" ", "-").replace("#", ""))  # a fresh staging dir
        jobs.append((label, options, cwd))
    return jobs


def test_the_fake_accepts_every_ais_bench_command_our_recipes_generate(recipe_jobs):
    answers = parity.run_fake([(options, cwd) for _, options, cwd in recipe_jobs])
    refused = [f"{label}: {options} -> {answer}" for (label, options, _), answer in zip(recipe_jobs, answers) if not answer.accepted]
    assert refused == [] and {label.split()[0] for label, _, _ in recipe_jobs} == set(builtin_models())


@pytest.mark.upstream
@needs_upstream
def test_the_real_parser_accepts_every_ais_bench_command_our_recipes_generate(tool_dir, recipe_jobs):
    answers = parity.run_upstream(tool_dir, [(options, cwd) for _, options, cwd in recipe_jobs])
    refused = [f"{label}: {options} -> {answer}" for (label, options, _), answer in zip(recipe_jobs, answers) if not answer.accepted]
    assert refused == []
    print(f"\n{len(recipe_jobs)} generated ais_bench command lines, all accepted by the real parser")
