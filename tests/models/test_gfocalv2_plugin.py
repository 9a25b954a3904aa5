"""GFocalV2 plugin: samples, the guide's preprocessing, the evaluator, the upstream export path.

- samples: every image of the annotation file, by file name, id = stem; missing files are an
  error that says which;
- preprocessing: the guide's geometry (min(1216 / w, 800 / h), floor, top-left, zero padding)
  and mmcv's imnormalize, against NumPy arithmetic from the formulas (within 1 float32 ulp);
- the evaluator: both output forms give the same AP; detections equal to the ground truth
  score 1; the guide's image set and the standard one are both reported;
- the upstream path, the recipe's env and command: the environment of the guide's stack is
  built once, the checkout installed into it, `tools/pytorch2onnx.py` run with the guide's
  arguments in it (the subprocess seam records them; the export itself is stood in for), random
  weights go in as an mmdet checkpoint (the plugin's random_checkpoint).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from om_pipeline.context import Options, Run
from om_pipeline.envs import export_by_command
from om_pipeline.errors import StageFailed, UserError
from om_pipeline.models import gfocalv2 as plugin
from om_pipeline.models import gfocalv2_postprocess as post
from om_pipeline.data.gfocalv2_tinycoco import COCO_IDS, write_tiny_coco
from om_pipeline.plugin import Sample, settings_from_params
from om_pipeline.recipe import find_recipe, render
from om_pipeline.stages.export import ExportStage
from om_pipeline.tools import execute

F32 = np.float32


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco"), images=8, seed=3)


def test_samples_are_the_annotation_files_images_by_name(coco):
    samples = plugin.list_samples(coco, plugin.Settings())
    dataset = json.loads((coco / "annotations/instances_val2017.json").read_text())
    assert [s.id for s in samples] == sorted(f"{img['id']:012d}" for img in dataset["images"])
    assert all(s.path == coco / "val2017" / f"{s.id}.jpg" and s.meta["image_id"] == int(s.id) for s in samples)


def test_a_missing_image_is_named(coco, tmp_path):
    dataset = json.loads((coco / "annotations/instances_val2017.json").read_text())
    dataset["images"].append({"id": 5, "file_name": "000000000005.jpg", "width": 10, "height": 10})
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val2017.json").write_text(json.dumps(dataset))
    (tmp_path / "val2017").symlink_to(coco / "val2017")
    with pytest.raises(UserError, match="000000000005.jpg"):
        plugin.list_samples(tmp_path, plugin.Settings())


@pytest.mark.parametrize("size", [(427, 640), (640, 427), (360, 640), (50, 70)])  # (h, w)
def test_preprocessing_is_the_guides(size, tmp_path):
    height, width = size
    image = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    (array,) = plugin.preprocess(Sample(id="x", path=tmp_path / "x.png"), plugin.Settings())
    assert array.shape == (3, 800, 1216) and array.dtype == np.float32
    scale = min(1216 / width, 800 / height)
    new_w, new_h = int(np.floor(width * scale)), int(np.floor(height * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    mean, std = np.array([123.675, 116.28, 103.53], F32), np.array([58.395, 57.12, 57.375], F32)
    want = (resized[..., ::-1].astype(F32) - mean) * (1 / std.astype(np.float64)).astype(F32)  # RGB, (x - mean) * (1 / std)
    got = array.transpose(1, 2, 0)
    assert np.abs(got[:new_h, :new_w] - want).max() <= 2.5e-7 * 8  # 1 ulp at |x| <= 4
    assert not got[new_h:].any() and not got[:, new_w:].any()  # zeros right and bottom, image top-left


def test_the_guides_example_image_geometry(tmp_path):
    """000000397133.jpg is 640 x 427: resized to 1199 x 800, 17 zero columns on the right."""
    cv2.imwrite(str(tmp_path / "x.png"), np.full((427, 640, 3), 200, np.uint8))
    (array,) = plugin.preprocess(Sample(id="x", path=tmp_path / "x.png"), plugin.Settings())
    assert array[:, :, 1198].all() and not array[:, :, 1199:].any() and array[:, 799, :1199].all()


def test_settings_reject_bad_params():
    with pytest.raises(UserError, match="input_size"):
        settings_from_params(plugin.Settings, {"input_size": [800]})
    assert settings_from_params(plugin.Settings, {"input_size": [128, 192]}).input_size == (128, 192)
    with pytest.raises(UserError, match="unknown setting"):
        settings_from_params(plugin.Settings, {"other": 1})


# ---------------------------------------------------------------- evaluator


def ground_truth_outputs(coco, sample, form: str):
    """The image's ground truth as network outputs (input-canvas pixels), in either form."""
    dataset = json.loads((coco / "annotations/instances_val2017.json").read_text())
    image = next(i for i in dataset["images"] if i["id"] == sample.meta["image_id"])
    scale = post.resize_scale(image["width"], image["height"], (800, 1216))
    rows = [(a["bbox"], COCO_IDS.index(a["category_id"])) for a in dataset["annotations"] if a["image_id"] == image["id"]]
    boxes = np.array([[x, y, x + w, y + h] for (x, y, w, h), _ in rows], F32).reshape(-1, 4) * F32(scale)
    labels = np.array([c for _, c in rows], np.int64)
    if form == "ascend":
        dets = np.zeros((100, 5), F32)
        dets[:len(rows), :4], dets[:len(rows), 4] = boxes, 0.9
        padded = np.zeros(100, np.int64)
        padded[:len(rows)] = labels
        return [padded, dets]  # order does not matter
    scores = np.zeros((len(rows) + 1, 81), F32)
    scores[np.arange(len(rows)), labels] = 0.9
    scores[len(rows), 80] = 0.95  # a strong 81st-channel box: survives NMS, dropped as no class
    return [np.concatenate([boxes, np.array([[0, 0, 50, 50]], F32)]), scores]


