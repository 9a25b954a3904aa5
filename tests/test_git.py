"""Clone at a pinned commit and idempotent patching, on small local repositories."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from om_pipeline.errors import UserError
from om_pipeline.tools.git import apply_patch, clone_at_commit, head_commit


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    (repo / "b.txt").write_text("bee\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    return repo


def make_patch(repo: Path, path: Path, edit) -> Path:
    edit(repo)
    path.write_text(git(repo, "diff") + "\n")
    git(repo, "checkout", "-q", "--", ".")
    return path


def test_clone_checks_out_the_pinned_commit_and_leaves_the_source_alone(repo, tmp_path):
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "a.txt").write_text("local edit\n")  # the user's work tree: must not be touched
    assert clone_at_commit(str(repo), commit, tmp_path / "src", tmp_path / "log") == []
    assert head_commit(tmp_path / "src") == commit
    assert (tmp_path / "src/a.txt").read_text().startswith("line 0")
    assert (repo / "a.txt").read_text() == "local edit\n"


def test_clone_of_unknown_commit_is_a_clear_error(repo, tmp_path):
    with pytest.raises(UserError, match="commit 0{40} is not in"):
        clone_at_commit(str(repo), "0" * 40, tmp_path / "src", tmp_path / "log")


def test_patch_applied_then_already_applied_then_conflict(repo, tmp_path):
    patch = make_patch(repo, tmp_path / "p.patch", lambda r: (r / "b.txt").write_text("bee\nsting\n"))
    log = tmp_path / "log"
    assert apply_patch(repo, patch, 1, 0, log).status == "applied"
    assert apply_patch(repo, patch, 1, 0, log).status == "already applied"
    git(repo, "checkout", "-q", "--", ".")
    (repo / "b.txt").write_text("wasp\n")
    outcome = apply_patch(repo, patch, 1, 0, log)
    assert outcome.status == "conflict"
    assert any("b.txt" in line for line in outcome.detail)


def test_fuzz_fallback_for_patches_made_against_drifted_context(repo, tmp_path):
    patch = make_patch(repo, tmp_path / "p.patch", lambda r: (r / "a.txt").write_text(
        (r / "a.txt").read_text().replace("line 10\n", "line ten\n")))
    text = (repo / "a.txt").read_text().replace("line 8\n", "line eight\n")  # context drift
    (repo / "a.txt").write_text(text)
    assert apply_patch(repo, patch, 1, 0, tmp_path / "log").status == "conflict"
    assert apply_patch(repo, patch, 1, 3, tmp_path / "log").status == "applied with fuzz"
    assert "line ten" in (repo / "a.txt").read_text()


def test_checkout_tree_counts_tracked_and_patched_files_only(repo, tmp_path):
    """The patch stage's check: the tree of the tracked files plus the files a patch creates;
    untracked build files (__pycache__, an editable install) do not change it."""
    from om_pipeline.tools.git import checkout_tree, patch_paths

    (repo / ".gitignore").write_text("generated.txt\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "ignore")
    (repo / "generated.txt").write_text("made by our patch\n")
    git(repo, "add", "-f", "generated.txt")
    patch = tmp_path / "new.patch"
    patch.write_text(git(repo, "diff", "--cached") + "\n")
    git(repo, "reset", "-q", "--hard")
    index = tmp_path / "index"
    pristine = checkout_tree(repo, [], index)
    assert apply_patch(repo, patch, 1, 0, tmp_path / "log").status == "applied"
    paths = patch_paths(repo, patch, 1)
    assert paths == ["generated.txt"]
    patched = checkout_tree(repo, paths, index)
    assert patched not in (None, pristine)
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert checkout_tree(repo, paths, index) == patched
    (repo / "b.txt").write_text("edited\n")
    assert checkout_tree(repo, paths, index) != patched


def test_checkout_tree_of_a_mirror_missing_some_blobs(repo, tmp_path):
    """Fetched snapshots leave out large files' blobs; the tree id is still computed (it names
    the content, it never reads those objects), so the patch stage is not rerun every time."""
    from om_pipeline.tools.git import checkout_tree

    (repo / "big.bin").write_bytes(b"large file the snapshot left out\n")
    git(repo, "add", "big.bin")
    git(repo, "commit", "-q", "-m", "big")
    blob = git(repo, "rev-parse", "HEAD:big.bin").strip()
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    git(repo, "sparse-checkout", "set", "--no-cone", "/*", "!/big.bin")  # as the clone stage leaves such a file out
    index = tmp_path / "index"
    first = checkout_tree(repo, [], index)
    assert first is not None and checkout_tree(repo, [], index) == first
    (repo / "a.txt").write_text("edited\n")
    assert checkout_tree(repo, [], index) not in (None, first)
