"""patch: our diffs against the pinned commit, applied idempotently to the checkout.

The checkout is reset to the pinned commit first, so the same patch set always gives the same
tree; each patch is reported as applied / already applied / applied with fuzz / conflict.

The patch stage has no output of its own: it changes the checkout in place. So it records the
tree id of the patched checkout (`git write-tree` over a private index) and, when it would be
CACHED, compares the checkout's tree with it: a re-cloned (pristine) or hand-edited checkout is
patched again instead of being exported unpatched.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import StageFailed, UserError
from ..recipe import builtin_patch_dirs
from ..state import Fingerprint
from ..tools import git
from .base import Stage, StageResult, write_log_header


class PatchStage(Stage):
    kind = "patch"
    in_place = True

    def needs(self) -> list[str]:
        return ["clone"]

    def skip_reason(self) -> str | None:
        if not self.run.needs_source:
            return f"export path {self.run.export_path[0]} needs no upstream checkout"
        return None

    def patch_files(self) -> list[Path]:
        directories = [self.run.loaded.directory / "patches", self.run.loaded.directory.parent / "patches", *builtin_patch_dirs()]
        files = []
        for name in self.config.files:
            found = next((d / name for d in directories if (d / name).is_file()), None)
            if found is None:
                raise UserError(
                    f"patch {name} not found",
                    hint="looked in: " + ", ".join(str(d) for d in directories),
                )
            files.append(found)
        return files

    def fingerprint(self) -> Fingerprint:
        digests = {f"patches/{f.name}": self.run.state.file_digest(f) for f in self.patch_files()}
        return Fingerprint(params=self.params(), inputs=digests)

    def execute(self, staging: Path) -> StageResult:
        src = self.run.path("src")
        commit = self.run.recipe.stages.clone.commit
        write_log_header(self.log, f"resetting {src} to {commit}, then applying {len(self.config.files)} patch(es)")
        git.git(["checkout", "-f", "--quiet", commit], src, self.log)
        git.git(["clean", "-fdq"], src, self.log)
        outcomes = [git.apply_patch(src, f, self.config.strip, self.config.fuzz, self.log) for f in self.patch_files()]
        conflicts = [o for o in outcomes if o.status == "conflict"]
        if conflicts:
            raise StageFailed(
                f"{len(conflicts)} patch(es) do not apply to {commit[:12]}",
                details=[f"{o.patch}: {line}" for o in conflicts for line in o.detail],
                hint=f"was the patch made against another commit? full log: {self.log}",
            )
        return StageResult(info={**{o.patch: o.status for o in outcomes}, TREE: self.checkout_tree()})

    def checkout_tree(self) -> str | None:
        src = self.run.path("src")
        if not src.is_dir():
            return None
        strip = self.config.strip
        paths = sorted({path for f in self.patch_files() for path in git.patch_paths(src, f, strip)})
        return git.checkout_tree(src, paths, self.run.state.root / "patch-index")

    def changed_in_place(self, record: dict) -> str | None:
        recorded = record.get("info", {}).get(TREE)
        if recorded is None or self.checkout_tree() != recorded:
            return "the checkout is not the pinned commit plus our patches (re-cloned or edited)"
        return None


TREE = "checkout tree"  # in the record's info: the tree id of the patched checkout
