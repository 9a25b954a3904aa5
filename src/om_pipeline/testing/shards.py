"""What the shard tests of every model check, in one place: run `--shard I/N` for each I (in
the order given), each of them sharing the model built by the unsharded run before (its stages
CACHED, their records untouched: sharding changes no fingerprint of theirs), then `ompipe
merge`; the caller compares the merged results with the unsharded run's."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from ..shard import SHARED_KINDS
from .dry_run import closing_table


def shared_records(model_dir: Path) -> dict[str, str]:
    """The shared stages' records as written: fingerprint and finishing time (a rerun changes it)."""
    records = {}
    for path in sorted((model_dir / ".ompipe/stages").glob("*.json")):
        record = json.loads(path.read_text())
        if record["kind"] in SHARED_KINDS:
            records[path.name] = f"{record['fingerprint']} {record['finished']}"
    return records


def run_shards(ompipe: Callable, model: str, args: Sequence, model_dir: Path, order: Sequence[int]) -> None:
    """`ompipe run MODEL ARGS --shard I/N` for I in `order` (N = len(order)), asserting that
    each ran its sample stages and rebuilt nothing shared."""
    before = shared_records(model_dir)
    for index in order:
        result = ompipe("run", model, *args, "--shard", f"{index}/{len(order)}")
        assert result.code == 0, result.err + result.out
        table = closing_table(result.out)
        shared = {key: status for key, status in table.items() if key.split("-")[0] in SHARED_KINDS}
        assert set(shared.values()) <= {"CACHED", "SKIPPED"}, table
        assert any(key.startswith("eval") and status == "RUN" for key, status in table.items()), table
    assert shared_records(model_dir) == before


def merged_metrics(ompipe: Callable, model: str, args: Sequence, results: Path) -> str:
    """`ompipe merge`, then the metrics of the results JSON it wrote, as canonical JSON."""
    results.unlink(missing_ok=True)  # the merge must write it itself
    args = list(args)
    if "--to" in args:  # a run option merge does not take
        del args[args.index("--to"):args.index("--to") + 2]
    merged = ompipe("merge", model, *args)
    assert merged.code == 0, merged.err + merged.out
    return metrics_json(results)


def metrics_json(results: Path) -> str:
    return json.dumps(json.loads(results.read_text())["metrics"], sort_keys=True)
