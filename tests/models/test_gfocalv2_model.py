"""GFocalV2 native model (links 2 and 3 of DESIGN.md section 4) without upstream or weights.

- checkpoint keys: a state dict built from the upstream config's parameter names (ResNet-50,
  FPN, GFocalHead as mmdet 2.6 names them) maps one to one onto the native model and loads
  strictly; the name list is pinned to the real upstream model's by a digest;
- decode on constructed inputs with known answers: anchor centres (offset 0), the Integral
  projection, distance-to-box with the clamp to the input canvas, the per-level top-k;
- DGQP's last-axis top-k equals upstream's top-k over the bin axis;
- the exported graphs: `ascend` holds one BatchMultiClassNMS with the guide's attributes and
  float16 casts; `onnxruntime` runs in ONNX Runtime and matches PyTorch.
Input sizes are small (the model at 800 x 1216 takes seconds per image on 2 cores).
"""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from om_pipeline.models import gfocalv2 as plugin
from om_pipeline.models import gfocalv2_model as gm
from om_pipeline.plugin import ExportContext
from om_pipeline.testing.atc_gate import gate_failures

# sha256 of the sorted "key shape" lines of upstream's GFL detector built from
# configs/gfocal/gfocal_r50_fpn_1x.py at b7b3556 (mmdet 2.6 fork, mmcv 1.2.4; measured once,
# 372 tensors). The state dict below, written from the config, must reproduce it.
UPSTREAM_KEYS_SHA256 = "dbd92bfcf5c428cc1614044034f907e6d71b4b4ad9ec98af0fc719df6c3c76e5"
SMALL = (96, 160)


