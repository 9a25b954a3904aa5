"""TransPose against upstream yangsenius/TransPose itself (DESIGN.md section 4, links 2 and 3).

Runs when OMPIPE_UPSTREAM_TRANSPOSE names a clone or mirror of upstream; the tests read a
checkout of the pinned commit with patches/transpose applied, made from it.

- export: ONNX Runtime on our export (and on its onnxsim simplification) vs PyTorch on
  upstream's TransPoseR with the same random weights, every batch size of the guide;
- preprocessing: our samples and input tensors vs upstream's COCODataset (`_get_db`,
  `__getitem__` with ToTensor + Normalize) and `get_affine_transform`;
- postprocessing: flip_back, get_final_preds (DARK), oks_nms, and the rescoring + OKS-NMS +
  COCOeval of `COCODataset.evaluate`, on random, constructed and network heatmaps.

Upstream's lib/ imports json_tricks (coco.py, mpii.py) and its config yacs; where those are not
installed, json_tricks is stood in for by the standard json module (upstream only dumps lists of
floats and ints with it) and the config is the experiment YAML plus the four defaults of
lib/config/default.py that the dataset reads.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from om_pipeline.models import transpose
from om_pipeline.models.transpose_postprocess import (affine_transforms, crop_transform, final_preds, flip_back)
from om_pipeline.data.transpose_synth import synthesize
from om_pipeline.metrics import coco_keypoints
from om_pipeline.plugin import ExportContext
from om_pipeline.testing.upstream import patched_upstream

UPSTREAM = os.environ.get("OMPIPE_UPSTREAM_TRANSPOSE")
pytestmark = [pytest.mark.upstream, pytest.mark.skipif(not UPSTREAM, reason="OMPIPE_UPSTREAM_TRANSPOSE is not set"),
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),  # upstream's np.matrix in taylor()
              pytest.mark.filterwarnings("ignore::SyntaxWarning")]  # upstream's transpose_h.py: `is '*'`

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
# lib/config/default.py values the dataset code reads and the experiment YAML leaves out
DEFAULTS = {("RANK",): 0, ("TEST", "SOFT_NMS"): False, ("LOSS", "USE_DIFFERENT_JOINTS_WEIGHT"): False,
            ("DATASET", "SELECT_DATA"): False}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    checkout = patched_upstream("transpose", UPSTREAM, tmp_path_factory.mktemp("upstream") / "TransPose")
    shim = None
    try:
        importlib.import_module("json_tricks")
    except ImportError:
        shim = types.ModuleType("json_tricks")
        shim.dump, shim.load, shim.dumps, shim.loads = json.dump, json.load, json.dumps, json.loads
        sys.modules["json_tricks"] = shim
    try:
        with transpose.upstream_modules(checkout):
            yield checkout
    finally:
        if shim is not None:
            sys.modules.pop("json_tricks", None)


@pytest.fixture(scope="module")
def config(upstream):
    """Upstream's config for the experiment: yacs when installed, else the YAML + DEFAULTS."""
    try:
        cfg = importlib.import_module("config").cfg
        cfg.defrost()
        cfg.merge_from_file(str(upstream / transpose.EXPERIMENT))
        cfg.freeze()
        return cfg
    except ImportError:
        pass
    defaults = (upstream / "lib" / "config" / "default.py").read_text()
    cfg = transpose.experiment_config(upstream / transpose.EXPERIMENT)
    for path, value in DEFAULTS.items():
        assert re.search(rf"^_C\.{'.'.join(path)} = {value!r}$", defaults, re.M), path
        node = cfg
        for key in path[:-1]:
            node = node.setdefault(key, transpose.Config())
        node[path[-1]] = value
    return cfg


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("coco"), images=6, seed=5)


def compare(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    got, want = got.astype(np.float64), want.astype(np.float64)
    max_abs = float(np.abs(got - want).max())
    cosine = float(np.dot(got.ravel(), want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)))
    return max_abs, cosine


def upstream_network(checkout: Path, seed: int) -> torch.nn.Module:
    """Upstream's get_pose_net with the experiment's config, random weights from `seed`."""
    cfg = transpose.experiment_config(checkout / transpose.EXPERIMENT)
    torch.manual_seed(seed)
    return importlib.import_module("models.transpose_r").get_pose_net(cfg, is_train=False).eval()


# ---------------------------------------------------------------- export (link 2)

