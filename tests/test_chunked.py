"""Chunked files mode (`infer.chunk`): preprocess -> tool -> reduce one chunk at a time, only
the reduced outputs kept, the same metric as the unchunked run, bounded disk, and a resumed
run after an interruption (the toy fixture, fake toolchain and ONNX Runtime)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from om_pipeline.testing.dry_run import closing_table, planned_commands

# The toy plugin plus a reduction (logits -> float64 copy and argmax), and a way to interrupt
# preprocessing once, at a named sample, as Ctrl-C would.
REDUCING_PLUGIN = '''
import os
from pathlib import Path

import numpy as np

from om_pipeline.testing import toy_plugin
from om_pipeline.testing.toy_plugin import Settings, export, list_samples, torch_forward


def preprocess(sample, settings):
    flag = os.environ.get("TOY_INTERRUPT_FLAG")
    if flag and sample.id == os.environ.get("TOY_INTERRUPT_AT") and not Path(flag).exists():
        Path(flag).touch()
        raise KeyboardInterrupt
    return toy_plugin.preprocess(sample, settings)


def reduce_outputs(outputs):
    logits = np.asarray(outputs[0], dtype=np.float64)
    return [logits, np.array(np.argmax(logits), dtype=np.int64)]


class Evaluator(toy_plugin.Top1):
    def add(self, sample, outputs):
        logits, top = outputs
        assert logits.dtype == np.float64 and int(top) == int(np.argmax(logits)), "unreduced outputs reached the evaluator"
        super().add(sample, [logits])


def evaluator(data, settings):
    return Evaluator()
'''


def chunked_recipe(toy, chunk: int):
    recipe = toy.recipes / "toy.yaml"
    text = recipe.read_text()
    text = text.replace("plugin: om_pipeline.testing.toy_plugin", "plugin: file:toy_reducing.py")
    text = text.replace('"--batchsize={bs}"]\n  eval:', f'"--batchsize={{bs}}"]\n    chunk: {chunk}\n  eval:')
    assert f"chunk: {chunk}" in text
    (toy.recipes / "toy_reducing.py").write_text(REDUCING_PLUGIN)
    recipe.write_text(text)


def run(ompipe, toy, *extra):
    return ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work", "--toolchain", "fake", *extra)


def metrics(tmp_path, tool="ais_bench"):
    return json.loads((tmp_path / f"work/toy/results/toy_{tool}_bs4.json").read_text())["metrics"]


@pytest.mark.parametrize("backend", [(), ("--backend", "onnxruntime")], ids=["ais_bench", "onnxruntime"])
def test_chunked_run_keeps_only_reduced_outputs_and_gives_the_same_metric(ompipe, toy, tmp_path, backend):
    tool = "onnxruntime" if backend else "ais_bench"
    plain = run(ompipe, toy, *backend, "--workdir", "plain")
    assert plain.code == 0, plain.err + plain.out
    expected = json.loads((tmp_path / f"plain/toy/results/toy_{tool}_bs4.json").read_text())["metrics"]

    chunked_recipe(toy, chunk=5)  # 12 samples: chunks of 5, 5, 2; bs 4 pads inside each chunk
    first = run(ompipe, toy, *backend)
    assert first.code == 0, first.err + first.out
    table = closing_table(first.out)
    assert table["preprocess"] == "SKIPPED"
    assert metrics(tmp_path, tool) == expected

    infer = tmp_path / f"work/toy/infer/{tool}_bs4"
    kept = sorted(p.name for p in infer.iterdir())
    assert kept == sorted(f"img_{i:03d}_{k}.npy" for i in range(12) for k in (0, 1))
    assert np.load(infer / "img_000_0.npy").dtype == np.float64
    assert not (tmp_path / "work/toy/inputs").exists()
    record = json.loads((tmp_path / f"work/toy/.ompipe/stages/infer-bs4-{tool}.json").read_text())
    assert record["info"]["chunks"] == 3 and record["info"]["chunk"] == 5 and record["info"]["resumed_chunks"] == 0
    # one chunk's inputs (3 x 16 x 16 float32) and raw outputs at most, plus what is kept
    one_chunk = 5 * (3 * 16 * 16 * 4 + 4 * 4)
    kept_bytes = sum(p.stat().st_size for p in infer.iterdir())
    assert 0 < record["info"]["peak_disk_bytes"] <= one_chunk + kept_bytes + 64 * 1024  # + ais_bench's summary files

    again = run(ompipe, toy, *backend)
    assert again.code == 0 and set(closing_table(again.out).values()) <= {"CACHED", "SKIPPED"}


def test_changing_the_chunk_size_reruns_infer_and_eval_only(ompipe, toy, tmp_path):
    chunked_recipe(toy, chunk=5)
    assert run(ompipe, toy).code == 0
    before = metrics(tmp_path)
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace("chunk: 5", "chunk: 3"))
    second = run(ompipe, toy)
    assert second.code == 0, second.err + second.out
    ran = {key for key, status in closing_table(second.out).items() if status == "RUN"}
    assert ran == {"infer-bs4-ais_bench", "eval-bs4-ais_bench"}
    assert metrics(tmp_path) == before


def test_interrupted_chunked_run_resumes_at_the_first_unfinished_chunk(ompipe, toy, tmp_path, monkeypatch):
    chunked_recipe(toy, chunk=5)
    monkeypatch.setenv("TOY_INTERRUPT_AT", "img_007")  # in the second chunk
    monkeypatch.setenv("TOY_INTERRUPT_FLAG", str(tmp_path / "interrupted-once"))
    first = run(ompipe, toy)
    assert first.code == 130, first.err + first.out
    assert not (tmp_path / "work/toy/.ompipe/stages/infer-bs4-ais_bench.json").exists()  # nothing looks complete
    assert not (tmp_path / "work/toy/infer").exists()
    assert (tmp_path / "work/toy/.staging/infer-bs4-ais_bench/chunks-done/0.json").is_file()

    second = run(ompipe, toy)
    assert second.code == 0, second.err + second.out
    assert "resuming" in second.out
    record = json.loads((tmp_path / "work/toy/.ompipe/stages/infer-bs4-ais_bench.json").read_text())
    assert record["info"]["resumed_chunks"] == 1 and record["info"]["chunks"] == 3
    assert not (tmp_path / "work/toy/.staging/infer-bs4-ais_bench").exists()

    fresh = run(ompipe, toy, "--workdir", "fresh")
    assert fresh.code == 0
    assert metrics(tmp_path) == json.loads((tmp_path / "fresh/toy/results/toy_ais_bench_bs4.json").read_text())["metrics"]


def test_force_does_not_resume(ompipe, toy, tmp_path, monkeypatch):
    chunked_recipe(toy, chunk=5)
    monkeypatch.setenv("TOY_INTERRUPT_AT", "img_007")
    monkeypatch.setenv("TOY_INTERRUPT_FLAG", str(tmp_path / "interrupted-once"))
    assert run(ompipe, toy).code == 130
    forced = run(ompipe, toy, "--force")
    assert forced.code == 0 and "resuming" not in forced.out
    record = json.loads((tmp_path / "work/toy/.ompipe/stages/infer-bs4-ais_bench.json").read_text())
    assert record["info"]["resumed_chunks"] == 0


def test_dry_run_shows_the_tool_argv_on_a_chunk_directory(ompipe, toy, tmp_path):
    chunked_recipe(toy, chunk=5)
    plan = run(ompipe, toy, "--dry-run")
    assert plan.code == 0, plan.err + plan.out
    infer = [argv for argv in planned_commands(plan.out) if argv[1:3] == ["-m", "ais_bench"] and "--loop=20" not in argv]
    assert len(infer) == 1
    assert f"--input={tmp_path}/work/toy/.staging/infer-bs4-ais_bench/chunk/inputs/image" in infer[0]
