"""What ompipe guarantees when things go wrong (docs/reliability.md): one writer per model work
directory, signals, disk full, impossible options, tool timeouts, and kills at random moments.
All on the toy fixture with the fake toolchain (OMPIPE_FAKE_DELAY slows the fake atc)."""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from om_pipeline.testing.dry_run import closing_table

FAKE = ("--toolchain", "fake")
# The fake .om computes as ATC compiles by default (force_fp16, emulated): 0.313975 in fp32.
CLEAN_METRICS = {"top1": pytest.approx(1 / 3, abs=1e-6), "mean_confidence": pytest.approx(0.313981, abs=1e-6)}


def run_toy(ompipe, toy, *extra, workdir="work"):
    return ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", workdir, *FAKE, *extra)


def toy_argv(toy, workdir: Path, *extra: str, command: str = "run") -> list[str]:
    return [sys.executable, "-m", "om_pipeline.cli", command, "toy", "--recipes", str(toy.recipes), "--data", str(toy.data),
            "--workdir", str(workdir), *FAKE, *extra]


def start(argv: list[str], **env: str) -> subprocess.Popen:
    """ompipe in its own process group (as a shell job is), unbuffered so its lines can be watched."""
    return subprocess.Popen(argv, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_until(condition, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        assert process is None or process.poll() is None, f"ompipe ended early: {process.communicate()}"
        time.sleep(0.1)


def atc_working(workdir: Path) -> bool:
    log = workdir / "toy/logs/atc-bs4-ascend.log"
    return log.exists() and "ATC start working" in log.read_text()


def fake_tools_under(workdir: Path) -> list[int]:
    """PIDs of fake atc / ais_bench processes whose command line names this work directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(workdir) in cmdline and ("fake_atc" in cmdline or "ais_bench" in cmdline) and "om_pipeline.cli" not in cmdline:
            pids.append(int(entry.name))
    return pids


def results(workdir: Path, name: str = "toy_ais_bench_bs4.json") -> dict:
    return json.loads((workdir / "toy/results" / name).read_text())


# ---------------------------------------------------------------- 4. one writer per model work directory


def test_a_second_writer_is_refused_at_once_naming_the_holder_and_readers_never_block(ompipe, toy, tmp_path):
    work = tmp_path / "work"
    holder = start(toy_argv(toy, work), OMPIPE_FAKE_DELAY="60")
    try:
        wait_until(lambda: atc_working(work), holder)
        started = time.monotonic()
        second = run_toy(ompipe, toy, "--limit", "5", "--backend", "onnxruntime", workdir=work)
        assert second.code == 1, second.err
        assert time.monotonic() - started < 10  # at once, not after the holder
        first_line = second.err.splitlines()[0]
        assert f"PID {holder.pid}" in first_line and "ompipe run toy" in first_line and "started" in first_line
        assert "--wait" in second.err and "Traceback" not in second.err
        assert not (work / "toy/results/toy_onnxruntime_bs4.json").exists()
        # Readers take no lock: they answer while the writer holds it.
        for argv in (("status", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", work, *FAKE),
                     ("show", "toy", "--recipes", toy.recipes)):
            assert ompipe(*argv).code == 0, argv
        assert "no results in" in ompipe("report", "--workdir", work).err  # none yet: the holder is in atc
        assert run_toy(ompipe, toy, "--dry-run", workdir=work).code == 0
        assert run_toy(ompipe, toy, "--check", workdir=work).code == 1  # atc would run: the check's own answer
    finally:
        holder.kill()
        holder.wait()


def test_with_wait_both_writers_run_in_turn_and_each_publishes_its_own_metric(toy, tmp_path):
    """The probe's case (c): a full run busy in atc while a --limit 5 run starts on the same work
    directory. The full run must publish the metric over all 12 samples, the other over 5."""
    work = tmp_path / "work"
    full = start(toy_argv(toy, work), OMPIPE_FAKE_DELAY="3")
    wait_until(lambda: atc_working(work), full)
    limited = start(toy_argv(toy, work, "--limit", "5", "--backend", "onnxruntime", "--wait"))
    wait_until(lambda: "waiting for" in limited.stderr.readline(), limited, timeout=30)
    full_out, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err
    out, err = limited.communicate(timeout=300)
    assert limited.returncode == 0, err
    # The full run published the metric over all 12 samples (before the limited run started).
    assert "mean_confidence: 0.313981" in full_out and "top1: 0.333333" in full_out
    subset = results(work, "toy_onnxruntime_bs4.json")
    assert subset["limit"] == 5 and subset["samples"] == 5
    # The limited run re-preprocessed, so the full run's JSON is stale and removed; never rewritten.
    complete = work / "toy/results/toy_ais_bench_bs4.json"
    assert not complete.exists() or (results(work)["limit"] is None and results(work)["samples"] == 12)


def test_forked_workers_never_keep_the_lock_of_an_owner_that_died(tmp_path):
    """The owner forks preprocessing workers and is killed with SIGKILL while they still run: the
    lock must be free at once (the workers do not hold the lock file open), and a worker cannot
    release the lock of a live owner."""
    code = f"""
import os, sys, time
from pathlib import Path
from om_pipeline import lock, workers
held = lock.WorkdirLock(Path({str(tmp_path)!r}))
held.acquire(wait=False)
def task(seconds):
    held.release()  # a worker unwinding the owner's code must not free the owner's lock
    time.sleep(seconds)
with workers.forked_pool(1, task) as pool:
    future = pool.submit(workers.call_job, 30)
    time.sleep(1)
    print("worker running", flush=True)
    time.sleep(60)
"""
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout.readline().strip() == "worker running"
        from om_pipeline import lock

        with pytest.raises(lock.Busy):  # the worker's release() did not free it
            lock.WorkdirLock(tmp_path).acquire(wait=False)
        os.kill(owner.pid, signal.SIGKILL)  # the owner only: its worker lives on
        owner.wait()
        second = lock.WorkdirLock(tmp_path)
        second.acquire(wait=False)
        second.release()
    finally:
        os.killpg(owner.pid, signal.SIGKILL)


# ---------------------------------------------------------------- 6. SIGTERM and SIGHUP


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_the_tool_and_leave_nothing_complete(toy, tmp_path, signum, code):
    work = tmp_path / "work"
    process = start(toy_argv(toy, work), OMPIPE_FAKE_DELAY="60")
    wait_until(lambda: atc_working(work), process)
    assert fake_tools_under(work)
    os.kill(process.pid, signum)  # the PID only, as `timeout`, `kill` and `docker stop` do
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    assert "atc-bs4-ascend" in out and "interrupted" in out
    assert fake_tools_under(work) == []  # atc went with it
    assert not (work / "toy/om").exists() and not (work / "toy/.staging/atc-bs4-ascend").exists()
    assert not (work / "toy/.ompipe/stages/atc-bs4-ascend.json").exists()


def test_a_signal_python_drops_while_a_tool_starts_still_stops_it(tmp_path):
    """Starting a subprocess runs at-fork hooks (logging's), and Python drops an exception raised
    there: a SIGTERM landing then was lost and the run went on to exit 0 (seen in the random-kill
    test), and Python printed the dropped exception with a traceback. The signal is remembered
    and raised again as soon as the tool has started, and that report is silenced."""
    code = f"""
import os, signal, sys, time
from om_pipeline import interrupts
from om_pipeline.tools.execute import execute
sent = []
def terminate_during_fork():
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
os.register_at_fork(after_in_parent=terminate_during_fork)
with interrupts.handled():
    started = time.monotonic()
    try:
        execute(["sleep", "30"], log={str(tmp_path / "log")!r})
    except KeyboardInterrupt:
        print("stopped", interrupts.received(), round(time.monotonic() - started), flush=True)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # The first raise is dropped inside the at-fork hook; Python's report of it (a traceback) is
    # silenced because the signal is raised again: the user sees one "interrupted" line only.
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    word, signum, seconds = result.stdout.split()
    assert (word, int(signum)) == ("stopped", signal.SIGTERM) and int(seconds) < 10, result.stderr  # not after sleep 30


# ---------------------------------------------------------------- 7. disk full


def test_disk_full_in_a_stage_record_or_a_staged_output_is_a_failed_stage(ompipe, toy, tmp_path, monkeypatch):
    from om_pipeline import state
    from om_pipeline.state import StateStore

    original, original_write = StateStore.save_record, state.write_json_atomic

    def full_disk_for_atc(self, key, record):
        if key.startswith("atc"):
            path = self.record_path(key)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return original(self, key, record)

    monkeypatch.setattr(StateStore, "save_record", full_disk_for_atc)
    failed = run_toy(ompipe, toy)
    assert failed.code == 1, failed.err
    assert "no space left on device" in failed.err.lower() and "atc-bs4-ascend.json" in failed.err
    assert "free" in failed.err and "Traceback" not in failed.err
    assert closing_table(failed.out)["atc-bs4-ascend"] == "FAILED"
    monkeypatch.setattr(StateStore, "save_record", original)

    import onnx

    def full_disk(*args, **kwargs):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))  # as a write() fails: no file name

    save = onnx.save
    monkeypatch.setattr(onnx, "save", full_disk)
    failed = run_toy(ompipe, toy, "--force")
    assert failed.code == 1 and "Traceback" not in failed.err
    assert "quota" in failed.err.lower() and ".staging/simplify-bs4-ascend" in failed.err and "free" in failed.err
    monkeypatch.setattr(onnx, "save", save)

    def full_disk_for_the_digest_cache(path, value, indent=2):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(state, "write_json_atomic", full_disk_for_the_digest_cache)
    os.utime(tmp_path / "work/toy/onnx/toy_bs4.ascend.onnx")  # rehashed while planning: the cache is written
    failed = run_toy(ompipe, toy)
    assert failed.code == 1 and "Traceback" not in failed.err
    assert f"no space left on device writing {tmp_path / 'work/toy'} (" in failed.err
    monkeypatch.setattr(state, "write_json_atomic", original_write)

    rerun = run_toy(ompipe, toy)
    assert rerun.code == 0, rerun.err
    assert results(tmp_path / "work")["metrics"] == CLEAN_METRICS


def test_git_failures_get_the_hint_that_matches_git_error(ompipe, toy, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "git").write_text(f"""#!/bin/sh
case " $* " in *" clone "*) echo "$FAKE_GIT_ERROR" >&2; exit 128;; esac
exec {real_git} "$@"
""")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GIT_ERROR", "fatal: could not create work tree dir 'src': No space left on device")
    full = run_toy(ompipe, toy)
    assert full.code == 1
    assert "no network" not in full.err and "space" in full.err.split("hint:")[1]
    monkeypatch.setenv("FAKE_GIT_ERROR", "fatal: unable to access 'https://github.com/x/y.git/': Could not resolve host: github.com")
    offline = run_toy(ompipe, toy)
    assert offline.code == 1 and "--source" in offline.err.split("hint:")[1]


# ---------------------------------------------------------------- 10. options checked before any stage runs


@pytest.mark.parametrize("bs", ["0", "-1", "1000000000"])
def test_impossible_batch_sizes_are_refused_before_any_stage(ompipe, toy, tmp_path, bs):
    result = run_toy(ompipe, toy, "--bs", bs)
    assert result.code == 1, result.err
    assert f"--bs {bs}" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "work/toy/.ompipe/stages").exists()


