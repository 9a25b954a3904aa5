"""GFocalV2 against upstream implus/GFocalV2 itself (DESIGN.md section 4, links 2 and 3).

Runs when OMPIPE_UPSTREAM_GFOCALV2 names a clone or mirror of upstream and mmcv 1.x imports in
this interpreter. mmcv-full 1.2.4 does not install on Python 3.11; the pure-Python mmcv 1.2.4
(MMCV_WITH_OPS=0) does, and upstream's model code then runs on torch 2.x. What it lacks is
stood in for, here only: `mmcv._ext` (compiled ops) by `nms` transcribed from nms_cpu, a
`torchvision` module (mmcv.runner imports it; nothing here uses it), and mmcv's opset-11
symbolic registry (torch 2.x has no torch.onnx.symbolic_registry).

Compared, with the same random weights (ours, written as an mmdet checkpoint and loaded by
mmcv's load_checkpoint into upstream's GFL detector built from the config):
- every level's cls_score (81 channels) and bbox_pred;
- the candidates upstream hands to multiclass_nms (boxes, 82 score columns) vs our decode;
- upstream's detections (multiclass_nms, batched_nms, our nms_cpu stand-in) vs ours;
- the patched checkout: eager detections unchanged by the patch; its export (this torch's
  TorchScript exporter standing in for torch 1.8) holds one BatchMultiClassNMS with the
  guide's attributes after float16 casts, TopK on the last axis, named input and outputs;
- preprocessing: ours vs mmcv's imresize / imnormalize / impad as the guide calls them.
Measured with mmcv 1.2.4 (pure Python) on torch 2.13 CPU, upstream at b7b3556: see the asserts.
"""
from __future__ import annotations

import os
import sys
import types
from functools import partial

import numpy as np
import pytest
import torch

from om_pipeline.models import gfocalv2 as plugin
from om_pipeline.models import gfocalv2_model as gm
from om_pipeline.models import gfocalv2_postprocess as post
from om_pipeline.testing.upstream import patched_upstream

UPSTREAM = os.environ.get("OMPIPE_UPSTREAM_GFOCALV2")
pytestmark = [pytest.mark.upstream, pytest.mark.skipif(not UPSTREAM, reason="OMPIPE_UPSTREAM_GFOCALV2 is not set")]
CONFIG = "configs/gfocal/gfocal_r50_fpn_1x.py"


def nms_cpu(boxes, scores, iou_threshold, offset):
    """mmcv v1.2.4 nms_cpu (sort descending, drop later boxes with IoU >= threshold), one kept box
    at a time against the rest, float32."""
    if boxes.numel() == 0:
        return boxes.new_zeros((0,), dtype=torch.long)
    b = boxes.numpy().astype(np.float32)
    off = np.float32(offset)
    areas = (b[:, 2] - b[:, 0] + off) * (b[:, 3] - b[:, 1] + off)
    order_t = scores.sort(0, descending=True)[1]
    order = order_t.numpy()
    select = np.ones(len(order), bool)
    for k in range(len(order)):
        if not select[k]:
            continue
        i, rest = order[k], order[k + 1:]
        w = np.maximum(np.float32(0), np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]) + off)
        h = np.maximum(np.float32(0), np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]) + off)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            select[k + 1:] &= ~(inter / ((areas[i] + areas[rest]) - inter) >= np.float32(iou_threshold))
    return order_t[torch.from_numpy(select)]


def missing_op(name: str):
    """Any other compiled op of mmcv._ext: present (ext_loader checks the names), not callable."""
    if name.startswith("__"):
        raise AttributeError(name)

    def unavailable(*args, **kwargs):
        raise NotImplementedError(f"mmcv._ext.{name} is not available in this test")

    return unavailable


