"""CenterNet against xingyizhou/CenterNet itself (DESIGN.md section 4, links 2 and 3).

Runs when OMPIPE_UPSTREAM_CENTERNET names a clone or mirror of upstream; the tests read a
checkout of the pinned commit with patches/centernet applied, made from it (so they also prove
the patch applies). Upstream's modules come through `centernet_upstream.upstream_ctdet`.

- export: ONNX Runtime on the `onnxruntime` target vs PyTorch on the patched upstream network
  (its own pure-PyTorch DCN), same random weights, every output, every batch size of the guide
  (at 64x64: DLA-34 at 512x512 takes seconds per image on CPU); the `ascend` target's 16
  DeformableConv2D nodes, rewritten to DeformConv, give the same numbers;
- the patched DCN function equals ours; checkpoints load strictly;
- the whole path: upstream's own `CtdetDetector.run` on CPU vs our preprocess + decoding around
  the same PyTorch network;
- preprocessing: our arrays vs `BaseDetector.pre_process`;
- postprocessing: our decoder and COCO records vs `ctdet_decode`, `CtdetDetector.post_process`,
  `merge_outputs` and `COCO.convert_eval_format`, on random heatmaps.
"""
from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from om_pipeline.errors import UserError
from om_pipeline.metrics import coco_bbox
from om_pipeline.models import centernet, centernet_dcn
from om_pipeline.models import centernet_postprocess as post
from om_pipeline.data.centernet_tinycoco import write_tiny_coco
from om_pipeline.models.centernet_upstream import upstream_ctdet, upstream_postprocess
from om_pipeline.plugin import ExportContext
from om_pipeline.testing.upstream import patched_upstream, upstream_source

UPSTREAM = upstream_source("centernet")
pytestmark = [pytest.mark.upstream, pytest.mark.skipif(not UPSTREAM, reason="OMPIPE_UPSTREAM_CENTERNET is not set"),
              pytest.mark.filterwarnings("ignore:invalid escape sequence")]  # upstream's opts.py, compiled on import

BATCH_SIZES = (1, 4, 8, 16, 32)
SMALL = {"input_h": 64, "input_w": 64}
OUTPUTS = ("hm", "wh", "reg")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return patched_upstream("centernet", UPSTREAM, tmp_path_factory.mktemp("upstream") / "CenterNet")


@pytest.fixture(scope="module")
def upstream(checkout):
    with upstream_ctdet(checkout) as modules:
        yield modules


def context(checkout, target, bs, out, params=SMALL, weights=None) -> ExportContext:
    return ExportContext(source=checkout, weights=weights, target=target, bs=bs, out=out, opset=11,
                         input_names=["actual_input"], output_names=["output1", "output2", "output3"],
                         settings=centernet.Settings(**params))


def agreement(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    got, want = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    return float(np.abs(got - want).max()), float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("bs", BATCH_SIZES)
def test_onnxruntime_export_matches_pytorch(checkout, bs, tmp_path):
    ctx = context(checkout, "onnxruntime", bs, tmp_path / f"centernet_bs{bs}.onnxruntime.onnx")
    centernet.export(ctx)
    model = onnx.load(str(ctx.out))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 19
    assert [n.op_type for n in model.graph.node].count("DeformConv") == 16
    x = np.random.default_rng(bs).standard_normal((bs, 3, 64, 64)).astype(np.float32)
    got = onnxruntime.InferenceSession(str(ctx.out), providers=["CPUExecutionProvider"]).run(None, {"actual_input": x})
    want = centernet.torch_forward(ctx)([x])
    for name, g, w in zip(OUTPUTS, got, want):
        assert g.shape == w.shape == (bs, {"hm": 80}.get(name, 2), 16, 16)
        max_abs, cosine = agreement(g, w)
        assert cosine > 0.99999 and max_abs < 1e-3 * max(1.0, float(np.abs(w).max())), (name, max_abs, cosine)


def test_ascend_export_is_the_guides_graph(checkout, tmp_path):
    ascend = context(checkout, "ascend", 2, tmp_path / "centernet_bs2.ascend.onnx")
    standard = context(checkout, "onnxruntime", 2, tmp_path / "centernet_bs2.onnxruntime.onnx")
    centernet.export(ascend)
    centernet.export(standard)
    model = onnx.load(str(ascend.out))
    assert model.opset_import[0].version == 11  # the guide's
    assert [i.name for i in model.graph.input] == ["actual_input"]
    assert [o.name for o in model.graph.output] == ["output1", "output2", "output3"]
    nodes = [n for n in model.graph.node if n.op_type == "DeformableConv2D"]
    assert len(nodes) == 16 and not any(n.op_type == "DeformConv" for n in model.graph.node)
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"strides": [1, 1], "pads": [1, 1], "dilations": [1, 1], "groups": 1, "deformable_groups": 1}
        assert node.input[1].endswith("conv.weight") and node.input[3].endswith("conv.bias")
        concat = producers[node.input[2]]
        gather, sigmoid = (producers[name] for name in concat.input)
        assert (concat.op_type, gather.op_type, sigmoid.op_type) == ("Concat", "Gather", "Sigmoid")
        order = onnx.numpy_helper.to_array(producers[gather.input[1]].attribute[0].t).tolist()
        assert order == [1, 3, 5, 7, 9, 11, 13, 15, 17, 0, 2, 4, 6, 8, 10, 12, 14, 16]  # all dx, then all dy
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    rewritten = onnxruntime.InferenceSession(centernet_dcn.ascend_to_standard(model).SerializeToString(),
                                             providers=["CPUExecutionProvider"]).run(None, {"actual_input": x})
    direct = onnxruntime.InferenceSession(str(standard.out), providers=["CPUExecutionProvider"]).run(None, {"actual_input": x})
    want = centernet.torch_forward(standard)([x])
    for got, same, w in zip(rewritten, direct, want):
        np.testing.assert_allclose(got, same, rtol=0, atol=1e-5)
        assert agreement(got, w)[1] > 0.99999