def test_a_batch_larger_than_the_machine_memory_is_refused_before_any_stage(ompipe, toy, tmp_path):
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace("shape: [3, 16, 16]", "shape: [3, 8192, 8192]"))  # 768 MiB a sample
    result = run_toy(ompipe, toy, "--bs", "4096")  # 3 TiB
    assert result.code == 1 and "--bs 4096: one batch of inputs is 3072.0 GiB, more than this machine's memory" in result.err
    assert not (tmp_path / "work/toy/.ompipe/stages").exists()


def test_a_workdir_ais_bench_refuses_is_refused_up_front_only_when_ais_bench_runs(ompipe, toy, tmp_path):
    refused = run_toy(ompipe, toy, workdir="my work")
    assert refused.code == 1
    assert "' '" in refused.err and "ais_bench" in refused.err and "Traceback" not in refused.err
    assert not (tmp_path / "my work/toy/.ompipe/stages").exists()
    assert run_toy(ompipe, toy, "--backend", "onnxruntime", "--dry-run", workdir="my work").code == 0
    assert run_toy(ompipe, toy, "--to", "atc", "--dry-run", workdir="my work").code == 0  # no ais_bench before atc


def test_reversed_from_and_to_is_a_usage_error(ompipe, toy, tmp_path):
    result = run_toy(ompipe, toy, "--from", "eval", "--to", "export")
    assert result.code == 2
    assert "--from eval" in result.err and "--to export" in result.err


