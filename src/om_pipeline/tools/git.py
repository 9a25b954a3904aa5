"""git and patch through the seam: clone a pinned commit (also from a snapshot lacking big
blobs), apply patches idempotently and say per patch what happened."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import StageFailed, UserError
from .execute import Outcome, execute


# What git's own error output says -> what to do about it; the first match wins.
ERROR_HINTS = (
    (("No space left on device", "Disk quota exceeded"),
     "the disk is full: free some space under the work directory (or use a --workdir on a larger disk), then rerun"),
    (("Could not resolve host", "Failed to connect", "Connection timed out", "Connection refused",
      "Network is unreachable", "Could not resolve proxy"),
     "git could not reach the remote: no network? on an air-gapped machine pass --source PATH to a local clone or mirror"),
    (("Authentication failed", "could not read Username", "Permission denied (publickey)"),
     "the remote asks for credentials (a private or mistyped repository?): check the recipe's clone.repo, or pass --source PATH"),
    (("Repository not found", "does not appear to be a git repository", "does not exist", "not found"),
     "no repository there: check the recipe's clone.repo or the --source path"),
    (("index.lock", "Another git process"),
     "another git process is working in this checkout: wait for it, or remove the stale .git/index.lock"),
    (("Permission denied", "Read-only file system"),
     "git cannot write there: check the work directory's permissions"),
)


def error_hint(output: str) -> str | None:
    """The hint matching git's error output, or None when none does."""
    return next((hint for needles, hint in ERROR_HINTS if any(n in output for n in needles)), None)


def git(args: list[str], repo: Path | None, log: Path | None, *, check: bool = True) -> Outcome:
    argv = ["git", *(["-C", str(repo)] if repo else []), *args]
    outcome = execute(argv, log=log, env={"GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1"})
    if check and not outcome.ok:
        hint = "; ".join(filter(None, [error_hint(outcome.output), f"full log: {log}" if log else None]))
        raise StageFailed(
            f"`{' '.join(argv[:4])} ...` failed (exit {outcome.returncode})",
            details=outcome.output.strip().splitlines()[-8:],
            hint=hint or None,
        )
    return outcome


def clone_at_commit(source: str, commit: str, destination: Path, log: Path) -> list[str]:
    """Clone `source` (URL, local repository, mirror or bare snapshot) and check out `commit`.

    Files whose blobs are absent from the source (snapshots without big files, partial clones)
    are left out of the work tree with a sparse checkout; their paths are returned so a stage
    that needs one can name it. The source itself is never modified.
    """
    git(["clone", "--no-checkout", "--quiet", source, str(destination)], None, log)
    if not git(["cat-file", "-e", f"{commit}^{{commit}}"], destination, log, check=False).ok:
        raise UserError(
            f"commit {commit} is not in {source}",
            hint="update your mirror (git fetch) or pass --source with a repository that has the pinned commit",
        )
    missing = missing_paths(destination, commit, log)
    if missing:
        git(["sparse-checkout", "set", "--no-cone", "--stdin"], destination, log, check=False)  # enables it
        sparse = destination / ".git" / "info" / "sparse-checkout"
        sparse.write_text("/*\n" + "".join(f"!/{_escape_pattern(p)}\n" for p in missing), encoding="utf-8")
    git(["-c", "advice.detachedHead=false", "checkout", "--quiet", commit], destination, log)
    return missing


def missing_paths(repo: Path, commit: str, log: Path) -> list[str]:
    absent = {
        line[1:].strip()
        for line in git(["rev-list", "--objects", "--missing=print", commit], repo, log).output.splitlines()
        if line.startswith("?")
    }
    if not absent:
        return []
    listing = git(["ls-tree", "-r", "-z", "--full-tree", commit], repo, log).output
    paths = []
    for entry in filter(None, listing.split("\0")):
        meta, _, path = entry.partition("\t")
        if meta.split()[2] in absent:
            paths.append(path)
    return sorted(paths)


def _escape_pattern(path: str) -> str:
    return re.sub(r"([*?\[\]\\!#])", r"\\\1", path)


def head_commit(repo: Path) -> str | None:
    outcome = execute(["git", "-C", str(repo), "rev-parse", "HEAD"])
    return outcome.output.strip() if outcome.ok else None


@dataclass(frozen=True)
class PatchOutcome:
    patch: str
    status: str  # "applied", "already applied", "applied with fuzz", "conflict"
    detail: list[str]


def apply_patch(repo: Path, patch: Path, strip: int, fuzz: int, log: Path) -> PatchOutcome:
    """git apply; if already applied, say so; else GNU patch with the guide's fuzz; else report
    the conflicting files. Never leaves a half-applied patch: every attempt is checked first."""
    name = patch.name
    base = ["apply", f"-p{strip}", "--whitespace=nowarn"]
    check = git([*base, "--check", str(patch)], repo, log, check=False)
    if check.ok:
        git([*base, str(patch)], repo, log)
        return PatchOutcome(name, "applied", [])
    if git([*base, "--reverse", "--check", str(patch)], repo, log, check=False).ok:
        return PatchOutcome(name, "already applied", [])
    gnu = ["patch", f"-p{strip}", f"--fuzz={fuzz}", "--forward", "--batch", "--no-backup-if-mismatch", "-i", str(patch), "-d", str(repo)]
    if fuzz and execute([*gnu, "--dry-run"], log=log).ok:
        outcome = execute(gnu, log=log)
        if outcome.ok:
            return PatchOutcome(name, "applied with fuzz", [])
    return PatchOutcome(name, "conflict", _conflicts(check.output))


def _conflicts(output: str) -> list[str]:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    return lines or output.strip().splitlines()[-5:]


def patch_paths(repo: Path, patch: Path, strip: int) -> list[str]:
    """The files a patch touches (created ones included), without applying it."""
    outcome = git(["apply", f"-p{strip}", "--numstat", "-z", str(patch.resolve())], repo, None, check=False)
    return [entry.split("\t", 2)[2] for entry in outcome.output.split("\0") if entry.count("\t") >= 2]


def checkout_tree(repo: Path, paths: list[str], index: Path) -> str | None:
    """The tree id of the checkout's tracked files as they are now, plus `paths` (files our
    patches create). Built in a private index, so the checkout's own index is untouched; `index`
    keeps it between calls, so unchanged files are not rehashed, and each call works on its own
    copy, so a read-only `status` beside a run never meets git's index.lock. Untracked files
    such as __pycache__ or an editable install's build do not count. None when it is no checkout."""
    index.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=index.parent, prefix=".index-") as scratch:
        private = Path(scratch) / "index"
        if index.is_file():
            shutil.copy2(index, private)  # its mtime too: git's racy-clean check reads it
        env = {"GIT_INDEX_FILE": str(private.resolve())}
        steps = [["read-tree", "--reset", "HEAD"], ["add", "-u"]]
        present = [p for p in paths if (repo / p).exists()]
        if present:
            steps.append(["add", "-A", "-f", "--", *present])  # -f: a file a patch creates may match .gitignore
        for step in steps:
            if not execute(["git", "-C", str(repo), *step], env=env).ok:
                return None
        # --missing-ok: a mirror without some blobs (a partial or LFS-less snapshot) still has a
        # tree id; we name the content, we never read those objects back.
        outcome = execute(["git", "-C", str(repo), "write-tree", "--missing-ok"], env=env)
        if not outcome.ok:
            return None
        os.replace(private, index)
        return outcome.output.strip()
