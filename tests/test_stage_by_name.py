"""`ompipe stage M atc` names the Ascend path: it never answers SKIPPED with exit 0.

Without CANN (the tests' environment: conftest unsets ASCEND_*), naming atc is one clear error
pointing at --toolchain fake; with the fake toolchain the same command plans atc.
"""
from __future__ import annotations

from om_pipeline.context import ASCEND_ONLY_STAGES
from om_pipeline.testing.dry_run import closing_table


def stage(ompipe, toy, name, *extra):
    return ompipe("stage", "toy", name, "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", *extra)


def test_naming_atc_without_cann_is_an_error_pointing_at_the_fake_toolchain(ompipe, toy, tmp_path):
    result = stage(ompipe, toy, "atc")
    assert result.code == 1 and "Traceback" not in result.err
    assert "stage atc runs Ascend's atc, and no CANN environment was found" in result.err
    assert "--toolchain fake" in result.err and "SKIPPED" not in result.out
    assert not (tmp_path / "work" / "toy").exists()  # nothing ran, nothing was written


def test_naming_atc_with_the_onnxruntime_runtime_is_a_contradiction(ompipe, toy):
    result = stage(ompipe, toy, "atc", "--runtime", "onnxruntime")
    assert result.code == 1 and "stage atc is on the Ascend path" in result.err and "SKIPPED" not in result.out


def test_naming_atc_with_the_fake_toolchain_plans_it(ompipe, toy):
    result = stage(ompipe, toy, "atc", "--toolchain", "fake", "--dry-run")
    assert result.code == 0, result.err
    assert closing_table(result.out)["atc-bs4-ascend"] == "RUN"


def test_stages_on_both_paths_still_follow_the_runtime_choice(ompipe, toy):
    """export exists on both paths: without CANN it plans the onnxruntime graph, as before."""
    assert ASCEND_ONLY_STAGES == ("atc",)
    result = stage(ompipe, toy, "export", "--dry-run")
    assert result.code == 0, result.err
    assert "runtime: onnxruntime" in result.out + result.err and "export-bs4-onnxruntime" in closing_table(result.out)