# ---------------------------------------------------------------- 12. tool timeouts


def test_a_tool_past_its_recipe_timeout_is_killed_and_the_stage_fails(ompipe, toy, tmp_path, monkeypatch):
    assert run_toy(ompipe, toy, "--to", "atc").code == 0
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace("  atc:\n    args:", "  atc:\n    timeout: 2\n    args:"))
    cached = run_toy(ompipe, toy, "--to", "atc")
    assert cached.code == 0 and closing_table(cached.out)["atc-bs4-ascend"] == "CACHED"  # a limit is no input
    monkeypatch.setenv("OMPIPE_FAKE_DELAY", "60")
    (tmp_path / "work/toy/.ompipe/stages/atc-bs4-ascend.json").unlink()
    started = time.monotonic()
    result = run_toy(ompipe, toy, "--to", "atc")
    assert time.monotonic() - started < 30
    assert result.code == 1, result.err
    assert "atc" in result.err and "timeout" in result.err and "2 s" in result.err and "Traceback" not in result.err
    assert closing_table(result.out)["atc-bs4-ascend"] == "FAILED"
    assert fake_tools_under(tmp_path / "work") == []
    assert not (tmp_path / "work/toy/.ompipe/stages/atc-bs4-ascend.json").exists()


# ---------------------------------------------------------------- kills at random moments