def test_the_yaml_config_builds_what_yacs_builds(upstream):
    pytest.importorskip("yacs")
    cfg = importlib.import_module("config").cfg.clone()
    cfg.defrost()
    cfg.merge_from_file(str(upstream / transpose.EXPERIMENT))
    torch.manual_seed(3)
    with_yacs = importlib.import_module("models.transpose_r").get_pose_net(cfg, is_train=False).state_dict()
    ours = transpose.build_network(upstream, seed=3).state_dict()
    assert list(ours) == list(with_yacs) and all(torch.equal(ours[k], with_yacs[k]) for k in ours)


def test_network_is_transpose_r_a3(upstream):
    network = upstream_network(upstream, 0)
    state = network.state_dict()
    assert len(state) == 190 and list(state)[:3] == ["pos_embedding", "conv1.weight", "bn1.weight"]
    assert sum(p.numel() for p in network.parameters()) == 5_195_345  # README: 5.2Mb


@pytest.mark.parametrize("bs", BATCH_SIZES)
def test_export_matches_pytorch(bs, upstream, tmp_path, record_property):
    from onnxsim import simplify

    path = tmp_path / f"transpose_bs{bs}.onnx"
    transpose.export(ExportContext(source=upstream, weights=None, target="ascend", bs=bs, out=path, opset=11,
                                   input_names=["input"], output_names=["output"], settings=transpose.Settings(), seed=0))
    exported = onnx.load(path)
    assert exported.opset_import[0].version == 11
    assert [d.dim_value for d in exported.graph.input[0].type.tensor_type.shape.dim] == [bs, 3, 256, 192]
    assert [d.dim_value for d in exported.graph.output[0].type.tensor_type.shape.dim] == [bs, 17, 64, 48]
    simplified, valid = simplify(exported)
    assert valid

    image = np.random.default_rng(bs).standard_normal((bs, 3, 256, 192)).astype(np.float32)
    with torch.no_grad():
        want = upstream_network(upstream, 0)(torch.from_numpy(image)).numpy()
    figures = {}
    for name, model in (("onnx", exported), ("onnxsim", simplified)):
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"input": image})
        max_abs, cosine = compare(got, want)
        figures[name] = (max_abs, cosine)
        record_property(f"{name}_max_abs", max_abs)
        record_property(f"{name}_cosine", cosine)
        assert max_abs < 1e-4 and cosine > 0.999999, (name, max_abs, cosine)
    print(f"\nbs {bs}: " + "; ".join(f"{n} max abs {m:.3g} 1-cosine {1 - c:.3g}" for n, (m, c) in figures.items()))


# ---------------------------------------------------------------- preprocessing (link 3)

def test_affine_transforms_match_get_affine_transform(upstream):
    get_affine_transform = importlib.import_module("utils.transforms").get_affine_transform
    rng = np.random.default_rng(0)
    centers = rng.uniform(0, 640, (50, 2)).astype(np.float32)
    scales = rng.uniform(0.05, 4, (50, 2)).astype(np.float32)
    for size in ((192, 256), (48, 64)):
        for inverse in (False, True):
            ours = affine_transforms(centers, scales, size, inverse=inverse)
            theirs = np.stack([get_affine_transform(c, s, 0, np.array(size), inv=int(inverse)) for c, s in zip(centers, scales)])
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-9)
    for c, s in zip(centers, scales):
        assert np.array_equal(crop_transform(c, s, (192, 256)), get_affine_transform(c, s, 0, np.array([192, 256])))


