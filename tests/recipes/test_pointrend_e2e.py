"""`ompipe run pointrend --export-path native --weights random --toolchain fake --data <tiny
Cityscapes-format set> --limit 3` to an mIoU, in chunks, with bounded disk; the same with
`--backend onnxruntime` and `--stream`. No upstream checkout, no network (the native path skips
clone and patch); the upstream path's own end-to-end run is in test_pointrend_upstream.py.

The network input is 128 x 256 here (params, input and output shapes changed together; atc's
--input_shape follows model.inputs): 1024 x 2048 costs ~10 s per image on 2 cores.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from om_pipeline.models import pointrend as plugin
from om_pipeline.data.pointrend_synth import synthesize
from om_pipeline.plugin import settings_from_params
from om_pipeline.recipe import find_recipe
from om_pipeline.testing.dry_run import closing_table
from om_pipeline.testing.shards import merged_metrics, metrics_json, run_shards
from om_pipeline.testing.upstream import shared_env_cache, upstream_source

SMALL = (128, 256)
COMMON = ("--export-path", "native", "--weights", "random", "--toolchain", "fake", "--limit", "3", "--workdir", "work")


def small_recipe(directory):
    text = find_recipe("pointrend").path.read_text()
    h, w = SMALL
    for old, new in (("input_size: [1024, 2048]", f"input_size: [{h}, {w}]"), ("shape: [3, 1024, 2048]", f"shape: [3, {h}, {w}]"),
                     ("shape: [19, 1024, 2048]", f"shape: [19, {h}, {w}]"),
                     ("chunk: 8", "chunk: 2")):
        assert old in text, old
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pointrend.yaml").write_text(text)
    return directory


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("cityscapes"), images=4, size=SMALL, seed=1)


def results(tmp_path, tool, stream=False):
    return json.loads((tmp_path / f"work/pointrend/results/pointrend_{tool}_bs1{'_stream' if stream else ''}.json").read_text())


def expected_miou(tmp_path, data, recipes) -> float:
    """The metric computed directly: the plugin's preprocessing, ONNX Runtime on the exported
    onnxruntime-target model, argmax, the evaluator; no runner, files or chunks."""
    import onnxruntime

    params = settings_from_params(plugin.Settings, find_recipe(str(recipes / "pointrend.yaml")).recipe.stage_params("eval"))
    session = onnxruntime.InferenceSession(str(tmp_path / "work/pointrend/onnx/pointrend_bs1.onnxruntime.onnx"),
                                           providers=["CPUExecutionProvider"])
    evaluator = plugin.evaluator(data, params)
    for sample in plugin.list_samples(data, params)[:3]:
        (image,) = plugin.preprocess(sample, params)
        evaluator.add(sample, plugin.reduce_outputs([session.run(None, {"images": image[None]})[0][0]]))
    return evaluator.result()["miou"]


def test_native_path_runs_in_chunks_with_the_fake_toolchain_and_onnx_runtime(ompipe, cityscapes, tmp_path):
    recipes = small_recipe(tmp_path / "recipes")
    first = ompipe("run", "pointrend", "--recipes", recipes, "--data", cityscapes, *COMMON)
    assert first.code == 0, first.err + first.out
    table = closing_table(first.out)
    assert table["clone"] == table["patch"] == "SKIPPED" and table["preprocess"] == "SKIPPED"
    fake = results(tmp_path, "ais_bench")
    assert 0 <= fake["metrics"]["miou"] <= 1 and fake["samples"] == 3 and fake["random_weights"]
    assert fake["compare"]["rungs"] == ["pytorch", "onnx", "om (fp16 emulated)"]  # ATC's force_fp16, emulated
    assert 0.9999 < fake["compare"]["stats"]["om (fp16 emulated)"]["results"]["cosine"] < 1

    infer = tmp_path / "work/pointrend/infer/ais_bench_bs1"
    kept = sorted(infer.iterdir())
    assert [p.name for p in kept] == sorted(f"{s.id}_0.npy" for s in plugin.list_samples(cityscapes, plugin.Settings(input_size=tuple(SMALL)))[:3])
    assert all(np.load(p).dtype == np.uint8 and np.load(p).shape == SMALL for p in kept)
    record = json.loads((tmp_path / "work/pointrend/.ompipe/stages/infer-bs1-ais_bench.json").read_text())["info"]
    raw_per_image = (3 + 19) * SMALL[0] * SMALL[1] * 4  # input and logits, float32
    assert record["chunks"] == 2 and record["peak_disk_bytes"] < 2 * raw_per_image + 3 * SMALL[0] * SMALL[1] + 2**20

    ort = ompipe("run", "pointrend", "--recipes", recipes, "--data", cityscapes, "--backend", "onnxruntime", *COMMON)
    assert ort.code == 0, ort.err + ort.out
    baseline = results(tmp_path, "onnxruntime")["metrics"]["miou"]
    assert baseline == expected_miou(tmp_path, cityscapes, recipes)
    # the fake .om runs the ascend graph (gathers) at emulated fp16, ONNX Runtime the GridSample
    # one at fp32: the same predictions but for rare near-ties and fp16 rounding
    assert fake["metrics"]["miou"] == pytest.approx(baseline, abs=2e-3)

    stream = ompipe("run", "pointrend", "--recipes", recipes, "--data", cityscapes, "--backend", "onnxruntime", "--stream", *COMMON)
    assert stream.code == 0, stream.err + stream.out
    assert results(tmp_path, "onnxruntime", stream=True)["metrics"] == results(tmp_path, "onnxruntime")["metrics"]

    again = ompipe("run", "pointrend", "--recipes", recipes, "--data", cityscapes, *COMMON)
    assert again.code == 0 and set(closing_table(again.out).values()) <= {"CACHED", "SKIPPED"}, again.out

    # 3 shards (chunked infer in each) + merge: the unsharded mIoU, digit for digit, on the same model
    args = ("--recipes", recipes, "--data", cityscapes, *COMMON)
    expected = metrics_json(tmp_path / "work/pointrend/results/pointrend_ais_bench_bs1.json")
    run_shards(ompipe, "pointrend", args, tmp_path / "work/pointrend", order=(1, 2, 0))
    assert merged_metrics(ompipe, "pointrend", args, tmp_path / "work/pointrend/results/pointrend_ais_bench_bs1.json") == expected


@pytest.mark.upstream
@pytest.mark.skipif(not upstream_source("pointrend"), reason="OMPIPE_UPSTREAM_POINTREND is not set (a detectron2 clone or mirror)")
def test_upstream_path_runs_with_the_fake_toolchain_and_onnx_runtime(ompipe, cityscapes, tmp_path):
    """The recipe's default path: clone, our patch, the export environment (in OMPIPE_TEST_CACHE
    when set: gigabytes; else this test's own cache), detectron2 installed into it, the export through upstream's own model.
    Random weights are the native model's, so the golden comparison's PyTorch rung (the native
    model) and the .om must agree: that is upstream == native, through the whole runner."""
    recipes = small_recipe(tmp_path / "recipes")
    common = ("--recipes", recipes, "--data", cityscapes, "--source", upstream_source("pointrend"), "--weights", "random",
              "--toolchain", "fake", "--limit", "2", "--workdir", "work")
    with shared_env_cache():
        fake = ompipe("run", "pointrend", *common)
        ort = ompipe("run", "pointrend", *common, "--backend", "onnxruntime")
    assert fake.code == 0, fake.err + fake.out
    assert closing_table(fake.out)["patch"] == "RUN"
    result = results(tmp_path, "ais_bench")
    assert result["compare"]["rungs"] == ["pytorch", "onnx", "om"]
    assert result["compare"]["stats"]["om"]["results"]["cosine"] > 0.9999
    assert ort.code == 0, ort.err + ort.out
    assert results(tmp_path, "onnxruntime")["metrics"]["miou"] == pytest.approx(result["metrics"]["miou"], abs=2e-3)

