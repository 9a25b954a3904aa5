"""The weights stage through `ompipe run` on the toy fixture: a checkpoint that is not the
pinned one is refused, naming both hashes, and nothing after it runs; the recipe's download
URL is fetched (resumed, verified) into the weights cache by the stage itself, from a loopback
HTTP server on 127.0.0.1 (tests/conftest.py `loopback`)."""
from __future__ import annotations

import hashlib
import json
import re

from om_pipeline.download import cache_dir
from om_pipeline.state import git_blob_id
from om_pipeline.testing.dry_run import closing_table

STAGES_BEFORE_WEIGHTS = {"clone", "patch"}


def run_toy(ompipe, toy, *extra):
    return ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", "--toolchain", "fake", *extra)


def edit_recipe(toy, pattern: str, new: str) -> None:
    recipe = toy.recipes / "toy.yaml"
    text, count = re.subn(pattern, new, recipe.read_text(), flags=re.M)
    assert count == 1, pattern
    recipe.write_text(text)


def assert_stopped_at_weights(result, tmp_path) -> None:
    """Exit 1, the weights stage FAILED, no later stage ran and nothing it would write exists."""
    assert result.code == 1, result.out + result.err
    table = closing_table(result.out)
    assert table["weights"] == "FAILED"
    assert {stage for stage, status in table.items() if status in ("RUN", "CACHED")} <= STAGES_BEFORE_WEIGHTS, table
    work = tmp_path / "work" / "toy"
    assert not list(work.rglob("weights.json")) and not list(work.rglob("*.onnx")) and not list(work.rglob("*.bin"))
    assert "Traceback" not in result.err


def test_a_checkpoint_whose_sha256_is_not_the_pin_is_refused_naming_both(ompipe, toy, tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(toy.weights.read_bytes() + b"\0")
    pinned = hashlib.sha256(toy.weights.read_bytes()).hexdigest()
    result = run_toy(ompipe, toy, "--weights", other)
    assert f"sha256 {hashlib.sha256(other.read_bytes()).hexdigest()} is not the recipe's {pinned}" in result.err
    assert str(other) in result.err and "hint:" in result.err
    assert_stopped_at_weights(result, tmp_path)


def test_a_checkpoint_whose_git_blob_is_not_the_pin_is_refused_naming_both(ompipe, toy, tmp_path):
    edit_recipe(toy, r"^    sha256: [0-9a-f]{64}\n", "")  # pinned by the git blob only
    other = tmp_path / "other.pt"
    other.write_bytes(b"a different checkpoint")
    result = run_toy(ompipe, toy, "--weights", other)
    assert f"git blob {git_blob_id(other)} is not the recipe's {git_blob_id(toy.weights)}" in result.err
    assert_stopped_at_weights(result, tmp_path)


def test_the_checkouts_own_file_is_refused_when_the_pin_names_another_blob(ompipe, toy, tmp_path):
    edit_recipe(toy, r"^    sha256: [0-9a-f]{64}\n", "")
    wrong = "0123456789abcdef0123456789abcdef01234567"
    edit_recipe(toy, r"^    git_blob: [0-9a-f]{40}$", f"    git_blob: {wrong}")
    result = run_toy(ompipe, toy)
    assert f"checkout file {tmp_path / 'work/toy/src/weights/toy.pt'}: git blob {git_blob_id(toy.weights)} is not the recipe's {wrong}" in result.err
    assert_stopped_at_weights(result, tmp_path)


def download_recipe(toy, loopback, payload: bytes) -> str:
    """The toy recipe with its checkpoint taken from a URL (not the checkout), pinned by sha256."""
    loopback.files["toy.pt"] = payload
    edit_recipe(toy, r"^    in_source: weights/toy.pt\n", "")
    edit_recipe(toy, r"^    git_blob: [0-9a-f]{40}\n", f"    urls: [{loopback.url('toy.pt')}]\n")
    return hashlib.sha256(toy.weights.read_bytes()).hexdigest()


def test_the_stage_downloads_resumes_and_verifies_then_reuses_the_cache(ompipe, toy, tmp_path, loopback):
    payload = toy.weights.read_bytes()
    pinned = download_recipe(toy, loopback, payload)
    cached = cache_dir() / "weights" / "toy.pt"
    cached.parent.mkdir(parents=True)
    cached.with_name("toy.pt.part").write_bytes(payload[:100])  # an interrupted earlier download
    first = run_toy(ompipe, toy, "--to", "weights")
    assert first.code == 0, first.out + first.err
    assert loopback.requests == [("toy.pt", "bytes=100-")]
    assert cached.read_bytes() == payload and not cached.with_name("toy.pt.part").exists()
    record = json.loads((tmp_path / "work/toy/weights.json").read_text())
    assert record["path"] == str(cached) and record["sha256"] == pinned and record["verified_by"] == "sha256"
    again = run_toy(ompipe, toy, "--to", "weights", "--force")
    assert again.code == 0 and len(loopback.requests) == 1  # verified from the cache: no new request


def test_a_corrupt_download_is_refused_and_leaves_nothing(ompipe, toy, tmp_path, loopback):
    corrupt = bytearray(toy.weights.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    pinned = download_recipe(toy, loopback, bytes(corrupt))
    result = run_toy(ompipe, toy)
    assert f"sha256 {hashlib.sha256(corrupt).hexdigest()} does not match the recipe's {pinned}" in result.err
    assert loopback.url("toy.pt") in result.err
    assert not list((cache_dir() / "weights").glob("toy.pt*"))  # neither the file nor a .part
    assert_stopped_at_weights(result, tmp_path)