def mmdet_state_dict_from_config() -> dict[str, torch.Tensor]:
    """Upstream's state dict layout, written from gfocal_r50_fpn_1x.py: ResNet depth 50
    (torchvision names), FPN in [256, 512, 1024, 2048] -> 256 from level 1 with 2 extra convs
    (ConvModule `.conv`), GFocalHead 80 classes with use_sigmoid=False (81 score channels),
    4 stacked convs with GN (`.conv`, `.gn`), reg_max 16, reg_topk 4 + mean, reg_channels 64."""
    state: dict[str, torch.Tensor] = {}

    def conv(name, out_c, in_c, k, bias=False):
        state[f"{name}.weight"] = torch.randn(out_c, in_c, k, k) * 0.05
        if bias:
            state[f"{name}.bias"] = torch.randn(out_c) * 0.05

    def norm(name, channels, batch=True):
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(channels)
        state[f"{name}.bias"] = 0.1 * torch.randn(channels)
        if batch:
            state[f"{name}.running_mean"] = 0.1 * torch.randn(channels)
            state[f"{name}.running_var"] = 1 + 0.1 * torch.rand(channels)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)

    conv("backbone.conv1", 64, 3, 7)
    norm("backbone.bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for block in range(blocks):
            prefix = f"backbone.layer{layer}.{block}"
            conv(f"{prefix}.conv1", planes, inplanes if block == 0 else planes * 4, 1)
            norm(f"{prefix}.bn1", planes)
            conv(f"{prefix}.conv2", planes, planes, 3)
            norm(f"{prefix}.bn2", planes)
            conv(f"{prefix}.conv3", planes * 4, planes, 1)
            norm(f"{prefix}.bn3", planes * 4)
            if block == 0:
                conv(f"{prefix}.downsample.0", planes * 4, inplanes, 1)
                norm(f"{prefix}.downsample.1", planes * 4)
        inplanes = planes * 4
    for i, in_c in enumerate((512, 1024, 2048)):
        conv(f"neck.lateral_convs.{i}.conv", 256, in_c, 1, bias=True)
    for i in range(5):
        conv(f"neck.fpn_convs.{i}.conv", 256, 256, 3, bias=True)
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            conv(f"bbox_head.{tower}.{i}.conv", 256, 256, 3)
            norm(f"bbox_head.{tower}.{i}.gn", 256, batch=False)
    conv("bbox_head.gfl_cls", 81, 256, 3, bias=True)
    conv("bbox_head.gfl_reg", 68, 256, 3, bias=True)
    for i in range(5):
        state[f"bbox_head.scales.{i}.scale"] = torch.tensor(1.0 + 0.1 * i)
    conv("bbox_head.reg_conf.0", 64, 20, 1, bias=True)
    conv("bbox_head.reg_conf.2", 1, 64, 1, bias=True)
    state["bbox_head.integral.project"] = torch.linspace(0, 16, 17)
    return state


def key_digest(state: dict[str, torch.Tensor]) -> str:
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


@pytest.fixture(scope="module")
def mmdet_state():
    torch.manual_seed(0)
    return mmdet_state_dict_from_config()


# ---------------------------------------------------------------- checkpoint keys


def test_config_state_dict_is_upstreams_key_set(mmdet_state):
    assert len(mmdet_state) == 372
    assert key_digest(mmdet_state) == UPSTREAM_KEYS_SHA256
    assert plugin.mmdet_key_names() == list(mmdet_state)  # the plugin's list (random-weight checkpoints) too


def test_checkpoint_maps_one_to_one_and_loads_strictly(mmdet_state):
    renamed = gm.native_state_dict(mmdet_state)
    native = gm.GFocalV2().state_dict()
    assert set(renamed) == set(native)  # all keys used, none missing
    assert all(renamed[k].shape == native[k].shape for k in native)
    model = gm.GFocalV2()
    gm.load_mmdet_checkpoint(model, {"meta": {"epoch": 12}, "state_dict": {f"module.{k}": v for k, v in mmdet_state.items()}})
    loaded = model.state_dict()
    for key, value in mmdet_state.items():
        assert torch.equal(loaded[gm.mmdet_to_native(key)], value), key


@pytest.mark.parametrize("change, error, message", [
    ("extra", KeyError, "checkpoint key 'bbox_head.loss_dfl.weight' has no counterpart"),
    ("missing", RuntimeError, 'Missing key\\(s\\) in state_dict: "head.cls_logits.bias"'),
    ("project", ValueError, "bbox_head.integral.project is not linspace"),
])
def test_checkpoint_mismatch_is_an_error(mmdet_state, change, error, message):
    state = dict(mmdet_state)
    if change == "extra":
        state["bbox_head.loss_dfl.weight"] = torch.zeros(1)
    elif change == "missing":
        del state["bbox_head.gfl_cls.bias"]
    else:
        state["bbox_head.integral.project"] = torch.linspace(0, 8, 17)
    with pytest.raises(error, match=message):
        gm.load_mmdet_checkpoint(gm.GFocalV2(), {"state_dict": state})


def test_random_weights_round_trip_through_an_mmdet_checkpoint(tmp_path):
    model = gm.random_model(3)
    plugin.write_mmdet_checkpoint(model, tmp_path / "random.pth")
    reloaded = plugin.native_model(tmp_path / "random.pth", seed=99)
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value)


# ---------------------------------------------------------------- decode, constructed cases


