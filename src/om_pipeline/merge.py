"""`ompipe merge MODEL`: the metric of a sharded run, computed once over every shard's partial
evaluator state, exactly as one run over all samples would compute it.

Before anything is computed every shard must be present, finished and up to date: planned as
`ompipe run --shard I/N` would plan it, each of its stages must be CACHED against the shared
stages as they are now (a shard made with an older model, other parameters or another plugin
is stale), and together the shards must hold each sample of the dataset once. Any shard that
fails this is one error naming it, with the command that redoes it; nothing is written.
"""
from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

from .context import Options, Run
from .errors import UserError
from .plan import build_stages, decide, upstream_of
from .plugin import shard_key
from .runner import Row, RunReport, write_results
from .shard import SAMPLE_KINDS, SHARED_KINDS, Shard, shard_of
from .stages.dataset import DatasetStage
from .stages.eval import STATE
from .state import read_json, write_json_atomic
from .ui import Printer

SHARD_DIR = re.compile(r"^(\d+)-of-(\d+)$")


def shard_count(run: Run, asked: int | None) -> int:
    """N: as asked, or the one N the model's shard directories use."""
    if asked is not None:
        if asked < 1:
            raise UserError(f"--shards {asked}: give the number of shards the run used")
        return asked
    root = run.shared_dir / "shards"
    counts = sorted({int(m.group(2)) for p in (root.iterdir() if root.is_dir() else []) if (m := SHARD_DIR.match(p.name))})
    if not counts:
        raise UserError(f"no shards of {run.name} in {root}", hint=f"run them first: ompipe run {run.name} --shard I/N (I = 0..N-1)")
    if len(counts) > 1:
        raise UserError(f"{root} holds shards of runs split {', '.join(map(str, counts))} ways",
                        hint="say which with --shards N")
    return counts[0]


def shard_runs(run: Run, count: int) -> list[Run]:
    return [run.for_shard(Shard(index, count)) for index in range(count)]


def rerun_hint(shard_run: Run) -> str:
    return f"rerun it: ompipe run {shard_run.name} --shard {shard_run.shard}"


def check_shard(shard_run: Run, stage_records: dict[str, dict]) -> dict:
    """The shard's eval state record, after checking that the shard is complete and up to date;
    its stages' records go into `stage_records`."""
    label = f"shard {shard_run.shard} ({shard_run.model_dir})"
    if not shard_run.model_dir.is_dir():
        raise UserError(f"{label} is missing", hint=rerun_hint(shard_run))
    stages = [s for s in build_stages(shard_run) if s.kind in SHARED_KINDS + SAMPLE_KINDS and not s.skip_reason()]
    by_kind = {s.kind: s for s in stages}
    fingerprints: dict[str, str | None] = {}
    for stage in stages:
        decision = decide(stage, upstream_of(stage, fingerprints, by_kind), force=False)
        if decision.action != "CACHED":
            what = "is not finished" if decision.reason == "never ran" else f"is stale ({decision.reason})"
            if stage.kind in SHARED_KINDS:
                raise UserError(f"shared stage {stage.key} {what}",
                                hint=f"build it: ompipe run {shard_run.name} --to atc, then rerun every shard")
            raise UserError(f"{label} {what}: stage {stage.key}", hint=rerun_hint(shard_run))
        fingerprints[stage.kind] = decision.fingerprint.value
        if stage.kind in SAMPLE_KINDS:
            stage_records[f"{shard_run.shard.name} {stage.key}"] = shard_run.state.record(stage.key)
    record = read_json(shard_run.path(shard_run.result_name(STATE)))
    if record is None:
        raise UserError(f"{label} has no readable evaluator state", hint=rerun_hint(shard_run))
    return record


def check_partition(plugin, samples: list, records: list[dict], runs: list[Run]) -> None:
    """Each sample once, in the shard its key hashes to."""
    count = len(runs)
    seen: dict[str, Shard] = {}
    for shard_run, record in zip(runs, records):
        for sample_id in record["samples"]:
            if sample_id in seen:
                raise UserError(f"sample {sample_id} is in shard {seen[sample_id]} and in shard {shard_run.shard}",
                                hint=rerun_hint(shard_run))
            seen[sample_id] = shard_run.shard
    for sample in samples:
        home = runs[shard_of(shard_key(plugin, sample), count)]
        if seen.get(sample.id) != home.shard:
            raise UserError(f"sample {sample.id} is missing from shard {home.shard} ({home.model_dir})", hint=rerun_hint(home))
    extra = set(seen) - {s.id for s in samples}
    if extra:
        raise UserError(f"shards hold samples the dataset does not: {', '.join(sorted(extra)[:5])}",
                        hint="they were made from another dataset or --limit; rerun them")


def merge_shards(run: Run, count: int | None, printer: Printer, devices: list[dict] | None = None) -> RunReport:
    """Check every shard, merge their states, write the metric and the results JSON once."""
    count = shard_count(run, count)
    runs = shard_runs(run, count)
    stage_records: dict[str, dict] = {}
    records = [check_shard(shard_run, stage_records) for shard_run in runs]
    dataset = DatasetStage(run)
    samples = dataset.samples
    check_partition(run.plugin, samples, records, runs)
    started = time.monotonic()
    evaluator = run.plugin.evaluator(dataset.root, run.settings("eval"))
    try:
        evaluator.merge([record["state"] for record in records], [s.id for s in samples])
    except ValueError as exc:
        raise UserError(f"the shards' evaluator states do not merge: {exc}", hint="rerun the shards") from exc
    metrics = {name: float(value) for name, value in evaluator.result().items()}
    name = run.result_name("eval").removesuffix(".json") + "_merged"
    for artifact, value in (evaluator.artifacts() if hasattr(evaluator, "artifacts") else {}).items():
        write_json_atomic(run.path(f"{name}/{artifact}.json"), value, indent=None)  # bulk data, as the eval stage writes it
    seconds = time.monotonic() - started
    report = RunReport(rows=[Row(f"{shard_run.shard}", "CACHED", 0.0, f"{len(record['samples'])} samples")
                             for shard_run, record in zip(runs, records)] + [Row("merge", "RUN", seconds)])
    sharding = {"count": count, "samples": [len(r["samples"]) for r in records],
                "directories": [str(r.model_dir) for r in runs], "devices": devices}
    write_json_atomic(run.path(f"{name}.json"), {"metrics": metrics, "samples": len(samples), "shards": sharding})
    report.results_path, report.results = write_results(run, build_stages(run), report, merged={
        "metrics": metrics, "samples": len(samples), "shards": sharding, "stage_records": stage_records})
    printer.info(f"merged {count} shards of {run.name}: {len(samples)} samples")
    return report


def default_data(run: Run, options: Options) -> Options:
    """Without --data, the dataset the shards were made from (their samples.json says)."""
    if options.data is not None:
        return options
    for directory in sorted((run.shared_dir / "shards").glob("*-of-*")):
        record = read_json(directory / "samples.json")
        if record and record.get("data"):
            return replace(options, data=Path(record["data"]))
    return options
