"""clone: the upstream repository at the pinned commit, into `<work>/<model>/src`.

`--source PATH` takes a local repository, mirror or checkout instead of the URL (air-gapped
Ascend servers mirror GitHub); it is cloned from, never modified.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import StageFailed, UserError
from ..tools import git
from .base import Stage, StageResult


class CloneStage(Stage):
    kind = "clone"
    manifest_outputs = False

    def outputs(self) -> list[str]:
        return ["src"]

    def skip_reason(self) -> str | None:
        if not self.run.needs_source:
            return f"export path {self.run.export_path[0]} needs no upstream checkout"
        return None

    def params(self) -> dict:
        # The commit is what matters: cloning it from a mirror instead of GitHub changes nothing.
        return {"commit": self.config.commit}

    def source(self) -> str:
        source = self.run.options.source
        if source is None:
            return self.config.repo
        if not Path(source).exists():
            raise UserError(f"--source {source} does not exist", hint="give a local clone, mirror or bare repository of " + self.config.repo)
        return str(Path(source).resolve())

    def execute(self, staging: Path) -> StageResult:
        try:
            missing = git.clone_at_commit(self.source(), self.config.commit, self.staged(staging, "src"), self.log)
        except StageFailed as exc:
            # git's error named no cause we know; cloning from the URL, the likeliest is an
            # air-gapped server
            if self.run.options.source is None and not git.error_hint("\n".join(exc.details)):
                exc.hint = f"no network to {self.config.repo}? pass --source PATH to a local clone or mirror; full log: {self.log}"
            raise
        return StageResult(info={"source": self.source(), "commit": self.config.commit, "absent_files": missing})

    def verify_cached(self) -> None:
        head = git.head_commit(self.run.path("src"))
        if head != self.config.commit:
            raise UserError(
                f"{self.run.path('src')} is at {head or 'no commit'}, but the recipe pins {self.config.commit}",
                hint=f"remove it or run `ompipe run {self.run.name} --force` to clone again",
            )
