"""weights: find and verify the checkpoint, or take random weights for smoke runs.

Order: `--weights random`; `--weights PATH`; the file inside the upstream checkout (verified by
its git blob id); the download cache (verified by sha256), downloading when the recipe has a
URL. The result, `weights.json`, says which was used; `random` is marked in every result.

The checkpoint's digest is an input of the fingerprint (cheap: the digest cache), so a file
replaced after it was verified reruns the stage, which verifies it again and stops naming both
hashes when it no longer matches its pin. A checkpoint inside the work directory (the checkout's)
is recorded by its path relative to the model directory, so a moved or copied work directory
uses its own.
"""
from __future__ import annotations

from pathlib import Path

from ..download import cache_dir, fetch
from ..errors import UserError
from ..state import Fingerprint, git_blob_id, write_json_atomic
from .base import Stage, StageResult, would_download


class WeightsStage(Stage):
    kind = "weights"

    def needs(self) -> list[str]:
        return ["patch"] if self.config.in_source and self.run.recipe.stages.patch else (["clone"] if self.config.in_source else [])

    def outputs(self) -> list[str]:
        return ["weights.json"]

    @property
    def choice(self) -> str | None:
        return self.run.options.weights

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "choice": "random" if self.choice == "random" else ("path" if self.choice else "recipe")}
        params.pop("size", None)  # informative (the dry run's line), not what is downloaded
        if self.choice == "random":
            params["seed"] = self.run.options.seed
            return Fingerprint(params=params)
        if self.choice:
            path = self.user_path()
            return Fingerprint(params=params, inputs={str(path): self.run.state.file_digest(path)})
        return Fingerprint(params=params, inputs={"checkpoint": self.pinned_file_digest()})

    def recipe_checkpoint(self) -> Path:
        """Where the recipe's own checkpoint is: inside the checkout, or in the download cache."""
        return self.run.path("src") / self.config.in_source if self.config.in_source else cache_dir() / "weights" / self.config.file

    def planned_path(self) -> Path | None:
        """The checkpoint this stage will choose, before it is verified or fetched (a dry run
        shows it in the export command that reads it); None for random weights."""
        if self.choice == "random":
            return None
        return Path(self.choice).expanduser().resolve() if self.choice else self.recipe_checkpoint()

    def pinned_file_digest(self) -> str:
        """The sha256 of the checkpoint the recipe's pin resolves to. A cache file still to be
        downloaded counts as the pin's sha256 (the download is verified against it), so the
        run after the download finds the stage unchanged."""
        path = self.recipe_checkpoint()
        if path.is_file():
            return self.run.state.file_digest(path)
        return self.config.sha256 or "absent"

    def absent_input(self) -> str | None:
        if self.choice:
            return None  # random, or a --weights PATH its fingerprint checks
        if self.config.in_source:
            checkout = self.run.path("src")
            if checkout.is_dir() and not (checkout / self.config.in_source).is_file():
                return f"needs --weights PATH ({self.config.in_source} is absent from the checkout)"
            return None  # the checkout the clone stage makes holds it
        if (cache_dir() / "weights" / self.config.file).is_file():
            return None
        if self.config.urls:
            return would_download([(self.config.urls[0], self.config.size)])
        return f"needs --weights PATH ({self.config.file} is not in {cache_dir() / 'weights'})"

    def user_path(self) -> Path:
        path = self.planned_path()  # --weights PATH
        if not path.is_file():
            raise UserError(f"--weights {self.choice}: no such file", hint="give the checkpoint file, or --weights random for a smoke run")
        return path

    def execute(self, staging: Path) -> StageResult:
        record = self.resolve()
        write_json_atomic(self.staged(staging, "weights.json"), record)
        return StageResult(info=record)

    def resolve(self) -> dict:
        if self.choice == "random":
            return {"mode": "random", "seed": self.run.options.seed, "path": None}
        if self.choice:
            return self.verify(self.user_path(), "--weights")
        if self.config.in_source:
            return self.from_source()
        return self.from_cache()

    def verify(self, path: Path, origin: str) -> dict:
        recorded = self.run.state.model_relative(path)  # the checkout's copy: relative, so the work dir can move
        if not (self.config.sha256 or self.config.git_blob):
            # Nothing to verify against (the recipe's unpinned_reason says why): record what was used.
            return {"mode": "file", "path": recorded, "sha256": self.run.state.file_digest(path), "verified_by": "none",
                    "unpinned_reason": self.config.unpinned_reason}
        if self.config.sha256:
            actual = self.run.state.file_digest(path)
            if actual != self.config.sha256:
                raise UserError(
                    f"{origin} {path}: sha256 {actual} is not the recipe's {self.config.sha256}",
                    hint="this is not the checkpoint the guide's numbers come from; use --weights random to run anyway without those numbers",
                )
            return {"mode": "file", "path": recorded, "sha256": actual, "verified_by": "sha256"}
        blob = git_blob_id(path)
        if blob != self.config.git_blob:
            raise UserError(f"{origin} {path}: git blob {blob} is not the recipe's {self.config.git_blob}")
        return {"mode": "file", "path": recorded, "git_blob": blob, "verified_by": "git_blob"}

    def from_source(self) -> dict:
        path = self.recipe_checkpoint()
        if not path.is_file():
            absent = self.config.in_source in (self.run.state.record("clone") or {}).get("info", {}).get("absent_files", [])
            raise UserError(
                f"{self.config.in_source} is absent from the upstream checkout {self.run.path('src')}"
                + (" (its blob is missing from the --source repository)" if absent else ""),
                hint=f"pass --weights PATH to a copy of it ({self.config.instructions or 'see the recipe'}), or --weights random",
            )
        return self.verify(path, "checkout file")

    def from_cache(self) -> dict:
        path = self.recipe_checkpoint()
        if not path.is_file():
            if not self.config.urls:
                raise UserError(
                    f"weights {self.config.file} not found (looked in {path.parent})",
                    hint=f"{self.config.instructions or 'download it'}; then pass --weights PATH or put it in {path.parent}",
                )
            fetch(self.config.urls[0], path, self.config.sha256)
        return self.verify(path, "cached file")