def test_feature_sizes_match_the_network():
    model = gm.random_model(0)
    for height, width in ((96, 160), (100, 150), (33, 65), (800, 1216)):
        if height * width > 200_000:
            assert gm.feature_sizes(height, width) == [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
            assert gm.candidate_count(height, width) == 3267  # 1000 + 1000 + 950 + 247 + 70
            continue
        with torch.no_grad():
            levels = model(torch.zeros(1, 3, height, width))
        assert [tuple(c.shape[-2:]) for c, _ in levels] == gm.feature_sizes(height, width)


def test_anchor_centres_have_offset_zero_and_row_major_order():
    centers = gm.anchor_centers(2, 3, 16)
    assert centers.tolist() == [[0, 0], [16, 0], [32, 0], [0, 16], [16, 16], [32, 16]]


def test_integral_is_the_expected_bin():
    project = torch.linspace(0, 16, 17)
    logits = torch.full((1, 68, 1, 2), -1e4)
    # location 0: sides on bins 0, 5, 16, 3 (one-hot); location 1: uniform over the 17 bins
    for side, bin_ in enumerate((0, 5, 16, 3)):
        logits[0, side * 17 + bin_, 0, 0] = 0
    logits[0, :, 0, 1] = 0
    distances = gm.integral(logits, project)
    assert distances[0, 0].tolist() == [0, 5, 16, 3]
    assert torch.allclose(distances[0, 1], torch.full((4,), 8.0))  # mean of 0..16


def test_distance_to_box_and_the_clamp_to_the_canvas():
    centers = torch.tensor([[[40.0, 30.0], [5.0, 790.0]]])
    distances = torch.tensor([[[10.0, 20.0, 30.0, 40.0], [16.0, 8.0, 1300.0, 64.0]]])
    boxes = gm.distance_to_box(centers, distances, (800, 1216))
    assert boxes[0, 0].tolist() == [30, 10, 70, 70]
    assert boxes[0, 1].tolist() == [0, 782, 1216, 800]  # x1 < 0 -> 0; x2, y2 beyond the canvas -> W, H


def test_decode_keeps_the_top_k_locations_per_level_in_score_order():
    # one 4 x 4 level of stride 8 (16 locations > nms_pre 4: top 4) and a 2 x 2 level of
    # stride 16 (4 locations, not more than nms_pre: all, as upstream's `>` says)
    scores = [torch.zeros(1, 81, 4, 4), torch.zeros(1, 81, 2, 2)]
    scores[0][0, 7, 1, 2] = 0.9   # location 6 (y 1, x 2)
    scores[0][0, 80, 3, 0] = 0.8  # location 12: the 81st channel counts for the top-k
    scores[0][0, 2, 0, 1] = 0.7   # location 1
    scores[0][0, 3, 2, 2] = 0.1
    preds = [torch.full((1, 68, 4, 4), -1e4), torch.full((1, 68, 2, 2), -1e4)]
    for p in preds:
        p[:, [1 * 17 + 1, 2 * 17 + 2, 3 * 17 + 3], :, :] = 0  # left 0, top 1, right 2, bottom 3 bins
        p[:, 0, :, :] = 0
    levels = list(zip(scores, preds))
    boxes, out_scores = gm.decode(levels, torch.linspace(0, 16, 17), (64, 64), nms_pre=4)
    assert boxes.shape == (1, 4 + 4, 4) and out_scores.shape == (1, 8, 81)
    # level 0: locations 6, 12, 1, 10 by score; centres (16, 8), (0, 24), (8, 0), (16, 16);
    # distances l, t, r, b = 0, 8, 16, 24 (bins x 8)
    assert boxes[0, :4].tolist() == [[16, 0, 32, 32], [0, 16, 16, 48], [8, 0, 24, 24], [16, 8, 32, 40]]
    assert out_scores[0, 0, 7] == pytest.approx(0.9) and out_scores[0, 1, 80] == pytest.approx(0.8)
    # level 1: all 4 locations, row-major; distances 0, 16, 32, 48 (bins x 16)
    assert boxes[0, 4:].tolist() == [[0, 0, 32, 48], [16, 0, 48, 48], [0, 0, 32, 64], [16, 0, 48, 64]]


def test_dgqp_last_axis_topk_equals_upstreams_bin_axis_topk():
    torch.manual_seed(1)
    head = gm.GFocalHead()
    x = torch.randn(2, 256, 5, 7)
    with torch.no_grad():
        cls_score, bbox_pred = head.forward_level(x, 2)
        # upstream's forward_single, from its formula: softmax and top-k over dim 2 of N x 4 x 17 x H x W
        n, _, h, w = bbox_pred.shape
        prob = torch.softmax(bbox_pred.reshape(n, 4, 17, h, w), dim=2)
        top, _ = prob.topk(4, dim=2)
        stat = torch.cat([top, top.mean(dim=2, keepdim=True)], dim=2).reshape(n, -1, h, w)
        cls_feat = x
        for conv in head.cls_tower:
            cls_feat = conv(cls_feat)
        expected = head.cls_logits(cls_feat).sigmoid() * head.quality(stat)
    assert torch.allclose(cls_score, expected, atol=1e-7, rtol=0)


# ---------------------------------------------------------------- exported graphs


def export(tmp_path, target: str, bs: int = 1, weights=None) -> onnx.ModelProto:
    out = tmp_path / f"gfocalv2_bs{bs}.{target}.onnx"
    names = ["dets", "labels"] if target == "ascend" else ["boxes", "scores"]
    plugin.export(ExportContext(source=tmp_path, weights=weights, target=target, bs=bs, out=out, opset=11,
                                input_names=["input.1"], output_names=names,
                                settings=plugin.Settings(input_size=tuple(SMALL), nms_pre=100), seed=0))
    return onnx.load(str(out))


def test_ascend_graph_ends_in_one_batchmulticlassnms_as_the_guide(tmp_path):
    model = export(tmp_path, "ascend")
    graph = model.graph
    assert model.opset_import[0].version == 11
    assert [i.name for i in graph.input] == ["input.1"] and [o.name for o in graph.output] == ["dets", "labels"]
    nms = [n for n in graph.node if n.op_type == "BatchMultiClassNMS"]
    assert len(nms) == 1 and nms[0].domain == ""
    assert gate_failures(model, "gfocalv2") == []  # ATC's parse gate (and NMS kernel), the recipe's flags at every bs
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in nms[0].attribute}
    assert attributes == {"score_threshold": pytest.approx(0.05), "iou_threshold": pytest.approx(0.6),
                          "max_size_per_class": 100, "max_total_size": 100}
    producers = {o: n for n in graph.node for o in n.output}
    consumers = {i: n for n in graph.node for i in n.input}
    for name in nms[0].input:  # boxes and scores, cast to float16 right before the op
        assert producers[name].op_type == "Cast" and producers[name].attribute[0].i == onnx.TensorProto.FLOAT16
    casts_back = [consumers[name] for name in nms[0].output[:3]]
    assert [(c.op_type, c.attribute[0].i) for c in casts_back] == [
        ("Cast", onnx.TensorProto.FLOAT), ("Cast", onnx.TensorProto.FLOAT), ("Cast", onnx.TensorProto.INT64)]
    assert all(n.op_type != "NonMaxSuppression" for n in graph.node)
    assert {n.op_type for n in graph.node if n.op_type == "TopK"} == {"TopK"}
    top_k_axes = [next(a.i for a in n.attribute if a.name == "axis") for n in graph.node if n.op_type == "TopK"]
    assert set(top_k_axes) == {-1}  # DGQP and the per-level top-k, on the last axis for Ascend
    # the op's inputs: boxes N x K x 1 x 4, scores N x K x 82 (81 channels + background column)
    shapes = onnx.shape_inference.infer_shapes(model).graph.value_info
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in shapes}
    k = gm.candidate_count(*SMALL, nms_pre=100)
    assert dims[nms[0].input[0]] == [1, k, 1, 4] and dims[nms[0].input[1]] == [1, k, 82]