def upstream_dataset(config, root: Path):
    """COCODataset as TransPose_preprocess.py / tools/test.py build it (ToTensor + Normalize in
    torch: torchvision's two transforms, which do exactly this on a uint8 HWC image)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def to_tensor_normalize(image: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(255) - mean) / std

    coco_dataset = importlib.import_module("dataset.coco").COCODataset
    return coco_dataset(config, str(root), "val2017", False, to_tensor_normalize)


def test_samples_and_inputs_match_coco_dataset(upstream, config, coco):
    dataset = upstream_dataset(config, coco)
    samples = transpose.list_samples(coco, transpose.Settings())
    assert len(samples) == len(dataset.db) == 13
    for index, (sample, record) in enumerate(zip(samples, dataset.db)):
        assert sample.path == Path(record["image"])
        assert np.array_equal(np.float32(sample.meta["center"]), record["center"])
        assert np.array_equal(np.float32(sample.meta["scale"]), record["scale"])
        image, _, _, meta = dataset[index]
        views = transpose.preprocess(sample, transpose.Settings())
        assert np.array_equal(views["normal"][0], image.numpy())  # bit for bit
        assert np.array_equal(views["flip"][0], np.flip(image.numpy()[None], 3)[0])  # validate()'s flip
        assert meta["score"] == sample.meta["score"]


# ---------------------------------------------------------------- postprocessing (link 3)

def heatmaps(rng: np.random.Generator, count: int) -> np.ndarray:
    """Noise plus one Gaussian per map, with the awkward cases: a map whose peak is on the
    border, an all-negative map and an all-zero one."""
    ys, xs = np.mgrid[0:64, 0:48]
    maps = (rng.standard_normal((count, 17, 64, 48)) * 0.05).astype(np.float32)
    centers = np.stack([rng.uniform(-1, 48, (count, 17)), rng.uniform(-1, 64, (count, 17))], axis=2)
    maps += np.exp(-((xs - centers[..., 0, None, None]) ** 2 + (ys - centers[..., 1, None, None]) ** 2) / 8).astype(np.float32)
    maps[0, 0] = -np.abs(maps[0, 0]) - 0.01
    maps[0, 1] = 0
    maps[1, 2, 0, 0] = 5.0
    return maps


def test_flip_back_matches(upstream):
    upstream_flip_back = importlib.import_module("utils.transforms").flip_back
    maps = np.random.default_rng(1).random((3, 17, 64, 48)).astype(np.float32)
    assert np.array_equal(flip_back(maps), upstream_flip_back(maps.copy(), transpose_flip_pairs()))


def transpose_flip_pairs():
    return [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]  # lib/dataset/coco.py


@pytest.mark.parametrize("kernel", [11, 3])
def test_final_preds_match_get_final_preds(upstream, config, kernel, record_property):
    inference = importlib.import_module("core.inference")
    rng = np.random.default_rng(kernel)
    maps = heatmaps(rng, 24)
    centers = rng.uniform(50, 600, (24, 2)).astype(np.float32)
    scales = rng.uniform(0.1, 3, (24, 2)).astype(np.float32)
    cfg = types.SimpleNamespace(TEST=types.SimpleNamespace(BLUR_KERNEL=kernel))
    with np.errstate(divide="ignore", invalid="ignore"):
        want, want_maxvals = inference.get_final_preds(cfg, maps.copy(), centers, scales)
    got, got_maxvals = final_preds(maps, centers, scales, kernel)
    assert np.array_equal(got_maxvals, want_maxvals)
    pixel = (200 * scales[:, 0].astype(np.float64) - 1) / 47  # image pixels per heatmap pixel
    error = (np.abs(got - want).max(axis=2) / pixel[:, None]).max()  # in heatmap pixels
    record_property("max_error_heatmap_px", float(error))
    print(f"\nget_final_preds (blur {kernel}): max |ours - upstream| = {error:.3g} heatmap px, {np.abs(got - want).max():.3g} image px")
    assert error < 1e-4


def test_oks_nms_matches(upstream):
    oks_nms = importlib.import_module("nms.nms").oks_nms
    rng = np.random.default_rng(2)
    for trial in range(20):
        count = int(rng.integers(1, 12))
        base = rng.uniform(0, 300, (17, 2))
        keypoints = np.concatenate([base + rng.normal(0, rng.uniform(0.5, 30), (count, 17, 2)),
                                    rng.random((count, 17, 1))], axis=2).astype(np.float32)
        scores = rng.random(count)
        scores[rng.random(count) < 0.3] = 0.5  # ties
        areas = rng.uniform(2000, 40000, count)
        database = [{"keypoints": keypoints[i], "score": scores[i], "area": areas[i]} for i in range(count)]
        assert coco_keypoints.oks_nms(keypoints, scores, areas, 0.9) == [int(i) for i in oks_nms(database, 0.9)], trial


def network_heatmaps(upstream, samples) -> dict[str, dict]:
    """What the guide's two ais_infer runs give: upstream's network (random weights) on our
    normal and flipped inputs."""
    network = upstream_network(upstream, 1)
    views = [transpose.preprocess(s, transpose.Settings()) for s in samples]
    outputs = {}
    with torch.no_grad():
        for view in ("normal", "flip"):
            batch = torch.from_numpy(np.stack([v[view][0] for v in views]))
            outputs[view] = network(batch).numpy()
    return {s.id: {view: [outputs[view][i]] for view in outputs} for i, s in enumerate(samples)}


def perturbed_heatmaps(coco: Path, samples) -> dict[str, dict]:
    """Gaussians near the true keypoints, a different error per view: a mid-range AP."""
    rng = np.random.default_rng(7)
    truth = {a["id"]: np.array(a["keypoints"], float).reshape(17, 3)
             for a in json.loads((coco / "annotations" / "person_keypoints_val2017.json").read_text())["annotations"]}
    ys, xs = np.mgrid[0:64, 0:48]
    outputs = {}
    for sample in samples:
        matrix = affine_transforms([sample.meta["center"]], [sample.meta["scale"]], (48, 64))[0]
        points = truth[int(sample.id.split("_")[1])]
        views = {}
        for view in ("normal", "flip"):
            maps = np.zeros((17, 64, 48), np.float32)
            for joint, (x, y, _) in enumerate(points):
                hx, hy = matrix @ [x, y, 1] + rng.normal(0, 1.5, 2)
                maps[joint] = rng.uniform(0.1, 1) * np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / 8)
            views[view] = [flip_back(maps[None])[0] if view == "flip" else maps]
        outputs[sample.id] = views
    return outputs


def upstream_evaluation(upstream, config, coco: Path, samples, outputs, output_dir: Path):
    """TransPose_postprocess.py's loop: flip_back + average in torch, get_final_preds with the
    sample's centre and scale, all_preds / all_boxes as validate() fills them, then
    COCODataset.evaluate (rescoring, OKS-NMS, COCOeval)."""
    inference = importlib.import_module("core.inference")
    upstream_flip_back = importlib.import_module("utils.transforms").flip_back
    dataset = upstream_dataset(config, coco)
    all_preds = np.zeros((len(samples), 17, 3), dtype=np.float32)
    all_boxes = np.zeros((len(samples), 6))
    image_path = []
    for index, sample in enumerate(samples):
        _, _, _, meta = dataset[index]
        normal = torch.from_numpy(outputs[sample.id]["normal"][0][None].copy())
        flipped = torch.from_numpy(upstream_flip_back(outputs[sample.id]["flip"][0][None].copy(), dataset.flip_pairs).copy())
        output = (normal + flipped) * 0.5
        c, s = meta["center"][None], meta["scale"][None]
        preds, maxvals = inference.get_final_preds(config, output.clone().numpy(), c, s)
        all_preds[index:index + 1, :, 0:2] = preds[:, :, 0:2]
        all_preds[index:index + 1, :, 2:3] = maxvals
        all_boxes[index:index + 1, 0:2] = c[:, 0:2]
        all_boxes[index:index + 1, 2:4] = s[:, 0:2]
        all_boxes[index:index + 1, 4] = np.prod(s * 200, 1)
        all_boxes[index:index + 1, 5] = meta["score"]
        image_path.append(meta["image"])
    name_values, _ = dataset.evaluate(config, all_preds, str(output_dir), all_boxes, image_path, [], [])
    results = json.loads((output_dir / "results" / "keypoints_val2017_results_0.json").read_text())
    return dict(name_values), results


@pytest.mark.parametrize("source", ["network", "perturbed"])
def test_keypoint_ap_matches_coco_dataset_evaluate(upstream, config, coco, tmp_path, source, record_property):
    samples = transpose.list_samples(coco, transpose.Settings())
    outputs = network_heatmaps(upstream, samples) if source == "network" else perturbed_heatmaps(coco, samples)
    want, want_results = upstream_evaluation(upstream, config, coco, samples, outputs, tmp_path)
    evaluator = transpose.evaluator(coco, transpose.Settings(decode_chunk=5))
    for sample in samples:
        evaluator.add(sample, outputs[sample.id])
    got = evaluator.result()
    names = ["AP", "Ap .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)"]
    assert [got[name] for name in coco_keypoints.STAT_NAMES] == pytest.approx([want[name] for name in names], abs=1e-12)
    record_property("ap", got["ap"])
    print(f"\n{source} heatmaps: AP ours {got['ap']:.6f} upstream {want['AP']:.6f}")
    assert len(evaluator.detections) == len(want_results)
    for ours, theirs in zip(evaluator.detections, want_results):
        assert ours["image_id"] == theirs["image_id"] and ours["score"] == pytest.approx(theirs["score"], rel=1e-12)
        np.testing.assert_allclose(ours["keypoints"], theirs["keypoints"], rtol=1e-5, atol=2e-3)  # float32 Taylor steps
        np.testing.assert_allclose(ours["center"] + ours["scale"], theirs["center"] + theirs["scale"], rtol=0)
    if source == "perturbed":
        assert 0.2 < got["ap"] < 0.999