@pytest.mark.parametrize("form", ["ascend", "pre_nms"])
def test_ground_truth_as_outputs_scores_one_in_both_forms(coco, form):
    evaluator = plugin.evaluator(coco, plugin.Settings())
    for sample in plugin.list_samples(coco, plugin.Settings()):
        evaluator.add(sample, ground_truth_outputs(coco, sample, form))
    metrics = evaluator.result()
    assert metrics["images_annotated"] == 6 and metrics["images_all"] == 8
    assert metrics["ap"] == pytest.approx(1.0, abs=1e-9) and metrics["ap_all_images"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["nms_in_graph"] == float(form == "ascend")


def test_detections_on_empty_images_count_only_in_the_standard_set(coco):
    evaluator = plugin.evaluator(coco, plugin.Settings())
    samples = plugin.list_samples(coco, plugin.Settings())
    dataset = json.loads((coco / "annotations/instances_val2017.json").read_text())
    annotated = {a["image_id"] for a in dataset["annotations"]}
    for sample in samples:
        outputs = ground_truth_outputs(coco, sample, "ascend")
        if sample.meta["image_id"] not in annotated:  # an empty image: a confident false positive of a class with ground truth
            outputs[1][0] = [10, 10, 200, 200, 0.99]
            outputs[0][0] = COCO_IDS.index(dataset["annotations"][0]["category_id"])
        evaluator.add(sample, outputs)
    metrics = evaluator.result()
    assert metrics["ap"] == pytest.approx(1.0) and metrics["ap_all_images"] < 1.0


def test_unidentifiable_outputs_name_the_sample(coco):
    sample = plugin.list_samples(coco, plugin.Settings())[0]
    with pytest.raises(UserError, match=sample.id):
        plugin.evaluator(coco, plugin.Settings()).add(sample, [np.zeros((10, 3), F32), np.zeros(10, np.int64)])


# ---------------------------------------------------------------- the upstream export path


@pytest.fixture
def upstream_run(tmp_path):
    """A run of the shipped recipe on its upstream export path, with a stand-in checkout where
    the stage puts the patched one."""
    run = Run(find_recipe("gfocalv2"), Options(export_path="upstream"), "ais_bench", 1, tmp_path / "work")
    for relative in ("tools/pytorch2onnx.py", "configs/gfocal/gfocal_r50_fpn_1x.py", "demo/demo.jpg", "setup.py"):
        (run.path("src") / relative).parent.mkdir(parents=True, exist_ok=True)
        (run.path("src") / relative).write_text("")
    return run


def test_upstream_command_is_the_guides(upstream_run):
    """python3.7 ./GFocalV2/tools/pytorch2onnx.py ./GFocalV2/configs/gfocal/gfocal_r50_fpn_1x.py
    ./gfocal_r50_fpn_1x.pth --output-file gfocal.onnx --input-img ./GFocalV2/demo/demo.jpg
    --shape 800 1216 --show, run in the checkout."""
    _, path = upstream_run.export_path
    variables = upstream_run.variables(weights="/w/gfocal_r50_fpn_1x.pth", export_onnx="/o/gfocal.onnx")
    assert [render(arg, variables) for arg in path.command] == [
        "python", "tools/pytorch2onnx.py", "configs/gfocal/gfocal_r50_fpn_1x.py", "/w/gfocal_r50_fpn_1x.pth",
        "--output-file", "/o/gfocal.onnx", "--input-img", "demo/demo.jpg", "--shape", "800", "1216", "--show"]
    assert path.env.python == "python3.7" and path.env.install_source and "mmcv-full==1.2.4" in path.env.requirements


def test_upstream_export_drives_the_guides_command_with_the_stack_stubbed(upstream_run, tmp_path):
    """Through the execute seam with every command stubbed (venv, pip, the editable install and
    pytorch2onnx.py, whose graph our native exporter stands in for): the environment built once
    and reused, the command run in the checkout with the environment first on PATH, every step
    writing to the stage log, the random weights handed over as an mmdet checkpoint and removed.
    The real python3.7 / torch 1.8 / mmcv-full environment is built only by the gated
    test_gfocalv2_upstream.py::test_upstream_export_path_builds_the_guides_environment."""
    calls, checkpoints = [], []
    stage = ExportStage(upstream_run)
    ctx = stage.context(tmp_path / "gfocalv2_bs1.ascend.onnx", "ascend")
    small = replace(ctx, settings=plugin.Settings(input_size=(96, 160)))

    def guide_stack(request):
        calls.append(request)
        argv = request.argv
        if argv[1:3] in (("-m", "venv"), ("-m", "pip")):
            return execute.Outcome(argv, 0, "")
        if argv[:2] == ("python", "tools/pytorch2onnx.py"):  # stand in for torch 1.8: our ascend graph, same names
            state = torch.load(argv[3], weights_only=True)["state_dict"]
            checkpoints.append(sorted(state) == sorted(plugin.mmdet_key_names()))
            plugin.export_native(replace(small, out=type(ctx.out)(argv[argv.index("--output-file") + 1])))
            return execute.Outcome(argv, 0, "Successfully exported ONNX model")
        raise AssertionError(f"unexpected command {argv}")

    log = tmp_path / "export.log"
    path = upstream_run.export_path[1]
    with execute.swapped(guide_stack):
        export_by_command(upstream_run, path, path.env, ctx, log)
        export_by_command(upstream_run, path, path.env, ctx, log)
    argvs = [c.argv for c in calls]
    venvs = [a for a in argvs if a[1:3] == ("-m", "venv")]
    pips = [a for a in argvs if a[1:3] == ("-m", "pip")]
    assert len(venvs) == 1 and venvs[0][0] == "python3.7"  # built once in the cache, then reused
    assert pips[0][3:] == ("install", "--disable-pip-version-check", *path.env.requirements)
    assert pips[1][-2:] == ("-e", str(upstream_run.path("src"))) and len(pips) == 2  # the checkout installed once
    scripts = [c for c in calls if c.argv[0] == "python"]
    env_bin = str(Path(pips[0][0]).parent)
    assert len(scripts) == 2 and all(c.cwd == upstream_run.path("src") and c.env["PATH"] == env_bin for c in scripts)
    assert all(c.log == log for c in calls)  # the pip build and the guide's script write to the stage log
    assert checkpoints == [True, True]  # random weights went in as an mmdet checkpoint, removed after
    assert not list(tmp_path.glob("*.random-weights.pth")) and ctx.out.is_file()
    assert [n.op_type for n in onnx.load(str(ctx.out)).graph.node].count("BatchMultiClassNMS") == 1


def test_upstream_command_failure_is_a_stage_failure_with_the_log_tail(upstream_run, tmp_path):
    def failing_script(request):
        if request.argv[0] == "python":
            return execute.Outcome(request.argv, 1, "ImportError: No module named mmcv._ext")
        return execute.Outcome(request.argv, 0, "")

    path = upstream_run.export_path[1]
    ctx = ExportStage(upstream_run).context(tmp_path / "gfocalv2_bs1.ascend.onnx", "ascend")
    with execute.swapped(failing_script), pytest.raises(StageFailed, match="export command") as failure:
        export_by_command(upstream_run, path, path.env, ctx, tmp_path / "export.log")
    assert "mmcv._ext" in "\n".join(failure.value.details)
    assert not list(tmp_path.glob("*.random-weights.pth"))


def test_an_annotation_file_with_a_subset_of_the_categories_is_evaluated_on_those(coco, tmp_path):
    """A user's mini-COCO keeps only the categories it annotates (CenterNet takes it too):
    class index -> the canonical COCO id, scored over the categories the file has."""
    import shutil

    subset = tmp_path / "subset"
    shutil.copytree(coco, subset)
    path = subset / "annotations/instances_val2017.json"
    dataset = json.loads(path.read_text())
    used = {a["category_id"] for a in dataset["annotations"]}
    dataset["categories"] = [c for c in dataset["categories"] if c["id"] in used]
    assert 0 < len(dataset["categories"]) < 80
    path.write_text(json.dumps(dataset))
    evaluator = plugin.evaluator(subset, plugin.Settings())
    for sample in plugin.list_samples(subset, plugin.Settings()):
        evaluator.add(sample, ground_truth_outputs(subset, sample, "ascend"))
    metrics = evaluator.result()
    assert metrics["images_annotated"] == 6
    assert metrics["ap"] == pytest.approx(1.0, abs=1e-9)


def test_an_annotation_file_without_any_coco_category_is_a_user_error(coco, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(coco, other)
    path = other / "annotations/instances_val2017.json"
    dataset = json.loads(path.read_text())
    dataset["categories"] = [{"id": 1000, "name": "widget", "supercategory": "none"}]
    path.write_text(json.dumps(dataset))
    with pytest.raises(UserError, match="none of COCO's 80"):
        plugin.evaluator(other, plugin.Settings())


def test_the_fake_oms_nms_stand_in_gives_the_graphs_outputs_padded_with_zeros():
    """The fake .om's BatchMultiClassNMS (ascend_ops_on_host): per batch row, mmdet's NMS on the
    float16-cast pre-NMS outputs, dets 100 x 5 and labels 100, zeros after the kept rows."""
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 100, size=(2, 300, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(1, 40, size=(2, 300, 2)).astype(np.float32)], axis=2)
    scores = rng.uniform(0, 0.2, size=(2, 300, 81)).astype(np.float32)
    scores[1] = 0.01  # nothing above score_thr: all padding
    dets, labels = plugin.ascend_ops_on_host([boxes, scores], {"max_per_img": 100})
    assert dets.shape == (2, 100, 5) and dets.dtype == np.float32 and labels.shape == (2, 100) and labels.dtype == np.int64
    want_dets, want_labels = post.multiclass_nms(boxes[0].astype(np.float16).astype(np.float32),
                                                 scores[0].astype(np.float16).astype(np.float32))
    assert len(want_dets) == 100 and np.array_equal(dets[0], want_dets) and np.array_equal(labels[0], want_labels)
    assert not dets[1].any() and not labels[1].any()
    scores[1, :5, 3] = 0.9  # five candidates: five kept at most, then padding
    few, _ = plugin.ascend_ops_on_host([boxes[1:], scores[1:]], {"max_per_img": 100})
    kept = int((few[0, :, 4] > 0).sum())
    assert 0 < kept <= 5 and not few[0, kept:].any()
