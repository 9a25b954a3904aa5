"""Shards on the toy fixture with the fake toolchain: `--shard I/N` + `ompipe merge` give one
run's metrics digit for digit, in any shard order, sharing the model (its stages run once and
keep their fingerprints); a killed shard reruns alone; a missing or stale shard stops merge
naming it; `--devices 0,1` runs two device processes at the same time and merges them."""
from __future__ import annotations

import json
import shutil

import pytest

from om_pipeline.shard import Shard, parse_shard, shard_of
from om_pipeline.testing.dry_run import closing_table
from om_pipeline.testing.shards import metrics_json, run_shards

FAKE = ("--toolchain", "fake")


def toy_args(toy, workdir="work"):
    return ("--recipes", toy.recipes, "--data", toy.data, "--workdir", workdir, *FAKE)


@pytest.fixture
def sharded(ompipe, toy, tmp_path):
    """One unsharded run, then shards 2, 0, 1 of 3 in the same work directory."""
    one = ompipe("run", "toy", *toy_args(toy))
    assert one.code == 0, one.err + one.out
    model_dir = tmp_path / "work/toy"
    expected = metrics_json(model_dir / "results/toy_ais_bench_bs4.json")
    run_shards(ompipe, "toy", toy_args(toy), model_dir, order=(2, 0, 1))
    (model_dir / "results/toy_ais_bench_bs4.json").unlink()  # the merge must write it itself
    return model_dir, expected


def test_three_shards_merged_equal_one_run_digit_for_digit(sharded, ompipe, toy):
    model_dir, expected = sharded
    shard_samples = [json.loads((model_dir / f"shards/{i}-of-3/samples.json").read_text())["samples"] for i in range(3)]
    assert all(shard_samples) and sum(map(len, shard_samples)) == 12
    for index, samples in enumerate(shard_samples):  # by a hash of the id, not by position
        assert all(shard_of(s["id"], 3) == index for s in samples)
    merged = ompipe("merge", "toy", *toy_args(toy))
    assert merged.code == 0, merged.err + merged.out
    results = json.loads((model_dir / "results/toy_ais_bench_bs4.json").read_text())
    assert json.dumps(results["metrics"], sort_keys=True) == expected
    assert results["samples"] == 12 and results["shards"]["count"] == 3
    assert "fake toolchain" in results["provenance"]  # a merged number says what made it, as one run's does
    assert "merged from 3 shards" in merged.out


def test_a_missing_or_stale_shard_stops_merge_naming_it(sharded, ompipe, toy):
    model_dir, _ = sharded
    shutil.rmtree(model_dir / "shards/2-of-3")
    missing = ompipe("merge", "toy", *toy_args(toy))
    assert missing.code == 1 and "shard 2/3" in missing.err and "missing" in missing.err and "Traceback" not in missing.err
    state = model_dir / "shards/1-of-3/results/eval_state_ais_bench_bs4.json"
    state.write_text(state.read_text().replace('"shard"', '"shard" ', 1))  # edited after it was written
    stale = ompipe("merge", "toy", *toy_args(toy))
    assert stale.code == 1 and "shard 1/3" in stale.err and "stale" in stale.err
    assert not (model_dir / "results/toy_ais_bench_bs4.json").exists()


def test_a_killed_shard_reruns_alone(sharded, ompipe, toy):
    model_dir, expected = sharded
    # What a shard killed during eval leaves: no eval record, no state (the runner writes both last).
    (model_dir / "shards/0-of-3/.ompipe/stages/eval-bs4-ais_bench.json").unlink()
    others = {i: (model_dir / f"shards/{i}-of-3/.ompipe/stages/infer-bs4-ais_bench.json").read_text() for i in (1, 2)}
    unfinished = ompipe("merge", "toy", *toy_args(toy))
    assert unfinished.code == 1 and "shard 0/3" in unfinished.err and "not finished" in unfinished.err
    rerun = ompipe("run", "toy", *toy_args(toy), "--shard", "0/3")
    assert rerun.code == 0
    table = closing_table(rerun.out)
    assert table["eval-bs4-ais_bench"] == "RUN" and table["infer-bs4-ais_bench"] == "CACHED"
    assert {i: (model_dir / f"shards/{i}-of-3/.ompipe/stages/infer-bs4-ais_bench.json").read_text() for i in (1, 2)} == others
    merged = ompipe("merge", "toy", *toy_args(toy))
    assert merged.code == 0 and metrics_json(model_dir / "results/toy_ais_bench_bs4.json") == expected