def stand_ins():
    """Modules mmcv lite lacks on this stack (only those that do not import)."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision.models"] = types.ModuleType("torchvision.models")
        sys.modules["torchvision"].models = sys.modules["torchvision.models"]
    try:
        import mmcv._ext  # noqa: F401
    except ImportError:
        ext = types.ModuleType("mmcv._ext")
        ext.nms = nms_cpu
        ext.__getattr__ = missing_op
        sys.modules["mmcv._ext"] = ext
    try:
        import mmcv.onnx.symbolic  # noqa: F401
    except ImportError:
        symbolic = types.ModuleType("mmcv.onnx.symbolic")
        symbolic.register_extra_symbolics = lambda opset: None
        sys.modules["mmcv.onnx.symbolic"] = symbolic


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    mmcv = pytest.importorskip("mmcv", reason="upstream's model code needs mmcv 1.x (pure-Python build is enough)")
    if not mmcv.__version__.startswith("1."):
        pytest.skip(f"mmcv {mmcv.__version__}: upstream (mmdet 2.6) needs mmcv 1.x")
    stand_ins()
    checkout = patched_upstream("gfocalv2", UPSTREAM, tmp_path_factory.mktemp("upstream") / "GFocalV2")
    sys.path.insert(0, str(checkout))
    try:
        import mmdet.models.dense_heads.gfocal_head as head_module
        from mmdet.core import build_model_from_cfg, preprocess_example_input

        yield types.SimpleNamespace(checkout=checkout, head=head_module, build=build_model_from_cfg,
                                    example=preprocess_example_input, mmcv=mmcv)
    finally:
        sys.path.remove(str(checkout))
        for name in [n for n in sys.modules if n == "mmdet" or n.startswith("mmdet.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def models(upstream, tmp_path_factory):
    native = gm.random_model(5)
    checkpoint = tmp_path_factory.mktemp("weights") / "random.pth"
    plugin.write_mmdet_checkpoint(native, checkpoint)
    return native, upstream.build(str(upstream.checkout / CONFIG), str(checkpoint))


def detections_both_ways(upstream, models, image, hw):
    native, model = models
    captured = {}
    real = upstream.head.multiclass_nms

    def spy(boxes, scores, *args):
        captured["boxes"], captured["scores"] = boxes.clone(), scores.clone()
        return real(boxes, scores, *args)

    meta = dict(img_shape=(*hw, 3), ori_shape=(*hw, 3), pad_shape=(*hw, 3), scale_factor=1.0, flip=False)
    upstream.head.multiclass_nms = spy
    try:
        with torch.no_grad():
            cls_scores, bbox_preds = model.bbox_head(model.neck(model.backbone(image)))
            (dets, labels), = model.bbox_head.get_bboxes(cls_scores, bbox_preds, [meta])
    finally:
        upstream.head.multiclass_nms = real
    with torch.no_grad():
        levels = native(image)
    return levels, (cls_scores, bbox_preds), captured, (dets.numpy(), labels.numpy())


@pytest.mark.parametrize("hw", [(160, 256), (320, 480)])
def test_native_model_equals_upstream(upstream, models, hw):
    native, _ = models
    image = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(hw[0]))
    levels, (cls_scores, bbox_preds), captured, (dets, labels) = detections_both_ways(upstream, models, image, hw)
    for (ours_cls, ours_reg), theirs_cls, theirs_reg in zip(levels, cls_scores, bbox_preds):
        assert ours_cls.shape[1] == theirs_cls.shape[1] == 81
        assert torch.equal(ours_reg, theirs_reg)  # measured: identical
        assert (ours_cls - theirs_cls).abs().max() <= 1.2e-7  # measured 6e-8: last-axis vs bin-axis top-k mean
    boxes, scores = gm.decode(levels, native.head.project, hw)
    assert captured["scores"].shape[1] == 82 and len(captured["boxes"]) == gm.candidate_count(*hw)
    assert torch.equal(boxes[0], captured["boxes"])  # measured: identical
    assert (scores[0] - captured["scores"][:, :81]).abs().max() <= 1.2e-7 and not captured["scores"][:, 81].any()
    # NMS: ours on upstream's candidates is identical; end to end the labels are too
    our_dets, our_labels = post.multiclass_nms(captured["boxes"].numpy(), captured["scores"][:, :-1].numpy())
    assert np.array_equal(our_labels, labels) and np.array_equal(our_dets, dets)
    end_dets, end_labels = post.multiclass_nms(boxes[0].numpy(), scores[0].numpy())
    assert np.array_equal(end_labels, labels) and np.abs(end_dets - dets).max() <= 1.2e-7


def test_patched_upstream_exports_the_guides_graph(upstream, models, tmp_path):
    import onnx

    _, model = models
    hw = (160, 256)
    image, meta = upstream.example({"input_shape": (1, 3, *hw), "input_path": str(upstream.checkout / "demo/demo.jpg"),
                                    "normalize_cfg": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}})
    forward = partial(model.forward, img_metas=[[meta]], return_loss=False)

    class Wrapped(torch.nn.Module):  # torch 1.8 took the list argument itself; 2.x needs a wrapper
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return forward([x])

    with torch.no_grad():
        eager = forward([image])  # the patch keeps eager inference (NMS op only while exporting)
        torch.onnx.export(Wrapped(), (image,), str(tmp_path / "upstream.onnx"), keep_initializers_as_inputs=True,
                          opset_version=11, input_names=["input.1"], output_names=["dets", "labels"], dynamo=False)
    assert len(eager[0]) == 80  # bbox2result per class
    graph = onnx.load(str(tmp_path / "upstream.onnx")).graph
    initializers = {i.name for i in graph.initializer}
    assert [i.name for i in graph.input if i.name not in initializers] == ["input.1"]
    assert [o.name for o in graph.output] == ["dets", "labels"]
    nms = [n for n in graph.node if n.op_type == "BatchMultiClassNMS"]
    assert len(nms) == 1
    assert {a.name: onnx.helper.get_attribute_value(a) for a in nms[0].attribute} == {
        "score_threshold": pytest.approx(0.05), "iou_threshold": pytest.approx(0.6), "max_size_per_class": 100, "max_total_size": 100}
    producers = {o: n for n in graph.node for o in n.output}
    assert all(producers[i].op_type == "Cast" and producers[i].attribute[0].i == onnx.TensorProto.FLOAT16 for i in nms[0].input)
    assert {next(a.i for a in n.attribute if a.name == "axis") for n in graph.node if n.op_type == "TopK"} == {-1}


@pytest.mark.parametrize("size", [(427, 640), (640, 480), (360, 640)])  # (h, w)
def test_preprocessing_equals_mmcvs_calls(upstream, size, tmp_path):
    """gfocal_preprocess.py: mmcv.imread(cv2) -> imresize((floor w*s, floor h*s)) ->
    imnormalize(float32 mean / std, to_rgb) -> impad(shape=(800, 1216), pad_val=0)."""
    import cv2

    mmcv = upstream.mmcv
    height, width = size
    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    (ours,) = plugin.preprocess(plugin.Sample(id="x", path=tmp_path / "x.png"), plugin.Settings())
    img = mmcv.imread(str(tmp_path / "x.png"), backend="cv2")
    scale = min(1216 / width, 800 / height)
    img = mmcv.imresize(img, (int(np.floor(width * scale)), int(np.floor(height * scale))), backend="cv2")
    img = mmcv.imnormalize(img, np.array([123.675, 116.28, 103.53], np.float32), np.array([58.395, 57.12, 57.375], np.float32), to_rgb=True)
    img = mmcv.impad(img, shape=(800, 1216), pad_val=0)
    assert np.array_equal(ours, img.transpose(2, 0, 1))


def runnable(command: str) -> bool:
    import shutil
    import subprocess

    return bool(shutil.which(command)) and subprocess.run([command, "--version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not runnable("python3.7"), reason="python3.7 is not runnable here (the guide's stack needs it)")
def test_upstream_export_path_builds_the_guides_environment(tmp_path):
    """The `upstream` export path for real: python3.7 venv, the recipe's requirements (torch
    1.8.0, mmcv-full 1.2.4: compiled from source, tens of minutes), the checkout installed editable, then the
    guide's tools/pytorch2onnx.py on the patched checkout. The environment lands in
    OMPIPE_TEST_CACHE when set (reused by later runs), else in this test's own cache."""
    from dataclasses import replace

    import onnx

    from om_pipeline.context import Options, Run
    from om_pipeline.envs import export_by_command
    from om_pipeline.recipe import find_recipe
    from om_pipeline.stages.export import ExportStage
    from om_pipeline.testing.upstream import shared_env_cache

    checkout = patched_upstream("gfocalv2", UPSTREAM, tmp_path / "GFocalV2")
    run = Run(find_recipe("gfocalv2"), Options(export_path="upstream"), "ais_bench", 1, tmp_path / "work")
    path = run.export_path[1]
    ctx = replace(ExportStage(run).context(tmp_path / "gfocalv2_bs1.ascend.onnx", "ascend"), source=checkout)
    with shared_env_cache():
        export_by_command(run, path, path.env, ctx, tmp_path / "export.log")
    graph = onnx.load(str(ctx.out)).graph
    assert [i.name for i in graph.input] == ["input.1"] and [o.name for o in graph.output] == ["dets", "labels"]
    assert [n.op_type for n in graph.node].count("BatchMultiClassNMS") == 1
