"""The planner on its own, without the CLI: plan.plan's decision for each stage of the toy
recipe (never ran, cached, scope, dry-run propagation, --force, a changed parameter, shards),
and that it plans each stage only after the stages before it have executed."""
from __future__ import annotations

import pytest

from om_pipeline.commands import make_run
from om_pipeline.context import Options, Run
from om_pipeline.errors import UserError
from om_pipeline.plan import plan
from om_pipeline.runner import run_pipeline
from om_pipeline.shard import SAMPLE_KINDS, SHARED_KINDS, Shard
from om_pipeline.ui import Printer

EARLY = ["clone", "patch", "weights", "dataset", "preprocess"]  # cheap to run: no export, no tool
LATER = ["export-bs4-ascend", "simplify-bs4-ascend", "atc-bs4-ascend", "compare-bs4-ais_bench",
         "infer-bs4-ais_bench", "eval-bs4-ais_bench", "perf-bs4-ais_bench"]


def toy_run(toy, tmp_path, **options) -> Run:
    """The toy recipe's run on the fake toolchain, as `ompipe run toy ...` would make it."""
    chosen = Options(toolchain="fake", data=toy.data, workdir=tmp_path / "work", quiet=True, **options)
    return make_run("toy", chosen, [toy.recipes], Printer(quiet=True))


def decisions(run: Run, **keywords) -> dict[str, tuple[str, str]]:
    """stage key -> (action, reason) for every stage, in order."""
    return {d.stage.key: (d.action, d.reason) for d in plan(run, **keywords)}


def run_early_stages(toy, tmp_path) -> None:
    run_pipeline(toy_run(toy, tmp_path, to_stage="preprocess"), Printer(quiet=True))


def edit_recipe(toy, old: str, new: str) -> None:
    recipe = toy.recipes / "toy.yaml"
    text = recipe.read_text()
    assert old in text
    recipe.write_text(text.replace(old, new))


def test_a_stage_that_never_ran_runs(toy, tmp_path):
    planned = list(plan(toy_run(toy, tmp_path)))
    assert [d.stage.key for d in planned] == EARLY + LATER  # one decision per stage, in order
    assert {(d.action, d.reason) for d in planned} == {("RUN", "never ran")}
    assert all(d.fingerprint is not None and not d.shared for d in planned)


def test_a_dry_run_propagates_will_run_downstream(toy, tmp_path):
    planned = decisions(toy_run(toy, tmp_path, dry_run=True))
    assert planned["clone"] == ("RUN", "never ran")
    assert planned["patch"] == ("RUN", "upstream clone will run")
    assert planned["export-bs4-ascend"] == ("RUN", "upstream patch, weights will run")
    assert planned["infer-bs4-ais_bench"] == ("RUN", "upstream preprocess, atc-bs4-ascend will run")


def test_what_ran_is_cached_and_scope_skips_with_a_reason(toy, tmp_path):
    run_early_stages(toy, tmp_path)
    planned = decisions(toy_run(toy, tmp_path, to_stage="preprocess"))
    assert [planned[key] for key in EARLY] == [("CACHED", "unchanged")] * len(EARLY)
    assert [planned[key] for key in LATER] == [("SKIPPED", "after --to")] * len(LATER)
    planned = decisions(toy_run(toy, tmp_path, from_stage="export", dry_run=True))
    assert [planned[key] for key in EARLY] == [("SKIPPED", "before --from")] * len(EARLY)
    assert planned["export-bs4-ascend"] == ("RUN", "never ran")  # its upstream: what the skipped stages recorded
    planned = decisions(toy_run(toy, tmp_path, only="preprocess"))
    assert planned["preprocess"] == ("CACHED", "unchanged") and planned["dataset"] == ("CACHED", "unchanged")
    assert planned["clone"] == ("SKIPPED", "not needed by preprocess")
    assert planned["eval-bs4-ais_bench"] == ("SKIPPED", "not needed by preprocess")


def test_from_cannot_skip_a_stage_that_never_ran(toy, tmp_path):
    with pytest.raises(UserError, match="stage clone has not run yet, so --from cannot skip it"):
        list(plan(toy_run(toy, tmp_path, from_stage="export")))