def test_patched_dcn_equals_ours(upstream):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 9, 11, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 8, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    for stride in (1, 2):
        size = ((9 + 2 - 3) // stride + 1, (11 + 2 - 3) // stride + 1)
        offset = torch.randn(2, 18, *size, generator=generator, dtype=torch.float64) * 3
        mask = torch.rand(2, 9, *size, generator=generator, dtype=torch.float64)
        theirs = upstream.dcn.modulated_deform_conv2d(x, offset, mask, weight, bias, stride, 1, 1, 1)
        ours = centernet_dcn.modulated_deform_conv2d(x, offset, mask, weight, bias, stride, 1, 1, 1)
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-12)


def test_a_checkpoint_loads_strictly(checkout, tmp_path):
    settings = centernet.Settings(**SMALL)
    with centernet.upstream_modules(checkout):
        network = centernet.build_network(settings, None, seed=3)
        state = {f"module.{k}": v for k, v in network.state_dict().items()}  # saved from DataParallel
        state["module.base.fc.weight"] = torch.zeros(1000, 512, 1, 1)  # ImageNet classifier: dropped
        torch.save({"epoch": 230, "state_dict": state}, tmp_path / "ctdet.pth")
        loaded = centernet.build_network(settings, tmp_path / "ctdet.pth", seed=99)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in network.state_dict().items())
        del state["module.hm.2.bias"]
        torch.save({"epoch": 230, "state_dict": state}, tmp_path / "incomplete.pth")
        with pytest.raises(UserError, match="does not fit"):
            centernet.build_network(settings, tmp_path / "incomplete.pth")


# ---------------------------------------------------------------- preprocessing


def test_preprocess_matches_upstream(upstream, tmp_path):
    data = write_tiny_coco(tmp_path / "coco", images=4, seed=1)
    opt = types.SimpleNamespace(fix_res=True, input_h=512, input_w=512, pad=31, flip_test=False, down_ratio=4)
    detector = types.SimpleNamespace(opt=opt, mean=upstream.coco.COCO.mean, std=upstream.coco.COCO.std)
    for sample in centernet.list_samples(data, centernet.Settings()):
        images, meta = upstream.base.BaseDetector.pre_process(detector, cv2.imread(str(sample.path)), 1)
        np.testing.assert_array_equal(centernet.preprocess(sample, centernet.Settings())[0], images.numpy()[0])
        center, scale = post.center_and_scale(sample.meta["height"], sample.meta["width"])
        assert np.array_equal(meta["c"], center) and meta["s"] == scale and meta["out_height"] == meta["out_width"] == 128


# ---------------------------------------------------------------- the whole path


def test_our_path_gives_upstreams_detections(upstream, checkout, tmp_path, monkeypatch):
    """Upstream's own `CtdetDetector.run(image_path)` on CPU (as src/test.py drives it: opts
    parsed, COCO's dataset info, --gpus -1), with a checkpoint of our random network, against
    our preprocess -> the same PyTorch network -> our decoding: the same detections. (Upstream
    builds with pretrained=True, an ImageNet download: the factory is given pretrained=False.)"""
    import functools

    data = write_tiny_coco(tmp_path / "coco", images=3, seed=4)
    settings = centernet.Settings(**SMALL)
    ctx = context(checkout, "onnxruntime", 1, tmp_path / "unused.onnx")
    network = centernet.build_network(settings, None, seed=0)
    torch.save({"epoch": 1, "state_dict": network.state_dict()}, tmp_path / "random.pth")
    forward = centernet.torch_forward(ctx)
    monkeypatch.setitem(upstream.model._model_factory, "dla",
                        functools.partial(upstream.model._model_factory["dla"], pretrained=False))
    opt = upstream.opts.opts().parse(["ctdet", "--gpus", "-1", "--load_model", str(tmp_path / "random.pth"), "--input_res", "64"])
    opt = upstream.opts.opts().update_dataset_info_and_set_heads(opt, upstream.coco.COCO)
    detector = upstream.ctdet.CtdetDetector(opt)
    for sample in centernet.list_samples(data, centernet.Settings()):
        theirs = detector.run(str(sample.path))["results"]
        hm, wh, reg = forward([centernet.preprocess(sample, centernet.Settings(**SMALL))[0][np.newaxis]])
        ((boxes, scores, classes),) = centernet.decode_batch(hm, wh, reg, [sample], settings)
        for c in range(80):
            mine = np.c_[boxes[classes == c], scores[classes == c]]
            assert mine.shape == theirs[c + 1].shape, c
            np.testing.assert_allclose(mine, theirs[c + 1], rtol=0, atol=1e-4)


