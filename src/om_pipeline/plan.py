"""Which stages run and why. Pure: reads stage records and file digests, executes nothing.

A stage is CACHED when its fingerprint (resolved parameters, input digests, tool versions, the
toolchain that made what it uses, and the fingerprints of the stages it consumes) equals the
recorded one and its outputs are intact (directories file by file, an in-place patch by its tree);
otherwise it RUNs, with the reason. In a dry run a stage whose upstream would run is RUN too:
its inputs are about to change.

`plan` is the one walk over the stages: the runner executes its decisions and `ompipe status`
prints them.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from . import toolchains
from .context import Run
from .errors import UserError
from .stages import KINDS, Stage
from .stages.base import InputAbsent
from .state import Fingerprint

Action = Literal["RUN", "CACHED", "SKIPPED"]
WILL_RUN = None  # in a dry run, the fingerprint of a stage that is about to run is unknown


@dataclass
class Decision:
    stage: Stage
    action: Action
    reason: str
    fingerprint: Fingerprint | None = None
    # A shard run's shared stage, seen from the shard: it belongs to the model's directory and
    # is built by the shared phase, so the shard only checks that it is up to date.
    shared: bool = False
    # keep_going only: the stage could not be planned (its fingerprint raised a UserError, e.g.
    # input that an upstream stage has yet to make); the reason says "cannot plan yet: ...".
    unplannable: bool = False


def plan(run: Run, kinds: tuple[str, ...] | None = None, *, executing: bool | None = None,
         keep_going: bool = False) -> Iterator[Decision]:
    """One Decision per stage of the recipe, in order, SKIPPED ones included (with why): the
    scope (stage / --from / --to), the stage's own skip_reason, what a shard leaves out, a
    shard's shared stages, fingerprints chained from upstream, --force.

    Lazy on purpose: each stage is planned when the consumer asks for it, after it has executed
    the decisions before, because a fingerprint may read what an upstream stage has just
    written (the weights stage digests the checkpoint inside the checkout that clone makes).

    `kinds`: limits the stages further (a sharded run's shared phase: the sample stages then
    run per shard). `executing`: whether the consumer executes each RUN decision before asking
    for the next (default: unless --dry-run / --check); if not, a stage downstream of a RUN is
    RUN too ("upstream X will run"). `keep_going`: a stage whose planning raises a UserError is
    RUN with `unplannable` set, instead of ending the plan (`ompipe status`)."""
    options = run.options
    executing = not options.plans_only if executing is None else executing
    stages = build_stages(run)
    by_kind = {s.kind: s for s in stages}
    scope = in_scope(stages, options.only, options.from_stage, options.to_stage)
    fingerprints: dict[str, str | None] = {}
    for stage in stages:
        left_out = scope[stage.kind] or stage.skip_reason() or _left_out_by_sharding(run, stage, kinds)
        if left_out:
            fingerprints[stage.kind] = _recorded_fingerprint(stage, required=scope[stage.kind] == "before --from")
            yield Decision(stage, "SKIPPED", left_out)
            continue
        shared = stage.run is not run
        upstream = upstream_of(stage, fingerprints, by_kind)
        try:
            decision = decide(stage, upstream, options.force and not shared)  # --force rebuilds this run's own stages only
        except UserError as exc:
            if not keep_going:
                raise
            decision = Decision(stage, "RUN", f"cannot plan yet: {exc.message}", unplannable=True)
        decision.shared = shared
        fingerprints[stage.kind] = _seen_downstream(decision, executing)
        yield decision


def _left_out_by_sharding(run: Run, stage: Stage, kinds: tuple[str, ...] | None) -> str | None:
    from .shard import SAMPLE_KINDS, SHARED_KINDS

    if kinds is not None and stage.kind not in kinds:
        return "runs per shard"
    if run.shard and stage.kind not in SHARED_KINDS + SAMPLE_KINDS:
        return "not run per shard (run it unsharded)"
    return None


def _recorded_fingerprint(stage: Stage, required: bool) -> str | None:
    """A stage left out of the run: its downstream sees what it last made."""
    record = stage.run.state.record(stage.key)
    if record is None and required:
        raise UserError(f"stage {stage.key} has not run yet, so --from cannot skip it", hint="run without --from first")
    return record["fingerprint"] if record else None


def _seen_downstream(decision: Decision, executing: bool) -> str | None:
    """The fingerprint the stages downstream of this one are planned against: the one it has
    (a RUN executed before they are planned records the fingerprint it was planned with), or
    WILL_RUN for a stage about to run in a plan that executes nothing. A shared stage is never
    run from a shard: its downstream sees its fingerprint as planned."""
    if decision.action == "RUN" and not executing and not decision.shared:
        return WILL_RUN
    return decision.fingerprint.value if decision.fingerprint else None


def build_stages(run: Run) -> list[Stage]:
    """The recipe's stages; in a shard run, the shared ones belong to the unsharded run (its
    directory, records and fingerprints: a shard never builds its own model)."""
    from .shard import SHARED_KINDS

    return [cls(run.unsharded if kind in SHARED_KINDS else run) for kind, cls in KINDS.items()
            if getattr(run.recipe.stages, kind) is not None]


def in_scope(stages: list[Stage], only: str | None, from_stage: str | None, to_stage: str | None) -> dict[str, str | None]:
    """kind -> None when the stage is in scope, else why it is left out."""
    kinds = [s.kind for s in stages]
    for name, option in ((only, "stage"), (from_stage, "--from"), (to_stage, "--to")):
        if name is not None and name not in kinds:
            raise UserError(f"{option} {name}: this recipe has no such stage", hint=f"its stages: {', '.join(kinds)}")
    scope: dict[str, str | None] = {kind: None for kind in kinds}
    if only:
        wanted = _closure(stages, only)
        return {kind: None if kind in wanted else f"not needed by {only}" for kind in kinds}
    if from_stage:
        for kind in kinds[: kinds.index(from_stage)]:
            scope[kind] = "before --from"
    if to_stage:
        for kind in kinds[kinds.index(to_stage) + 1:]:
            scope[kind] = "after --to"
    return scope


def _closure(stages: list[Stage], kind: str) -> set[str]:
    by_kind = {s.kind: s for s in stages}
    wanted, todo = set(), [kind]
    while todo:
        current = todo.pop()
        if current in by_kind and current not in wanted:
            wanted.add(current)
            todo.extend(by_kind[current].needs())
    return wanted


def upstream_of(stage: Stage, fingerprints: dict[str, str | None], stages: dict[str, Stage]) -> dict[str, str | None]:
    return {stages[kind].key: fingerprints.get(kind) for kind in stage.needs() if kind in stages}


def decide(stage: Stage, upstream: dict[str, str | None], force: bool) -> Decision:
    decision = _decide(stage, upstream, force)
    if decision.action == "RUN" and stage.run.options.plans_only:
        absent = stage.absent_input()  # a dry run names what the stage would fetch, and fetches nothing
        if absent and absent not in decision.reason:
            decision.reason = f"{decision.reason}; {absent}"
    return decision


def _decide(stage: Stage, upstream: dict[str, str | None], force: bool) -> Decision:
    waiting = [key for key, value in upstream.items() if value is WILL_RUN]
    if waiting:
        return Decision(stage, "RUN", f"upstream {', '.join(waiting)} will run")
    try:
        fingerprint = stage.fingerprint()
    except InputAbsent as absent:  # dry run only: the fingerprint needs what is not here
        return Decision(stage, "RUN", absent.message)
    for tool in stage.tools_used():
        fingerprint.tools.update(toolchains.active().identity(tool))
    fingerprint.upstream = dict(upstream)
    record = stage.run.state.record(stage.key)
    if force:
        return Decision(stage, "RUN", "forced", fingerprint)
    if record is None:
        return Decision(stage, "RUN", "never ran", fingerprint)
    if record.get("fingerprint") != fingerprint.value:
        reasons = fingerprint.differences(record.get("parts", {})) or ["fingerprint changed"]
        return Decision(stage, "RUN", "; ".join(reasons), fingerprint)
    damaged = damaged_outputs(stage, record)
    if damaged:
        return Decision(stage, "RUN", damaged, fingerprint)
    return Decision(stage, "CACHED", "unchanged", fingerprint)


def damaged_outputs(stage: Stage, record: dict) -> str | None:
    """Why the recorded outputs are not what the stage wrote (missing, changed, a file inside a
    directory changed, added or removed), or why an in-place change must be redone; else None."""
    state = stage.run.state
    for relative, recorded in record.get("outputs", {}).items():
        path = stage.run.path(relative)
        if not path.exists():
            return f"output {relative} is missing"
        if isinstance(recorded, dict):
            if not path.is_dir():
                return f"output {relative} is no longer a directory"
            change = manifest_change(recorded, state.directory_manifest(path))
            if change:
                return f"output {relative}/{change}"
        elif recorded == "dir":
            if stage.manifest_outputs:
                return f"output {relative} has no file manifest (recorded by an older ompipe)"
        elif not path.is_file() or state.file_digest(path) != recorded:
            return f"output {relative} changed since it was written"
    return stage.changed_in_place(record)


def manifest_change(recorded: dict[str, str], current: dict[str, str]) -> str | None:
    """The first difference between two directory manifests, as '<file> changed' etc."""
    for name in sorted(set(recorded) | set(current)):
        if name not in current:
            return f"{name} is missing"
        if name not in recorded:
            return f"{name} was added"
        if recorded[name] != current[name]:
            return f"{name} changed since it was written"
    return None