def test_a_cached_upstream_does_not_make_a_dry_run_rerun_its_downstream(toy, tmp_path):
    run_early_stages(toy, tmp_path)
    planned = decisions(toy_run(toy, tmp_path, dry_run=True))
    assert planned["preprocess"] == ("CACHED", "unchanged")
    assert planned["export-bs4-ascend"] == ("RUN", "never ran")
    assert planned["atc-bs4-ascend"] == ("RUN", "upstream simplify-bs4-ascend will run")


def test_force_reruns_what_is_cached(toy, tmp_path):
    run_early_stages(toy, tmp_path)
    planned = decisions(toy_run(toy, tmp_path, to_stage="preprocess", force=True))
    assert [planned[key] for key in EARLY] == [("RUN", "forced")] * len(EARLY)


def test_a_changed_parameter_reruns_the_stage_and_names_the_difference(toy, tmp_path):
    run_early_stages(toy, tmp_path)
    edit_recipe(toy, "    instructions: python -m om_pipeline.testing.toy DIR writes one\n",
                "    instructions: another text\n")
    planned = decisions(toy_run(toy, tmp_path, to_stage="preprocess"))
    assert planned["weights"] == ("CACHED", "unchanged")
    assert planned["dataset"] == ("RUN", "parameter instructions changed")
    # Planned as if dataset had just run with its new fingerprint (what the runner records).
    assert planned["preprocess"] == ("RUN", "upstream stage dataset re-ran")
    assert decisions(toy_run(toy, tmp_path, to_stage="preprocess", dry_run=True))["preprocess"] == (
        "RUN", "upstream dataset will run")


def test_each_stage_is_planned_after_the_stages_before_it_ran(toy, tmp_path):
    """With only a git blob pinning the checkpoint in the checkout (as superpoint's recipe), the
    weights stage's fingerprint digests a file the clone stage makes: planned before the clone
    ran, it would record another fingerprint than the next run computes, and rerun."""
    edit_recipe(toy, f"    sha256: {toy_sha256(toy)}\n", "")
    run_early_stages(toy, tmp_path)
    planned = decisions(toy_run(toy, tmp_path, to_stage="preprocess"))
    assert [planned[key] for key in EARLY] == [("CACHED", "unchanged")] * len(EARLY)


def toy_sha256(toy) -> str:
    import hashlib

    return hashlib.sha256(toy.weights.read_bytes()).hexdigest()


def test_a_stage_that_cannot_be_planned_stops_the_plan_unless_kept_going(toy, tmp_path):
    run_early_stages(toy, tmp_path)
    run = toy_run(toy, tmp_path, weights=str(tmp_path / "absent.pt"))
    with pytest.raises(UserError, match="no such file"):
        list(plan(run))
    planned = {d.stage.key: d for d in plan(run, executing=False, keep_going=True)}
    weights = planned["weights"]
    assert weights.unplannable and weights.action == "RUN" and weights.reason.startswith("cannot plan yet: --weights ")
    assert (planned["export-bs4-ascend"].action, planned["export-bs4-ascend"].reason) == ("RUN", "upstream weights will run")
    assert planned["patch"].action == "CACHED" and not planned["patch"].unplannable


def test_a_shard_sees_the_shared_stages_and_leaves_out_the_unsharded_ones(toy, tmp_path):
    planned = {d.stage.key: d for d in plan(toy_run(toy, tmp_path, shard=Shard(0, 2)))}
    assert {d.stage.kind for d in planned.values() if d.shared} == set(SHARED_KINDS)
    assert all(d.stage.run.shard is None for d in planned.values() if d.shared)  # the model's directory, not the shard's
    assert planned["compare-bs4-ais_bench"].reason == planned["perf-bs4-ais_bench"].reason == "not run per shard (run it unsharded)"
    shared_phase = {d.stage.kind: d for d in plan(toy_run(toy, tmp_path), kinds=SHARED_KINDS)}
    assert {kind for kind, d in shared_phase.items() if d.action == "SKIPPED"} == {*SAMPLE_KINDS, "compare", "perf"}
    assert shared_phase["dataset"].reason == "runs per shard"
