"""The small interface every stage kind implements (one module per kind in this package).

A stage declares its outputs (paths relative to the model's work directory), the upstream
stages it consumes, and the parts of its fingerprint; `execute` writes the outputs under a
staging directory that the runner renames into place afterwards, so a killed stage never leaves
an output that looks complete.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..context import Run
from ..errors import UserError
from ..state import Fingerprint


class InputAbsent(UserError):
    """Raised by a stage's fingerprint in a dry run (--dry-run / --check) when it needs an input
    that is not here, instead of fetching it: the plan shows the stage RUN with this message."""


@dataclass
class StageResult:
    """What a finished stage reports: recorded in its state file and the run's results JSON."""

    info: dict[str, Any] = field(default_factory=dict)
    argv: list[str] | None = None


class Stage:
    kind: ClassVar[str]
    per_bs: ClassVar[bool] = False  # artifacts depend on the batch size (and target / backend)
    in_place: ClassVar[bool] = False  # works on an existing output (patch on src), not via staging
    # Keeps its staging directory when interrupted or failed, and is given it back by the next run
    # with the same fingerprint, to carry on where it stopped (chunked infer).
    resumable: ClassVar[bool] = False
    # Directory outputs are recorded file by file (a manifest) and verified; not the checkout,
    # which the patch stage changes in place (its own check covers it).
    manifest_outputs: ClassVar[bool] = True

    def __init__(self, run: Run):
        self.run = run

    # -- identity
    @property
    def key(self) -> str:
        return self.run.stage_key(self.kind, self.variant if self.per_bs else None)

    @property
    def variant(self) -> str:
        return self.run.target

    @property
    def config(self) -> Any:
        return getattr(self.run.recipe.stages, self.kind)

    # -- planning
    def skip_reason(self) -> str | None:
        """None when the stage applies to this run, else why it is skipped."""
        return None

    def needs(self) -> list[str]:
        """Stage kinds (present in the recipe) whose outputs this stage consumes."""
        return []

    def outputs(self) -> list[str]:
        return []

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(params=self.params())

    def tools_used(self) -> list[str]:
        """The Ascend tools (atc, ais_bench, msame) this stage runs or whose outputs it uses: the
        planner adds their identity (fake or real toolchain, version, path) to its fingerprint."""
        return []

    def params(self) -> dict[str, Any]:
        config = self.config
        # Defaults left out: a field a newer ompipe adds (with its default) must not rerun every
        # stage of every model; a value the recipe states is kept, so changing it still counts.
        # A tool's time limit changes no output: it is no parameter.
        return config.model_dump(mode="json", exclude_defaults=True, exclude={"timeout"}) if hasattr(config, "model_dump") else {}

    def commands(self) -> list[list[str]]:
        """The exact argv of each tool run (shown by --dry-run); none for in-process stages."""
        return []

    def absent_input(self) -> str | None:
        """What this stage would download, or needs given, that is not here ("would download URL
        (X MB)", "needs --data"); a dry run shows it in the stage's row instead of fetching it."""
        return None

    # -- running
    def execute(self, staging: Path) -> StageResult:
        raise NotImplementedError

    def changed_in_place(self, record: dict) -> str | None:
        """Why a stage that changes an existing output in place (patch) must rerun although its
        fingerprint matches, or None: the planner cannot see such a change in its outputs."""
        return None

    def verify_cached(self) -> None:
        """Cheap sanity checks on a CACHED stage's outputs (e.g. the checkout's HEAD)."""

    # -- helpers
    def staged(self, staging: Path, relative: str) -> Path:
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def log(self) -> Path:
        return self.run.log_path(self.key)


def would_download(urls_and_sizes: list[tuple[str, int | None]]) -> str:
    """"would download URL (X MB), URL2 (size not stated)"."""
    shown = [f"{url} ({f'{size / 1e6:.0f} MB' if size else 'size not stated'})" for url, size in urls_and_sizes]
    return f"would download {', '.join(shown)}"


def write_log_header(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"# {text}\n")