def run_ort(model: onnx.ModelProto, image: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input.1": image})


@pytest.mark.parametrize("bs", [1, 2])
def test_onnxruntime_graph_matches_pytorch(tmp_path, bs):
    model = export(tmp_path, "onnxruntime", bs=bs)
    onnx.checker.check_model(model)
    rng = np.random.default_rng(bs)
    image = rng.standard_normal((bs, 3, *SMALL)).astype(np.float32)
    boxes, scores = run_ort(model, image)
    torch_model = gm.random_model(0)
    with torch.no_grad():
        want_boxes, want_scores = gm.decode(torch_model(torch.from_numpy(image)), torch_model.head.project, SMALL, nms_pre=100)
    k = gm.candidate_count(*SMALL, nms_pre=100)
    assert boxes.shape == (bs, k, 4) and scores.shape == (bs, k, 81)
    assert np.abs(boxes - want_boxes.numpy()).max() < 1e-3  # pixels
    assert np.abs(scores - want_scores.numpy()).max() < 1e-5


def test_ascend_and_onnxruntime_graphs_share_the_network(tmp_path):
    """Everything before the NMS op is the same graph: the pre-NMS tensors the ascend graph
    casts to float16 equal the onnxruntime graph's outputs."""
    ascend = export(tmp_path, "ascend")
    nms = next(n for n in ascend.graph.node if n.op_type == "BatchMultiClassNMS")
    producers = {o: n for n in ascend.graph.node for o in n.output}
    cut = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(ascend)).extract_model(["input.1"], [producers[i].input[0] for i in nms.input])
    image = np.random.default_rng(0).standard_normal((1, 3, *SMALL)).astype(np.float32)
    boxes, scores = run_ort(cut, image)
    want_boxes, want_scores = run_ort(export(tmp_path, "onnxruntime"), image)
    assert np.array_equal(boxes.reshape(want_boxes.shape), want_boxes)
    assert np.array_equal(scores[..., :81].reshape(want_scores.shape), want_scores) and not scores[..., 81].any()
