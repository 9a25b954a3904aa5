"""Executes a plan: staging directories, atomic renames, stage records, logs, failure policy,
the closing table and the results JSON.

Order of writes for a stage that runs: forget its old record, remove its old outputs and the
results JSONs built on them (make's .DELETE_ON_ERROR, DVC removing outs before repro), execute
into `.staging/<key>/`, rename each output into place, then save the new record. A run killed or
failed at any point therefore leaves either no record and no old output (the stage reruns) or a
record whose outputs are complete. A resumable stage (chunked infer) keeps its staging directory when it fails or is
interrupted, and the next run with the same fingerprint carries on in it.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import fp16, interrupts, versions
from .toolchains import RealToolchain
from .context import Run
from .errors import StageFailed, UserError, disk_full_error
from .plan import Decision, plan
from .stages import Stage, StageResult
from .state import read_json, write_json_atomic
from .tools.execute import format_argv
from .ui import Printer


STAGING_FINGERPRINT = ".fingerprint"  # in a resumable stage's staging directory: what it was made for


@dataclass
class Row:
    key: str
    status: str  # RUN, CACHED, SKIPPED, FAILED, WOULD RUN
    seconds: float | None = None
    note: str = ""


@dataclass
class RunReport:
    rows: list[Row] = field(default_factory=list)
    results_path: Path | None = None
    results: dict | None = None

    @property
    def would_run(self) -> bool:
        return any(row.status == "RUN" for row in self.rows)


def run_pipeline(run: Run, printer: Printer, kinds: tuple[str, ...] | None = None) -> RunReport:
    """Carry out the plan of the stages in scope (plan.plan), one decision at a time; `kinds`
    limits them further (a sharded run's shared phase: the sample stages then run per shard)."""
    options = run.options
    stages: list[Stage] = []
    report = RunReport()
    for decision in plan(run, kinds):
        stages.append(decision.stage)
        report.rows.append(_carry_out(decision, printer, report))
    if not (options.plans_only or run.shard or kinds):
        report.results_path, report.results = write_results(run, stages, report)
    return report


def _carry_out(decision: Decision, printer: Printer, report: RunReport) -> Row:
    stage = decision.stage
    if decision.action == "SKIPPED":
        return Row(stage.key, "SKIPPED", note=decision.reason)
    if decision.shared:
        return _shared_row(decision)
    if stage.run.options.plans_only:
        return _show_plan(decision, printer)
    if decision.action == "CACHED":
        stage.verify_cached()
        printer.stage_line(stage.key, "CACHED", decision.reason)
        return Row(stage.key, "CACHED", 0.0)
    return _execute(decision, printer, report)


def _shared_row(decision: Decision) -> Row:
    """A shared stage seen from a shard: it must be up to date in the model's directory."""
    stage = decision.stage
    if decision.action == "RUN" and not stage.run.options.plans_only:
        raise UserError(f"shared stage {stage.key} in {stage.run.model_dir} is not up to date ({decision.reason})",
                        hint=f"build it first: ompipe run {stage.run.name} --to atc (a --shard run does that itself, "
                             "unless started by --devices or an executor that built it)")
    note = "shared" if decision.action == "CACHED" else f"shared: {decision.reason}"
    return Row(stage.key, decision.action, 0.0 if decision.action == "CACHED" else None, note=note)


def _show_plan(decision: Decision, printer: Printer) -> Row:
    stage = decision.stage
    commands = stage.commands() if decision.action == "RUN" else []
    printer.stage_line(stage.key, decision.action, decision.reason, commands=[format_argv(c) for c in commands])
    return Row(stage.key, decision.action, note=decision.reason)


def _execute(decision: Decision, printer: Printer, report: RunReport) -> Row:
    stage = decision.stage
    run = stage.run
    interrupts.raise_if_stopping()  # a Ctrl-C / SIGTERM that Python dropped where it landed
    run.state.forget(stage.key)
    remove_stale_outputs(stage)
    staging = run.staging_dir(stage.key)
    resuming = stage.resumable and not run.options.force and _staging_fingerprint(staging) == decision.fingerprint.value
    printer.stage_line(stage.key, "RUN", decision.reason + ("; resuming the interrupted run's work" if resuming else ""))
    if not resuming:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if stage.resumable:
            (staging / STAGING_FINGERPRINT).write_text(decision.fingerprint.value)
        stage.log.parent.mkdir(parents=True, exist_ok=True)
        stage.log.write_text("", encoding="utf-8")
    started = time.monotonic()
    finished = False
    try:
        result = stage.execute(staging)
        outputs = _commit_outputs(stage, staging)
        finished = True
        seconds = time.monotonic() - started
        run.state.save_record(stage.key, _record(stage, decision, result, outputs, seconds))
    except BaseException as exc:
        exc = disk_full_error(exc, writing_under=staging) or exc  # the disk, not our bug: a failed stage
        seconds = time.monotonic() - started
        report.rows.append(Row(stage.key, "FAILED", seconds, _failure_note(exc)))
        printer.table(report.rows)
        raise _with_log(exc, stage)
    finally:
        if finished or not stage.resumable:
            shutil.rmtree(staging, ignore_errors=True)
    return Row(stage.key, "RUN", seconds)


def _staging_fingerprint(staging: Path) -> str | None:
    """The fingerprint a kept staging directory was made for (resumable stages)."""
    try:
        return (staging / STAGING_FINGERPRINT).read_text()
    except OSError:
        return None


def _failure_note(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return exc.message if isinstance(exc, UserError) else type(exc).__name__


def _with_log(exc: BaseException, stage: Stage) -> BaseException:
    if isinstance(exc, UserError) and not isinstance(exc, StageFailed):
        return StageFailed(f"stage {stage.key}: {exc.message}", hint=exc.hint or f"log: {stage.log}", details=exc.details)
    if isinstance(exc, StageFailed):
        exc.message = f"stage {stage.key}: {exc.message}"
    return exc


def remove_stale_outputs(stage: Stage) -> None:
    """Before a stage reruns: its previous outputs, and every results JSON whose run used this
    stage, go, so a failed rerun leaves nothing that looks current (`om/<m>_bs<N>.om`, the
    metrics of the old model). An in-place stage's outputs (the checkout) are its upstream's,
    and a resumable stage keeps its staging directory, not its old outputs."""
    if stage.in_place:
        return
    for relative in stage.outputs():
        path = stage.run.path(relative)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in sorted(stage.run.path("results").glob("*.json")):
        results = read_json(path)
        rows = results.get("stages") if isinstance(results, dict) else None
        if isinstance(rows, list) and any(_used(row, stage.key) for row in rows):
            path.unlink(missing_ok=True)


def _used(row: object, key: str) -> bool:
    """Whether a results JSON's stage row says its run used stage `key`'s outputs."""
    return isinstance(row, dict) and row.get("key") == key and (row.get("status") != "SKIPPED" or row.get("note") == "before --from")


def _commit_outputs(stage: Stage, staging: Path) -> dict[str, str | dict[str, str]]:
    """Rename every staged output into place; return {relative path: its sha256, or for a
    directory its manifest {file: sha256} ('dir' for the checkout, which patch changes)}."""
    committed: dict[str, str | dict[str, str]] = {}
    state = stage.run.state
    for relative in stage.outputs():
        staged = staging / relative
        if not staged.exists():
            raise StageFailed(f"stage {stage.key} finished but wrote no {relative}")
        final = stage.run.path(relative)
        final.parent.mkdir(parents=True, exist_ok=True)
        _replace(staged, final)
        if final.is_dir():
            committed[relative] = state.directory_manifest(final) if stage.manifest_outputs else "dir"
        else:
            committed[relative] = state.file_digest(final)
    return committed


def _replace(source: Path, destination: Path) -> None:
    if destination.is_dir() and not destination.is_symlink():
        trash = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, trash)
        os.replace(source, destination)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, destination)