STAGE_KEYS = ["clone", "patch", "weights", "dataset", "preprocess", "export-bs4-ascend", "simplify-bs4-ascend",
              "atc-bs4-ascend", "compare-bs4-ais_bench", "infer-bs4-ais_bench", "eval-bs4-ais_bench", "perf-bs4-ais_bench"]
# Outputs whose bytes depend on time (measured fps), compared by their deterministic fields only.
TIMED_OUTPUTS = {"results/perf_ais_bench_bs4.json"}


def output_digests(model_dir: Path) -> dict[str, str]:
    """Every recorded output of every stage, files and the files under directories, by sha256."""
    from om_pipeline.state import sha256_file

    digests = {}
    for record_file in sorted((model_dir / ".ompipe/stages").glob("*.json")):
        for relative in json.loads(record_file.read_text())["outputs"]:
            path = model_dir / relative
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                name = str(file.relative_to(model_dir))
                if name not in TIMED_OUTPUTS and not name.startswith("src/.git/"):  # git's own index times
                    digests[name] = sha256_file(file)
    return digests


def test_kills_at_random_moments_then_a_rerun_equals_a_clean_run(toy, tmp_path):
    """Kill ompipe at random moments in every stage (SIGKILL to its process group, SIGTERM to its
    PID), then rerun: the final metric and every stage's outputs equal a clean run's, byte for
    byte, in the same directory (the .om embeds its path). OMPIPE_KILL_TEST_KILLS sets how many
    kills (20 for the issue's full test; 2 by default, one of each signal, to keep CI short)."""
    kills = int(os.environ.get("OMPIPE_KILL_TEST_KILLS", "2"))
    work = tmp_path / "work"
    clean = subprocess.run(toy_argv(toy, work), capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    clean_metrics, clean_outputs = results(work)["metrics"], output_digests(work / "toy")
    assert len(clean_outputs) > 30
    work.rename(tmp_path / "clean")

    generator = random.Random(13)
    landed = []
    for attempt in range(kills):
        target = STAGE_KEYS[attempt % len(STAGE_KEYS)]
        record = work / "toy/.ompipe/stages" / f"{target}.json"
        process = start(toy_argv(toy, work, *(["--force"] if record.exists() else [])))
        lines: list[str] = []
        while (line := process.stdout.readline()) and line.split()[:2] != ["RUN", target]:
            lines.append(line)
        time.sleep(generator.choice([0.0, generator.uniform(0, 0.5)]))  # half at once: the fast stages get hit too
        signum = signal.SIGKILL if attempt % 2 == 0 else signal.SIGTERM
        alive = process.poll() is None
        if signum == signal.SIGKILL:
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
        out, err = process.communicate(timeout=120)
        # -SIGTERM: it landed while the interpreter started or shut down, outside ompipe's handler
        assert process.returncode in (0, -signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM), err
        assert not (alive and process.returncode == 0), f"the {signum.name} was lost: {err}"
        if process.returncode == 128 + signal.SIGTERM:
            assert "interrupted" in err and "Traceback" not in err
        running = [line.split()[1] for line in [*lines, line, *out.splitlines()] if line.split()[:1] == ["RUN"]]
        landed.append((target, signum.name, process.returncode, running[-1] if running else None))
        wait_until(lambda: fake_tools_under(work) == [], timeout=30)  # no orphaned tool outlives ompipe
    print("kills:", *landed, sep="\n  ")
    assert len({stage for _, _, code, stage in landed if code != 0}) >= min(kills, len(STAGE_KEYS)) // 2

    rerun = subprocess.run(toy_argv(toy, work), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert results(work)["metrics"] == clean_metrics
    assert output_digests(work / "toy") == clean_outputs
