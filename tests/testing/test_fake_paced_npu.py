"""The fake toolchain's paced NPU (OMPIPE_FAKE_NPU): outputs replayed from a recording by the
digest of each input row, whatever the order and the batching; the exact replay's metric equals
the recording run's; the cyclic replay runs any N and its results say "paced emulator"; busy
intervals are written for the utilisation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from om_pipeline.testing import fake_paced_npu
from om_pipeline.testing.dry_run import closing_table
from om_pipeline.testing.fake_runtime import TensorSpec


def results(tmp_path, name, tool, bs, suffix=""):
    return json.loads((tmp_path / f"work/{name}/results/{name}_{tool}_bs{bs}{suffix}.json").read_text())


def test_exact_replay_gives_the_recording_runs_metric_in_both_modes(ompipe, toy, tmp_path, monkeypatch):
    recording = tmp_path / "recording"
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--bs", "2")
    monkeypatch.setenv("OMPIPE_FAKE_NPU_DIR", str(recording))
    monkeypatch.setenv("OMPIPE_FAKE_NPU", "record")
    recorded = ompipe(*common, "--stream", "--workers", "0")  # recorded in the stream, in process
    assert recorded.code == 0, recorded.err
    want = results(tmp_path, "toy", "ais_bench", 2, "_stream")
    assert "paced emulator" not in want.get("provenance", [])  # recording runs the model itself

    monkeypatch.setenv("OMPIPE_FAKE_NPU", "paced:400")
    for extra in ((), ("--stream", "--workers", "2")):  # replayed by the fake ais_bench (a child), and in memory
        shutil.rmtree(recording / "busy", ignore_errors=True)
        replayed = ompipe(*common, *extra)
        assert replayed.code == 0, replayed.err
        got = results(tmp_path, "toy", "ais_bench", 2, "_stream" if extra else "")
        assert got["metrics"] == want["metrics"]  # exactly
        assert "paced emulator" in got["provenance"]
    intervals = fake_paced_npu.busy_intervals(recording)
    assert len(intervals) == 6  # the stream's: 12 samples at bs 2, 2 / 400 s each
    assert all(end - start == pytest.approx(2 / 400, abs=1e-6) for start, end in intervals)
    assert 0 < fake_paced_npu.utilisation(intervals)["busy_fraction"] <= 1

    monkeypatch.delenv("OMPIPE_FAKE_NPU")  # a normal run reuses nothing the replay made
    normal = ompipe(*common)
    rows = closing_table(normal.out)
    assert rows["infer-bs2-ais_bench"] == rows["eval-bs2-ais_bench"] == "RUN", rows
    assert "paced emulator" not in results(tmp_path, "toy", "ais_bench", 2).get("provenance", [])


def test_cyclic_replay_serves_any_n_from_a_small_recording_and_exact_refuses(ompipe, toy, tmp_path, monkeypatch):
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--bs", "4", "--stream")
    monkeypatch.setenv("OMPIPE_FAKE_NPU_DIR", str(tmp_path / "recording"))
    monkeypatch.setenv("OMPIPE_FAKE_NPU", "record")
    assert ompipe(*common, "--limit", "4").code == 0
    monkeypatch.setenv("OMPIPE_FAKE_NPU", "paced:1000")
    refused = ompipe(*common)
    assert refused.code == 1 and "never recorded" in refused.err and "Traceback" not in refused.err
    monkeypatch.setenv("OMPIPE_FAKE_NPU", "cyclic:1000")
    cyclic = ompipe(*common)
    assert cyclic.code == 0, cyclic.err
    assert "paced emulator" in results(tmp_path, "toy", "ais_bench", 4, "_stream")["provenance"]


def test_rows_are_found_whatever_the_batching_and_the_rate_comes_from_the_guide(tmp_path, monkeypatch):
    monkeypatch.setenv("OMPIPE_FAKE_NPU_DIR", str(tmp_path))
    specs = ([TensorSpec("x", (3, 2), np.dtype("float32"))], [TensorSpec("y", (3, 1), np.dtype("float32"))])
    rows = np.arange(18, dtype=np.float32).reshape(9, 2)

    def model(arrays):
        return [arrays[0].sum(axis=1, keepdims=True)]

    monkeypatch.setenv("OMPIPE_FAKE_NPU", "record")
    recorder = fake_paced_npu.from_environment(b"model", *specs)
    for start in range(0, 9, 3):
        recorder.execute([rows[start:start + 3]], model)
    monkeypatch.setenv("OMPIPE_FAKE_NPU", "paced")
    monkeypatch.setenv("OMPIPE_FAKE_NPU_GUIDE_FPS", json.dumps({"3": 3000.0}))
    replay = fake_paced_npu.from_environment(b"model", *specs)
    shuffled = rows[[7, 2, 4]]
    assert np.array_equal(replay.execute([shuffled], None)[0], model([shuffled])[0])
    (start, end), = fake_paced_npu.busy_intervals(tmp_path)
    assert end - start == pytest.approx(3 / 3000.0, abs=1e-6)
    with pytest.raises(fake_paced_npu.PacedNpuError, match="never recorded"):
        replay.execute([rows[:3] + 0.5], None)
    with pytest.raises(fake_paced_npu.PacedNpuError, match="nothing recorded"):
        fake_paced_npu.from_environment(b"another model", *specs)
    monkeypatch.setenv("OMPIPE_FAKE_NPU", "paced:fast")
    with pytest.raises(fake_paced_npu.PacedNpuError, match="must be a number"):
        fake_paced_npu.setting()


def test_exact_replay_of_a_real_recipe_gives_its_metric(ompipe, tmp_path, monkeypatch):
    """GFocalV2 at 128 x 192 on a tiny synthetic COCO: recorded through the fake ais_bench in files
    mode, replayed in the stream (other batching of the work, other process): the same AP."""
    from om_pipeline.data.gfocalv2_tinycoco import write_tiny_coco
    from tests.recipes.test_gfocalv2_e2e import small_recipe

    coco = write_tiny_coco(tmp_path / "coco", images=6, seed=5)
    common = ("run", "gfocalv2", "--recipes", small_recipe(tmp_path / "recipes"), "--weights", "random", "--toolchain", "fake",
              "--infer-tool", "ais_bench", "--data", coco, "--limit", "4", "--workdir", "work", "--to", "eval")
    monkeypatch.setenv("OMPIPE_FAKE_NPU_DIR", str(tmp_path / "recording"))
    monkeypatch.setenv("OMPIPE_FAKE_NPU", "record")
    assert ompipe(*common).code == 0
    monkeypatch.setenv("OMPIPE_FAKE_NPU", "paced:200")
    replayed = ompipe(*common, "--stream", "--workers", "0")
    assert replayed.code == 0, replayed.err
    want, got = results(tmp_path, "gfocalv2", "ais_bench", 1), results(tmp_path, "gfocalv2", "ais_bench", 1, "_stream")
    assert got["metrics"] == want["metrics"] and got["samples"] == 4
    assert "paced emulator" in got["provenance"] and "paced emulator" not in want.get("provenance", [])


def test_a_long_replay_keeps_few_recorded_rows_mapped(tmp_path):
    """Each mapped row holds file descriptors: cyclic replay maps each recorded row once whatever
    the number of distinct inputs (15k TransPose persons once ran out of descriptors), and an exact
    replay keeps at most MAPPED_ROWS mapped."""
    root = tmp_path / "model"
    for index in range(3):
        (root / f"row{index}").mkdir(parents=True)
        np.save(root / f"row{index}" / "0.npy", np.full(2, index, dtype=np.float32))
    cyclic = fake_paced_npu.Recording(root, cyclic=True)
    replayed = [float(cyclic.outputs(f"input{k}")[0][0]) for k in range(5000)]
    assert replayed[:4] == [0.0, 1.0, 2.0, 0.0] and len(cyclic._loaded) == 3
    assert float(cyclic.outputs("input1")[0][0]) == 1.0  # the same input, the same outputs
    exact = fake_paced_npu.Recording(root, cyclic=False)
    for _ in range(2):
        assert [float(exact.outputs(f"row{k}")[0][0]) for k in range(3)] == [0.0, 1.0, 2.0]
    assert len(exact._loaded) <= fake_paced_npu.MAPPED_ROWS