def _record(stage: Stage, decision: Decision, result: StageResult, outputs: dict[str, str], seconds: float) -> dict:
    return {
        "key": stage.key,
        "kind": stage.kind,
        "fingerprint": decision.fingerprint.value,
        "parts": asdict(decision.fingerprint),
        "outputs": outputs,
        "argv": result.argv,
        "info": result.info,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---------------------------------------------------------------- results


def write_results(run: Run, stages: list[Stage], report: RunReport, merged: dict | None = None) -> tuple[Path | None, dict | None]:
    """One JSON per (model, backend, bs): metrics, fps, references, argv of every tool stage,
    tool versions and the weights used, built from the stage records (cached stages included).
    `merged`: the metrics, sample count and shards of `ompipe merge`, in place of an eval record."""
    records = {s.kind: run.state.record(s.key) for s in stages}
    shard_records = {}
    if merged:
        merged = dict(merged)
        shard_records = merged.pop("stage_records")  # the shards' own: what made their numbers
        records["eval"] = {"info": merged}
        records.pop("infer", None)
    if not (records.get("eval") or records.get("perf")):
        return None, None
    weights = read_json(run.path("weights.json")) or {"mode": "none"}
    results = {
        "model": run.name,
        "recipe": str(run.loaded.path),
        "guide": run.recipe.guide,
        "bs": run.bs,
        "tool": run.runtime.name,  # the runtime (older results also have "backend")
        "mode": "stream" if run.options.stream else "files",
        "target": run.target,
        "precision": run.numerics,  # how the numbers were computed: fp32, fp16-emulated, npu (<mode>)
        "toolchain": run.options.toolchain,
        "weights": weights,
        "random_weights": weights.get("mode") in ("random", "none"),  # no weights stage: the export gets None, random weights
        "limit": run.options.limit,
        "metrics": (records.get("eval") or {}).get("info", {}).get("metrics"),
        "samples": (records.get("eval") or {}).get("info", {}).get("samples"),
        "perf": (records.get("perf") or {}).get("info"),
        "atc": (records.get("atc") or {}).get("info"),
        "compare": (records.get("compare") or {}).get("info"),
        "reference": run.recipe.reference.model_dump(mode="json"),
        "argv": {kind: r["argv"] for kind, r in records.items() if r and r.get("argv")},
        "stages": [asdict(row) for row in report.rows],
        "versions": versions.report(),
        "provenance": provenance_labels({**records, **shard_records}, weights, run.numerics),
    }
    if merged:
        results["shards"] = merged["shards"]
    path = run.path(f"results/{run.name}_{run.runtime.name}_bs{run.bs}{run.mode_suffix}{run.precision_suffix}.json")
    write_json_atomic(path, results)
    return path, results


def provenance_labels(records: dict[str, dict | None], weights: dict, numerics: str) -> list[str]:
    """What made the numbers, when it is not the real thing: short labels that every result and
    report shows beside them. Read from the records of the stages that made them (their
    fingerprints name the toolchain), so a label cannot be lost to a cached stage."""
    labels = []
    toolchains_used = {(record or {}).get("parts", {}).get("tools", {}).get("toolchain") for record in records.values()}
    if toolchains_used - {None, RealToolchain.name}:  # anything but CANN's own tools made them
        labels.append("fake toolchain")
    if weights.get("mode") == "random":
        labels.append("random weights")
    if numerics == "fp16-emulated":
        labels.append(fp16.LABEL)
    if any((record or {}).get("parts", {}).get("tools", {}).get("npu") for record in records.values()):
        labels.append("paced emulator")  # the fake's paced NPU replayed recorded outputs
    return labels
