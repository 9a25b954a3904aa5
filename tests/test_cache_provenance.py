"""A CACHED stage is what rerunning it would give, and a result says what made it (issue 13).

On the toy fixture with the fake toolchain, each test damages the cache one way a user or an
operator would (another toolchain, a re-cloned checkout, a replaced checkpoint, a damaged file
inside a directory output, a moved work directory, a failed rerun, a record of the wrong shape)
and checks that the next run reruns what it must, or stops with exit 1, never shows a stale
result as current.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from om_pipeline.testing.dry_run import closing_table

FAKE = ("--toolchain", "fake")
RESULTS = "work/toy/results/toy_ais_bench_bs4.json"


def run_toy(ompipe, toy, *extra, workdir="work", toolchain=FAKE):
    return ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", workdir, *toolchain, *extra)


def ran(result) -> set[str]:
    return {key for key, status in closing_table(result.out).items() if status == "RUN"}


def edit_recipe(toy, old: str, new: str) -> None:
    recipe = toy.recipes / "toy.yaml"
    text = recipe.read_text()
    assert old in text
    recipe.write_text(text.replace(old, new))


# ---------------------------------------------------------------- 1. toolchain and provenance


def test_fake_toolchain_results_are_never_cached_for_a_real_run(ompipe, toy, tmp_path):
    fake = run_toy(ompipe, toy)
    assert fake.code == 0, fake.err
    results = json.loads((tmp_path / RESULTS).read_text())
    assert results["provenance"] == ["fake toolchain", "emulated fp16"]  # the fake .om computes at force_fp16
    record = json.loads((tmp_path / "work/toy/.ompipe/stages/atc-bs4-ascend.json").read_text())
    assert record["parts"]["tools"]["toolchain"] == "fake"

    real = run_toy(ompipe, toy, "--backend", "ais_bench", "--soc-version", "Ascend310P3", toolchain=("--toolchain", "real"))
    assert real.code == 1, real.out + real.err
    assert "atc not found on PATH" in real.err and "Traceback" not in real.err
    table = closing_table(real.out)
    assert table["atc-bs4-ascend"] == "FAILED"
    assert "toolchain fake -> real" in real.out  # the reason names what changed
    assert not any(status == "CACHED" for key, status in table.items() if key.split("-")[0] in ("atc", "compare", "infer", "eval", "perf"))
    # Nothing the fake made is left looking like the real toolchain's result.
    assert not (tmp_path / "work/toy/om/toy_bs4.om").exists()
    assert not (tmp_path / RESULTS).exists()


def test_provenance_names_random_weights_and_the_fake(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy, "--weights", "random", "--limit", "3").code == 0
    assert json.loads((tmp_path / RESULTS).read_text())["provenance"] == ["fake toolchain", "random weights", "emulated fp16"]
    assert run_toy(ompipe, toy, "--backend", "onnxruntime").code == 0
    onnxruntime = json.loads((tmp_path / "work/toy/results/toy_onnxruntime_bs4.json").read_text())
    assert onnxruntime["provenance"] == []  # ONNX Runtime made the numbers, with the pinned weights


# ---------------------------------------------------------------- 2. patched checkout


def test_a_recloned_checkout_is_patched_again(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    reclone = ompipe("stage", "toy", "clone", "--force", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", *FAKE)
    assert reclone.code == 0, reclone.err
    assert "x.cuda()" in (tmp_path / "work/toy/src/toynet/model.py").read_text()  # pristine upstream
    rerun = run_toy(ompipe, toy, "--bs", "8")
    assert rerun.code == 0, rerun.err  # unpatched, the toy's export would call x.cuda()
    assert "patch" in ran(rerun) and "clone" not in ran(rerun)
    assert "x.cuda()" not in (tmp_path / "work/toy/src/toynet/model.py").read_text()


def test_a_deleted_checkout_is_cloned_and_patched_again(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    shutil.rmtree(tmp_path / "work/toy/src")
    rerun = run_toy(ompipe, toy, "--bs", "8")
    assert rerun.code == 0, rerun.err
    assert {"clone", "patch"} <= ran(rerun)
    again = run_toy(ompipe, toy, "--bs", "8")
    assert set(closing_table(again.out).values()) == {"CACHED"}  # the check itself is stable


# ---------------------------------------------------------------- 3. checkpoint


def replaced(checkpoint) -> str:
    """Overwrite a checkpoint with another state dict of the same shapes; its new sha256."""
    state = torch.load(checkpoint, weights_only=True)
    torch.save({name: value + 0.5 for name, value in state.items()}, checkpoint)
    return hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_a_replaced_cached_checkpoint_is_an_error_naming_both_hashes(ompipe, toy, tmp_path):
    recipe = toy.recipes / "toy.yaml"  # the download cache's copy, pinned by sha256, as most recipes
    recipe.write_text(re.sub(r"    (in_source|git_blob): .*\n", "", recipe.read_text()))
    cached = Path(os.environ["OMPIPE_CACHE"]) / "weights" / "toy.pt"
    cached.parent.mkdir(parents=True)
    shutil.copy(toy.weights, cached)
    assert run_toy(ompipe, toy).code == 0
    cached.write_bytes(cached.read_bytes())  # touched (new mtime), same content: nothing reruns
    touched = run_toy(ompipe, toy)
    assert touched.code == 0 and set(closing_table(touched.out).values()) == {"CACHED"}
    pinned = json.loads((tmp_path / "work/toy/weights.json").read_text())["sha256"]
    actual = replaced(cached)
    rerun = run_toy(ompipe, toy, "--bs", "8")
    assert rerun.code == 1, rerun.out + rerun.err
    assert f"sha256 {actual} is not the recipe's {pinned}" in rerun.err and "Traceback" not in rerun.err
    table = closing_table(rerun.out)
    assert table["weights"] == "FAILED" and "export-bs8-ascend" not in table


def test_a_replaced_checkpoint_in_the_checkout_is_restored_by_patch(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    clean = json.loads((tmp_path / RESULTS).read_text())["metrics"]
    replaced(tmp_path / "work/toy/src/weights/toy.pt")
    rerun = run_toy(ompipe, toy, "--bs", "4")
    assert rerun.code == 0, rerun.err
    assert "patch" in ran(rerun)  # the checkout is reset to the pinned commit, then patched
    assert json.loads((tmp_path / RESULTS).read_text())["metrics"] == clean


# ---------------------------------------------------------------- 5. directory outputs


def test_a_damaged_file_inside_a_directory_output_reruns_its_stage(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    clean = json.loads((tmp_path / RESULTS).read_text())["metrics"]
    damaged = tmp_path / "work/toy/inputs/image/img_000.bin"
    damaged.write_bytes(bytes(reversed(damaged.read_bytes())))  # same size, other values
    plan = run_toy(ompipe, toy, "--dry-run")
    assert "inputs/image/img_000.bin changed" in plan.out
    rerun = run_toy(ompipe, toy)
    assert rerun.code == 0, rerun.err
    assert "preprocess" in ran(rerun)
    assert json.loads((tmp_path / RESULTS).read_text())["metrics"] == clean


def test_files_added_removed_or_truncated_in_a_directory_output_are_named(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    path = tmp_path / "work/toy/infer/ais_bench_bs4/img_003_0.bin"
    original = path.read_bytes()
    extra = path.parent / "extra.bin"
    damages = [
        (lambda: path.write_bytes(original[:5]), "infer/ais_bench_bs4/img_003_0.bin changed"),
        (path.unlink, "infer/ais_bench_bs4/img_003_0.bin is missing"),
        (lambda: extra.write_bytes(b"\0" * 16), "infer/ais_bench_bs4/extra.bin was added"),
    ]
    for damage, reason in damages:
        damage()
        plan = run_toy(ompipe, toy, "--dry-run")
        assert reason in plan.out
        assert closing_table(plan.out)["infer-bs4-ais_bench"] == "RUN"
        path.write_bytes(original)
        extra.unlink(missing_ok=True)
    assert set(closing_table(run_toy(ompipe, toy, "--dry-run").out).values()) == {"CACHED"}


# ---------------------------------------------------------------- 8. moved or copied work directory


def test_a_moved_work_directory_keeps_its_cache_and_works(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    assert not json.loads((tmp_path / "work/toy/weights.json").read_text())["path"].startswith("/")
    (tmp_path / "work").rename(tmp_path / "moved")
    again = run_toy(ompipe, toy, workdir="moved")
    assert again.code == 0, again.err
    assert set(closing_table(again.out).values()) == {"CACHED"}
    bs8 = run_toy(ompipe, toy, "--bs", "8", workdir="moved")
    assert bs8.code == 0, bs8.err


def test_a_copied_work_directory_never_reads_the_original(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    shutil.copytree(tmp_path / "work", tmp_path / "copy", symlinks=True)
    shutil.rmtree(tmp_path / "work")
    bs8 = run_toy(ompipe, toy, "--bs", "8", workdir="copy")
    assert bs8.code == 0, bs8.err
    assert {"clone", "patch", "weights", "preprocess"}.isdisjoint(ran(bs8))
    assert not (tmp_path / "work").exists()


# ---------------------------------------------------------------- 12. stale outputs, malformed records


def test_a_failed_atc_rerun_leaves_no_previous_om_or_results(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    assert (tmp_path / "work/toy/om/toy_bs4.om").is_file() and (tmp_path / RESULTS).is_file()
    edit_recipe(toy, "--input_shape={input_shape}", "--input_shape=images:{bs},3,16,16")
    failed = run_toy(ompipe, toy)
    assert failed.code == 1
    assert not (tmp_path / "work/toy/om/toy_bs4.om").exists()
    assert not (tmp_path / RESULTS).exists()
    assert (tmp_path / "work/toy/onnx/toy_bs4.ascend.sim.onnx").is_file()  # upstream of atc: still current


def test_records_of_the_wrong_shape_are_treated_as_absent(ompipe, toy, tmp_path):
    assert run_toy(ompipe, toy).code == 0
    state = tmp_path / "work/toy/.ompipe"
    record = json.loads((state / "stages/atc-bs4-ascend.json").read_text())
    digests = json.loads((state / "digests.json").read_text())
    broken = [
        ("stages/atc-bs4-ascend.json", "[]"),
        ("stages/atc-bs4-ascend.json", json.dumps({**record, "outputs": list(record["outputs"]), "info": "broken"})),
        ("stages/atc-bs4-ascend.json", '"a string"'),
        ("stages/atc-bs4-ascend.json", json.dumps({**record, "parts": {"params": "x"}})),
        ("digests.json", "[]"),
        ("digests.json", json.dumps({key: "deadbeef" for key in digests})),
    ]
    for where, content in broken:
        (state / where).write_text(content)
        rerun = run_toy(ompipe, toy)
        assert rerun.code == 0, (where, content, rerun.err)
        if where.startswith("stages/"):
            assert "atc-bs4-ascend" in ran(rerun)
        else:
            assert set(closing_table(rerun.out).values()) == {"CACHED"}  # digests are recomputed, nothing reruns


def test_the_real_toolchain_identity_is_the_tools_version_and_path(tmp_path, monkeypatch):
    from om_pipeline.testing.toolchain import FakeToolchain
    from om_pipeline.toolchains import RealToolchain

    identities = []
    for release in ("8.0.RC1", "8.0.RC2"):
        home = tmp_path / release
        (home / "bin").mkdir(parents=True)
        (home / "bin" / "atc").write_text("#!/bin/sh\n")
        (home / "bin" / "atc").chmod(0o755)
        (home / "version.cfg").write_text(f"[version]\nversion={release}\n")
        monkeypatch.setenv("PATH", f"{home / 'bin'}:/usr/bin:/bin")
        monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(home))
        identities.append(RealToolchain().identity("atc"))
    assert identities[0]["atc"] == str(tmp_path / "8.0.RC1/bin/atc") and identities[0]["toolchain"] == "real"
    assert identities[0] != identities[1]
    fake_toolchain = FakeToolchain(tmp_path / "fake-toolchain")
    fake = fake_toolchain.identity("atc")
    assert fake["toolchain"] == "fake" and fake["atc"].startswith("fake ")
    assert fake_toolchain.cann_version() == fake["atc"]  # a sourced set_env.sh does not make the fake look real


def test_the_fake_version_covers_what_the_fake_computes_and_refuses_by(tmp_path, monkeypatch):
    """The fake .om computes through fp16.py and the fake atc refuses by atc_ops.py and its
    table: an edit there changes what the fake makes, so it must change the fake's identity
    (and rerun what the fake made), as an edit of a fake_* module does."""
    import om_pipeline
    from om_pipeline.testing import toolchain

    package = tmp_path / "om_pipeline"
    shutil.copytree(Path(om_pipeline.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(toolchain, "FAKE_SOURCES", package / "testing")
    seen = set()
    for edited in (None, "fp16.py", "atc_ops.py", "data/atc_onnx_ops.json", "testing/fake_atc.py"):
        if edited:
            with open(package / edited, "a", encoding="utf-8") as handle:
                handle.write("\n")
        toolchain.fake_version.cache_clear()
        seen.add(toolchain.fake_version())
    toolchain.fake_version.cache_clear()
    assert len(seen) == 5


def test_the_fake_toolchain_uses_the_cann_8_table_whatever_set_env_sh_was_sourced(tmp_path, monkeypatch):
    from om_pipeline import atc_ops, toolchains
    from om_pipeline.testing.toolchain import FakeToolchain

    (tmp_path / "version.cfg").write_text("[version]\nversion=6.0.1\n")  # a CANN 6 set_env.sh in the shell
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(tmp_path))
    assert atc_ops.chosen_cann(None) == "5"  # the real toolchain: that CANN's table
    toolchains.activate(FakeToolchain(tmp_path / "fake-toolchain"))
    assert atc_ops.chosen_cann(None) == "8" and atc_ops.chosen_cann("5") == "5"
