"""The command line: help, exit codes, list/show/status/doctor."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from om_pipeline import cli

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(ompipe):
    result = ompipe("--help")
    assert result.code == 0
    for command in ("run", "stage", "list", "show", "validate", "status", "doctor", "data"):
        assert re.search(rf"\b{command}\b", result.out), command


def test_usage_error_exits_2(ompipe):
    result = ompipe("run", "toy", "--bs", "eight")
    assert result.code == 2
    assert "Traceback" not in result.err


def test_unknown_recipe_exits_1_with_hint(ompipe):
    result = ompipe("run", "no-such-model")
    assert result.code == 1
    assert "no recipe named 'no-such-model'" in result.err and "hint:" in result.err


def test_internal_error_exits_3_with_versions(ompipe, monkeypatch):
    monkeypatch.setattr(cli.commands, "list_recipes", lambda dirs: 1 / 0)
    result = ompipe("list")
    assert result.code == 3
    assert "ZeroDivisionError" in result.err and "versions:" in result.err and "onnxruntime:" in result.err


def test_list_show_and_status(ompipe, toy):
    assert "toy " in ompipe("list", "--recipes", toy.recipes).out
    shown = ompipe("show", "toy", "--recipes", toy.recipes)
    assert shown.code == 0 and "precision_mode: force_fp16" in shown.out  # defaults filled in
    status = ompipe("status", "toy", "--recipes", toy.recipes, "--data", toy.data, "--backend", "onnxruntime")
    assert status.code == 0 and "never" in status.out


def test_status_prints_the_plan_of_a_run_that_executes_nothing(ompipe, toy):
    common = ("--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake")
    assert ompipe("run", "toy", *common, "--to", "preprocess").code == 0
    status = ompipe("status", "toy", *common, "--weights", "absent.pt")
    assert status.code == 0, status.err
    lines = {line.split()[1]: line.split(None, 2)[::2] for line in status.out.splitlines() if len(line.split()) > 2}
    assert lines["clone"][0] == "CACHED" and re.fullmatch(r"up to date \(last run: \d{4}-.+\)", lines["clone"][1])
    assert lines["weights"] == ["RUN", "cannot plan yet: --weights absent.pt: no such file"]
    assert lines["export-bs4-ascend"] == ["RUN", "stale: upstream weights will run (last run: never)"]
    assert lines["atc-bs4-ascend"] == ["RUN", "stale: upstream simplify-bs4-ascend will run (last run: never)"]
    assert lines["dataset"][0] == "CACHED"


def test_doctor_with_the_fake_toolchain(ompipe, toy):
    result = ompipe("doctor", "toy", "--recipes", toy.recipes, "--toolchain", "fake", "--data", toy.data)
    assert "soc_version" in result.out and "Ascend310P3" in result.out
    assert "disk" in result.out and "12 samples" in result.out
    assert "FAIL" not in result.out, result.out


def test_doctor_without_cann_says_how_to_fix(ompipe, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    result = ompipe("doctor")
    assert result.code == 1
    assert "fix: source /usr/local/Ascend/ascend-toolkit/set_env.sh" in result.out


def test_packaging_lists_every_subpackage():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")
               if "fake_python" not in p.parts}
    assert on_disk <= declared, on_disk - declared


@pytest.mark.parametrize("command", ["run", "stage", "status", "doctor", "validate", "show", "list"])
def test_every_command_has_help(ompipe, command):
    result = ompipe(command, "--help")
    assert result.code == 0 and "Usage" in result.out


def test_an_option_the_recipe_cannot_use_is_an_error_not_ignored(ompipe, toy):
    recipe = toy.recipes / "toy.yaml"
    text = recipe.read_text()
    start, end = text.index("  weights:\n"), text.index("  dataset:\n")
    recipe.write_text(text[:start] + text[end:])
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--weights", "random", "--dry-run")
    assert result.code == 1 and "--weights given, but recipe toy has no weights stage" in result.err


def test_doctor_flags_a_work_dir_path_ais_bench_would_refuse(ompipe):
    result = ompipe("doctor", "--toolchain", "fake", "--workdir", "my work")
    assert result.code == 1 and "work dir path" in result.out and "' '" in result.out


def test_doctor_estimates_one_chunk_of_disk_for_a_chunked_recipe(ompipe, tmp_path):
    """PointRend holds 8 images of inputs and logits at a time (infer.chunk), not the dataset's."""
    from om_pipeline.data.pointrend_synth import synthesize

    data = synthesize(tmp_path / "cityscapes", images=10, size=(64, 128))
    result = ompipe("doctor", "pointrend", "--toolchain", "fake", "--data", data)
    (line,) = [line for line in result.out.splitlines() if line.split()[1:2] == ["disk"]]
    per_image = (3 + 19) * 1024 * 2048 * 4
    assert f"~{8 * per_image / 2**30:.2f} GiB at a time for 10 samples in chunks of 8" in line