# ---------------------------------------------------------------- postprocessing


@pytest.mark.parametrize("height, width", [(480, 640), (640, 427), (333, 500), (1, 1), (4000, 3)])
def test_affine_transforms_are_upstreams_to_the_bit(upstream, height, width):
    center, scale = post.center_and_scale(height, width)
    for size in ((512, 512), (128, 128)):
        for inverse in (0, 1):
            theirs = upstream.image.get_affine_transform(center, scale, 0, list(size), inv=inverse)
            assert np.array_equal(post.affine_transform(center, scale, size, inverse=bool(inverse)), theirs)


def upstream_results(upstream, hm, wh, reg, image_ids, sizes):
    """The Ascend guide's CenterNet_postprocess_s1 path per image, then COCO.convert_eval_format."""
    all_boxes = {}
    for i, (image_id, (height, width)) in enumerate(zip(image_ids, sizes)):
        center, scale = post.center_and_scale(height, width)
        meta = {"c": center, "s": scale, "out_height": 128, "out_width": 128}
        all_boxes[image_id] = upstream_postprocess(upstream, hm[i:i + 1], wh[i:i + 1], reg[i:i + 1], meta)
    dataset = types.SimpleNamespace(_valid_ids=list(coco_bbox.COCO80_CATEGORY_IDS), _to_float=lambda x: float("{:.2f}".format(x)))
    # convert_eval_format turns x2, y2 into width, height in place: give it a copy.
    records = upstream.coco.COCO.convert_eval_format(dataset, {i: {c: b.copy() for c, b in per.items()} for i, per in all_boxes.items()})
    return all_boxes, records


def test_upstreams_category_ids_are_ours(upstream, tmp_path):
    """COCO.__init__ holds `_valid_ids`; run it on a tiny annotation file to read them."""
    write_tiny_coco(tmp_path / "coco" / "coco", images=1)  # upstream reads <data_dir>/coco/annotations/
    dataset = upstream.coco.COCO(types.SimpleNamespace(data_dir=str(tmp_path / "coco"), task="ctdet"), "val")
    assert tuple(dataset._valid_ids) == coco_bbox.COCO80_CATEGORY_IDS


@pytest.mark.parametrize("seed", [0, 1])
def test_decoding_and_results_match_upstream(upstream, seed):
    rng = np.random.default_rng(seed)
    batch = 4
    hm = rng.normal(-3.0, 2.0, (batch, 80, 128, 128)).astype(np.float32)
    wh = rng.uniform(0.0, 60.0, (batch, 2, 128, 128)).astype(np.float32)
    reg = rng.uniform(0.0, 1.0, (batch, 2, 128, 128)).astype(np.float32)
    sizes = [(480, 640), (640, 427), (333, 500), (612, 612)]
    image_ids = [139, 285, 632, 724]
    all_boxes, their_records = upstream_results(upstream, hm, wh, reg, image_ids, sizes)

    settings = centernet.Settings()
    samples = [centernet.Sample(str(i), None, {"image_id": i, "height": h, "width": w}) for i, (h, w) in zip(image_ids, sizes)]
    our_records = []
    for sample, (boxes, scores, classes) in zip(samples, centernet.decode_batch(hm, wh, reg, samples, settings)):
        theirs = np.concatenate([np.c_[all_boxes[sample.meta["image_id"]][c + 1], np.full(len(all_boxes[sample.meta["image_id"]][c + 1]), c)]
                                 for c in range(80)])
        ours = np.c_[boxes, scores, classes][np.argsort(classes, kind="stable")]
        np.testing.assert_array_equal(ours[:, 5], theirs[:, 5])  # classes, in upstream's order
        np.testing.assert_allclose(ours[:, :4], theirs[:, :4], rtol=0, atol=1e-4)  # float32 image pixels
        np.testing.assert_allclose(ours[:, 4], theirs[:, 4], rtol=0, atol=2e-7)  # sigmoid: at most an ulp apart
        our_records += coco_bbox.detections_to_results(sample.meta["image_id"], boxes, scores, classes)
    assert len(our_records) == len(their_records) == batch * 100
    differing = [(o, t) for o, t in zip(our_records, their_records) if o != t]
    assert len(differing) <= 1, differing  # a 1-ulp score difference may cross a rounding boundary, rarely
    for o, t in differing:
        assert o["bbox"] == t["bbox"] and abs(o["score"] - t["score"]) <= 0.01