def test_two_devices_run_concurrently_and_merge_to_one_devices_metric(ompipe, toy, tmp_path):
    one = ompipe("run", "toy", *toy_args(toy, "single"))
    assert one.code == 0, one.err
    result = ompipe("run", "toy", *toy_args(toy), "--devices", "0,1")
    assert result.code == 0, result.err + result.out
    model_dir = tmp_path / "work/toy"
    records = [json.loads((model_dir / f"shards/{i}-of-2/device.json").read_text()) for i in range(2)]
    assert [r["device"] for r in records] == [0, 1] and records[0]["pid"] != records[1]["pid"]
    assert max(r["started"] for r in records) < min(r["finished"] for r in records)  # both ran at once
    for index, device in enumerate((0, 1)):
        infer = json.loads((model_dir / f"shards/{index}-of-2/.ompipe/stages/infer-bs4-ais_bench.json").read_text())
        assert infer["argv"][-2:] == ["--device", str(device)]
    assert metrics_json(model_dir / "results/toy_ais_bench_bs4.json") == metrics_json(tmp_path / "single/toy/results/toy_ais_bench_bs4.json")
    assert "summed over 2 devices" in result.out and "not comparable" in result.out


def test_shard_specs_and_job_array_variables():
    assert parse_shard("1/4") == Shard(1, 4)
    assert parse_shard("auto", {"JOB_COMPLETION_INDEX": "2", "OMPIPE_SHARD_COUNT": "3"}) == Shard(2, 3)
    assert parse_shard("auto/5", {"JOB_COMPLETION_INDEX": "4"}) == Shard(4, 5)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}) == Shard(2, 4)
    for spec, environ, message in (("3/3", {}, "index must be 0..2"), ("x", {}, "expected I/N"),
                                   ("auto", {}, "no job-array variable"), ("auto", {"JOB_COMPLETION_INDEX": "0"}, "not the count")):
        with pytest.raises(Exception, match=message):
            parse_shard(spec, environ)


def test_bad_shard_and_devices_options_are_user_errors(ompipe, toy):
    assert "index must be 0..1" in ompipe("run", "toy", *toy_args(toy), "--shard", "2/2").err
    bad = ompipe("run", "toy", *toy_args(toy), "--devices", "0,0")
    assert bad.code == 1 and "each device id once" in bad.err


def test_doctor_shows_the_shard_variables_it_sees(ompipe, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    result = ompipe("doctor", *FAKE)
    assert "SLURM_ARRAY_TASK_ID=1, SLURM_ARRAY_TASK_COUNT=3 -> --shard auto is shard 1/3" in result.out


def test_a_failed_device_is_named_with_its_log_and_nothing_is_merged(ompipe, toy, tmp_path, monkeypatch):
    monkeypatch.setenv("OMPIPE_FAKE_NPU_COUNT", "1")  # device 1 does not exist on this host
    result = ompipe("run", "toy", *toy_args(toy), "--devices", "0,1")
    assert result.code == 1 and "1 of 2 device runs failed" in result.err
    assert "device 1 (shard 1/2)" in result.err and "device1.log" in result.err
    log = (tmp_path / "work/toy/shards/1-of-2/logs/device1.log").read_text()
    assert "open device 1 failed, runtime result = 507033" in log
    assert not (tmp_path / "work/toy/results/toy_ais_bench_bs4.json").exists()


def test_merge_is_refused_while_another_ompipe_writes_the_model_directory(ompipe, toy, tmp_path):
    from om_pipeline import lock

    with lock.holding(tmp_path / "work/toy", wait=False):  # as another process would hold it
        busy = ompipe("merge", "toy", *toy_args(toy))
    assert busy.code == 1 and "in use by another ompipe" in busy.err
