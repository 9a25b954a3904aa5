"""Preprocessing in worker processes: the files the files mode writes and the batches the
stream fills are the same with and without workers; errors reach the user as themselves; a
dead worker is an error, not a hang; a ring slot is never refilled while its batch is in use."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from om_pipeline import stream, workers
from om_pipeline.errors import UserError
from om_pipeline.tools.atc import AtcFlagError


def test_files_mode_workers_write_the_same_files_as_one_process(ompipe, toy, tmp_path):
    common = ("stage", "toy", "preprocess", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake")
    assert ompipe(*common, "--workdir", "serial", "--workers", "0").code == 0
    assert ompipe(*common, "--workdir", "pooled", "--workers", "2").code == 0
    serial = sorted((tmp_path / "serial/toy/inputs").rglob("*.bin"))
    pooled = sorted((tmp_path / "pooled/toy/inputs").rglob("*.bin"))
    assert len(serial) == 12 and [p.name for p in serial] == [p.name for p in pooled]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(serial, pooled))


@pytest.mark.parametrize("mode", [(), ("--stream",)], ids=["files", "stream"])
def test_a_plugin_error_in_a_worker_is_one_clear_message(ompipe, toy, tmp_path, mode):
    (toy.data / "images").joinpath(sorted(p.name for p in (toy.data / "images").glob("*.png"))[5]).write_bytes(b"not a png")
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--backend", "onnxruntime",
                    "--workers", "2", *mode)
    assert result.code == 1
    assert "cannot read image" in result.err and "img_005.png" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "work/toy/inputs").exists()  # nothing half-written looks complete


def test_negative_workers_is_refused(ompipe, toy):
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workers", "-1", "--dry-run")
    assert result.code == 1 and "--workers -1" in result.err


def test_a_worker_that_dies_is_an_error_not_a_hang():
    parent = os.getpid()

    def die_in_a_worker(sample):
        if os.getpid() != parent and sample == 3:
            os._exit(9)  # as the OOM killer would end it

    with pytest.raises(UserError, match="worker process died"):
        list(workers.for_each_sample(die_in_a_worker, list(range(8)), requested_workers=2))


def test_for_each_sample_runs_every_sample_once_in_either_way(tmp_path):
    def touch(sample):
        (tmp_path / str(sample)).open("a").write(f"{os.getpid()}\n")

    ticks = list(workers.for_each_sample(touch, list(range(20)), requested_workers=2))
    assert len(ticks) == 20
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == list(range(20))
    assert all(len(p.read_text().splitlines()) == 1 for p in tmp_path.iterdir())
    pids = {p.read_text().strip() for p in tmp_path.iterdir()}
    assert str(os.getpid()) in pids and len(pids) > 1  # the first here, the rest in workers


def test_choose_workers(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 16)
    assert workers.choose_workers(3, 0.0) == 3  # --workers wins
    assert workers.choose_workers(None, 0.0005) == 0  # cheaper than shipping it out
    assert workers.choose_workers(None, 0.1) == workers.MAX_DEFAULT_WORKERS
    monkeypatch.setattr(workers, "usable_cores", lambda: 1)
    assert workers.choose_workers(None, 0.1) == 0  # no core to spare


def test_workers_for_times_a_warm_second_run(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 4)
    runs = []

    def first():  # the first run pays a slow import; the timed one is cheap
        time.sleep(0.05 if not runs else 0)
        runs.append(1)

    assert workers.workers_for(None, first) == 0 and len(runs) == 2
    runs.clear()
    assert workers.workers_for(2, first) == 2 and len(runs) == 1  # --workers given: nothing to time


def test_user_errors_cross_processes_with_their_hint():
    error = pickle.loads(pickle.dumps(UserError("bad image", hint="check it", details=["a line"])))
    assert (error.message, error.hint, error.details, str(error)) == ("bad image", "check it", ["a line"], "bad image")
    flag = pickle.loads(pickle.dumps(AtcFlagError("unknown flag --x", "x")))
    assert type(flag) is AtcFlagError and flag.flag == "x" and flag.hint


def specs(*shapes):
    return [SimpleNamespace(shape=list(shape), dtype="float32") for shape in shapes]


def test_ring_rows_padding_and_sharing_with_a_forked_child():
    ring = workers.BatchRing((None,), specs((2, 3), (4,)), bs=3, slots=2)
    ring.put(1, 0, {None: [np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32)]})
    image, vector = ring.padded(1, 1)[None]
    assert image.shape == (3, 2, 3) and (image == 1).all() and (vector == np.arange(4)).all()
    assert not ring.slots[0][None][0].any()  # slots do not overlap
    pid = os.fork()
    if pid == 0:  # the child writes; the parent must see it
        ring.put(0, 2, {None: [np.full((2, 3), 7, np.float32), np.zeros(4, np.float32)]})
        os._exit(0)
    os.waitpid(pid, 0)
    assert (ring.slots[0][None][0][2] == 7).all()


def test_stream_never_refills_a_slot_whose_batch_is_in_use():
    """Workers fill each row with its sample's number while the consumer is slow: every batch
    handed out must hold exactly its own samples, whatever the workers did meanwhile."""
    ring = workers.BatchRing((None,), specs((1,)), bs=2, slots=3)
    samples = list(range(17))
    batches = [samples[i:i + 2] for i in range(0, len(samples), 2)]

    def fill(slot, row, sample):
        ring.put(slot, row, {None: [np.array([sample], np.float32)]})

    seen = []
    with stream._submitter(fill, 2) as submit:
        for batch, slot in stream._filled_batches(batches, 3, submit):
            before = ring.slots[slot][None][0][:len(batch), 0].tolist()
            time.sleep(0.02)  # the model runs; the workers may fill other slots
            assert ring.slots[slot][None][0][:len(batch), 0].tolist() == before == batch
            seen.extend(batch)
    assert seen == samples


@pytest.mark.parametrize("count", [17, 1])
def test_stream_keeps_both_batches_the_caller_holds(count):
    """The stream holds two batches (one in the model while it scores the one before): neither is
    refilled while held, with 1 or 3 slots ahead."""
    ring = workers.BatchRing((None,), specs((1,)), bs=2, slots=4)
    samples = list(range(count))
    batches = [samples[i:i + 2] for i in range(0, len(samples), 2)]

    def fill(slot, row, sample):
        ring.put(slot, row, {None: [np.array([sample], np.float32)]})

    held, seen = [], []
    with stream._submitter(fill, 2) as submit:
        for batch, slot in stream._filled_batches(batches, min(4, len(batches)), submit, held=2):
            held = [*held[-1:], (batch, slot)]
            time.sleep(0.01)
            for kept, kept_slot in held:
                assert ring.slots[kept_slot][None][0][:len(kept), 0].tolist() == kept
            seen.extend(batch)
    assert seen == samples


def test_the_ring_keeps_every_worker_busy():
    assert stream.ring_slots(0, 8) == 3 and stream.ring_slots(2, 8) == 3  # one in the model, two filling
    assert stream.ring_slots(8, 1) == 17  # bs 1: two samples queued per worker


def test_workers_run_torch_and_opencv_after_the_parent_used_their_thread_pools():
    """A forked child's first torch op hangs on the parent's OpenMP pool unless the worker
    limits torch to one thread; cv2.setNumThreads in a child hangs too (so it is not called)."""
    code = """
import cv2, numpy as np, torch
from om_pipeline import workers
image = np.random.rand(600, 800, 3).astype(np.float32)
cv2.resize(image, (400, 300)); torch.ones(500, 500) @ torch.ones(500, 500)  # both pools now live here
def work(sample):
    cv2.resize(image, (400, 300)); torch.ones(500, 500) @ torch.ones(500, 500)
assert len(list(workers.for_each_sample(work, list(range(6)), requested_workers=2))) == 6
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
