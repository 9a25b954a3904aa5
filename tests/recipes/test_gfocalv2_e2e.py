"""`ompipe run gfocalv2 --weights random --toolchain fake --data <tiny COCO> --limit 8` on the
native export path, with msame (the guide's tool), ais_bench and `--backend onnxruntime`:
no upstream checkout, no network (clone and patch are skipped by the native path).

The fake .om runs the onnxruntime target's graph (ONNX Runtime cannot run BatchMultiClassNMS)
and then the plugin's host stand-in for that op (`ascend_ops_on_host`), so msame and ais_bench
give the graph's dets and labels, as on an NPU, and ONNX Runtime the pre-NMS outputs, on which
the evaluator does the NMS itself. A second evaluation scores the same runs against
ground truth made from ONNX Runtime's own detections: the three tools then agree on a
non-trivial AP, and the false positives on the two images without ground truth count only in
the standard (all images) evaluation, as the 4952-vs-5000 difference does on val2017. The
raw outputs of the three tools agree too (TXT keeps 6 digits).

The network input is 128 x 192 here (recipe params and input shape changed together; atc's
--input_shape follows model.inputs): 800 x 1216 costs seconds per image on 2 cores.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from om_pipeline.models import gfocalv2 as plugin
from om_pipeline.models.gfocalv2_model import candidate_count
from om_pipeline.data.gfocalv2_tinycoco import write_tiny_coco
from om_pipeline.plugin import settings_from_params
from om_pipeline.recipe import find_recipe
from om_pipeline.samples import read_outputs
from om_pipeline.testing.shards import merged_metrics, run_shards

SMALL = (128, 192)
# ONNX Runtime previews the .om's numerics (ATC's force_fp16, emulated as the fake .om computes):
# the three tools then compute the same tensors
TOOLS = {"msame": (), "ais_bench": ("--infer-tool", "ais_bench"), "onnxruntime": ("--backend", "onnxruntime", "--precision", "fp16")}
SUFFIX = {"onnxruntime": "_fp16"}


def small_recipe(directory):
    """The shipped recipe at a 128 x 192 input: everything else as shipped."""
    text = find_recipe("gfocalv2").path.read_text()
    k = candidate_count(*SMALL)
    for old, new in (("input_size: [800, 1216]", f"input_size: [{SMALL[0]}, {SMALL[1]}]"),
                     ("shape: [3, 800, 1216]", f"shape: [3, {SMALL[0]}, {SMALL[1]}]"),
                     ("[3267, 4]", f"[{k}, 4]"), ("[3267, 81]", f"[{k}, 81]")):
        assert old in text, old
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gfocalv2.yaml").write_text(text)
    return directory


def results(tmp_path, tool):
    return json.loads((tmp_path / f"work/gfocalv2/results/gfocalv2_{tool}_bs1{SUFFIX.get(tool, '')}.json").read_text())


def ground_truth_from_detections(tmp_path, coco, keep_empty: set[int], infer_name: str = "onnxruntime_bs1_fp16"):
    """Rewrite the annotations: ONNX Runtime's 3 best detections per image (from
    `infer/<infer_name>`) become the ground truth of the 8 images run, except those in `keep_empty`."""
    recipe = find_recipe(str(tmp_path / "recipes/gfocalv2.yaml")).recipe
    params = settings_from_params(plugin.Settings, recipe.stage_params("eval"))
    evaluator = plugin.evaluator(coco, params)
    infer = tmp_path / "work/gfocalv2/infer" / infer_name
    for sample in plugin.list_samples(coco, params)[:8]:
        evaluator.add(sample, read_outputs(infer, sample.id, recipe.model.outputs_for("onnxruntime")))
    best: dict[int, list] = {}
    for record in sorted(evaluator.records(), key=lambda r: -r["score"]):
        if record["image_id"] not in keep_empty and len(best.setdefault(record["image_id"], [])) < 3:
            best[record["image_id"]].append(record)
    dataset = json.loads((coco / "annotations/instances_val2017.json").read_text())
    dataset["annotations"] = [
        {"id": n + 1, "image_id": r["image_id"], "category_id": r["category_id"], "bbox": r["bbox"],
         "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0}
        for n, r in enumerate(r for records in best.values() for r in records)]
    (coco / "annotations/instances_val2017.json").write_text(json.dumps(dataset))
    return len({a["image_id"] for a in dataset["annotations"]})


def test_native_path_runs_with_msame_ais_bench_and_onnxruntime(ompipe, tmp_path):
    coco = write_tiny_coco(tmp_path / "coco", images=10, seed=5)
    recipes = small_recipe(tmp_path / "recipes")
    common = ("--recipes", recipes, "--weights", "random", "--toolchain", "fake", "--data", coco, "--limit", "8", "--workdir", "work")
    first = {}
    for tool, extra in TOOLS.items():
        result = ompipe("run", "gfocalv2", *common, *extra)
        assert result.code == 0, result.err
        record = results(tmp_path, tool)
        assert record["random_weights"] and record["samples"] == 8 and record["tool"] == tool
        metrics = record["metrics"]
        assert metrics["images_all"] == 8 and metrics["images_annotated"] == 6  # 2 of the first 8 have no annotation
        assert metrics["nms_in_graph"] == float(tool != "onnxruntime")  # the .om yields dets and labels
        first[tool] = metrics
    for tool in ("msame", "ais_bench"):  # the same random model on the same inputs: the same scores
        assert first[tool]["ap"] == pytest.approx(first["onnxruntime"]["ap"], abs=0.02)
    assert "SKIPPED" in next(line for line in result.out.splitlines() if line.startswith("clone"))
    # 3 shards + merge (ais_bench): the unsharded AP (COCO results concatenated in dataset order), digit for digit
    expected = json.dumps(results(tmp_path, "ais_bench")["metrics"], sort_keys=True)
    shard_args = (*common, *TOOLS["ais_bench"])
    run_shards(ompipe, "gfocalv2", shard_args, tmp_path / "work/gfocalv2", order=(0, 2, 1))
    assert merged_metrics(ompipe, "gfocalv2", shard_args, tmp_path / "work/gfocalv2/results/gfocalv2_ais_bench_bs1.json") == expected
    msame_outputs = sorted(p.name for p in (tmp_path / "work/gfocalv2/infer/msame_bs1").iterdir())
    assert msame_outputs[:2] == ["000000001000_0.txt", "000000001000_1.txt"] and len(msame_outputs) == 16
    # same random model, same inputs: msame's and ais_bench's dets and labels (TXT: 6 digits) are
    # the op's stand-in applied to ONNX Runtime's pre-NMS tensors
    model = find_recipe(str(recipes / "gfocalv2.yaml")).recipe.model
    infer = tmp_path / "work/gfocalv2/infer"
    params = {"input_size": list(SMALL)}
    for sample_id in ("000000001000", "000000001259"):
        pre_nms = read_outputs(infer / "onnxruntime_bs1_fp16", sample_id, model.outputs_for("onnxruntime"))
        want = plugin.ascend_ops_on_host([array[None] for array in pre_nms], params)
        assert want[1].shape == (1, 100) and (want[0][0, :, 4] > 0).any()
        for tool in ("msame", "ais_bench"):
            for got, expected in zip(read_outputs(infer / f"{tool}_bs1", sample_id, model.outputs_for("ascend")), want):
                assert np.allclose(got, expected[0], rtol=1e-5, atol=1e-4)

    empty = {1000 + 37 * i for i in (0, 5)}
    assert ground_truth_from_detections(tmp_path, coco, keep_empty=empty) == 8 - len(empty)
    aps = {}
    for tool, extra in TOOLS.items():
        result = ompipe("stage", "gfocalv2", "eval", *common, "--force", *extra)
        assert result.code == 0, result.err
        aps[tool] = results(tmp_path, tool)["metrics"]
    assert aps["onnxruntime"]["ap"] > 0.5  # its own best detections as ground truth (other images' boxes outrank some)
    assert aps["onnxruntime"]["ap_all_images"] < aps["onnxruntime"]["ap"]  # the 2 images without ground truth
    for tool in ("msame", "ais_bench"):  # TXT outputs keep 6 digits
        assert aps[tool]["ap"] == pytest.approx(aps["onnxruntime"]["ap"], abs=0.02)
        assert aps[tool]["ap_all_images"] == pytest.approx(aps["onnxruntime"]["ap_all_images"], abs=0.02)
