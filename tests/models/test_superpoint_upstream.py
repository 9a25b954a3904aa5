"""SuperPoint against upstream pytorch-superpoint itself (DESIGN.md section 4, links 2 and 3).

Runs when OMPIPE_UPSTREAM_SUPERPOINT names a clone or mirror of upstream; the tests read a
checkout of the pinned commit with patches/superpoint applied, made from it. Upstream's
postprocess also needs its own dependencies in this interpreter (tqdm, torchgeometry 0.1.2);
those tests skip, saying so, without them.

- export: ONNX Runtime on our export (and on its onnxsim simplification) vs PyTorch on the
  upstream model with the same random weights, both outputs, every batch size of the guide;
- preprocessing: our arrays and homographies vs `datasets/patches_dataset.py:PatchesDataset`;
- postprocessing: our keypoints vs `Val_model_heatmap` (a `SuperPointFrontend_torch`, with its
  `nms_fast`) driven as `export.py:export_descriptor` drives it, on real photographs.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from om_pipeline.testing.upstream import patched_upstream

from om_pipeline.data.synth_hpatches import synthesize
from om_pipeline.models import superpoint
from om_pipeline.models.superpoint_postprocess import candidates, extract_keypoints, grid_nms, heatmap_from_semi, remove_border
from om_pipeline.plugin import ExportContext

UPSTREAM = os.environ.get("OMPIPE_UPSTREAM_SUPERPOINT")
pytestmark = [pytest.mark.upstream, pytest.mark.skipif(not UPSTREAM, reason="OMPIPE_UPSTREAM_SUPERPOINT is not set")]

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
POSTPROCESS = dict(detection_threshold=0.015, nms_radius=4, border=4, subpixel_patch_size=5)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    checkout = patched_upstream("superpoint", UPSTREAM, tmp_path_factory.mktemp("upstream") / "pytorch-superpoint")
    with superpoint.upstream_modules(checkout):
        yield checkout


@pytest.fixture(scope="module")
def photographs(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("hpatches"), sequences=3, seed=7)


def random_upstream_network(seed: int = 0) -> torch.nn.Module:
    """The upstream class with the weights our export draws for the same seed."""
    torch.manual_seed(seed)
    return importlib.import_module("models.SuperPointNet_gauss2").SuperPointNet_gauss2()


def compare(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    got, want = got.astype(np.float64), want.astype(np.float64)
    max_abs = float(np.abs(got - want).max())
    cosine = float(np.dot(got.ravel(), want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)))
    return max_abs, cosine


@pytest.mark.parametrize("bs", BATCH_SIZES)
def test_export_matches_pytorch(bs, upstream, tmp_path, record_property):
    from onnxsim import simplify

    path = tmp_path / f"superpoint_bs{bs}.onnx"
    superpoint.export(ExportContext(
        source=upstream, weights=None, target="onnxruntime", bs=bs, out=path, opset=11,
        input_names=["image"], output_names=["semi", "desc"], settings=superpoint.Settings(), seed=0,
    ))
    exported = onnx.load(path)
    assert exported.opset_import[0].version == 11
    assert [d.dim_value for d in exported.graph.input[0].type.tensor_type.shape.dim] == [bs, 1, 240, 320]
    simplified, valid = simplify(exported)
    assert valid

    image = np.random.default_rng(bs).random((bs, 1, 240, 320), dtype=np.float32)
    with torch.no_grad():
        expected = random_upstream_network().eval()(torch.from_numpy(image))
    for label, graph in (("exported", exported), ("simplified", simplified)):
        session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs = dict(zip(("semi", "desc"), session.run(["semi", "desc"], {"image": image})))
        for name in ("semi", "desc"):
            max_abs, cosine = compare(outputs[name], expected[name].numpy())
            record_property(f"{label}_{name}", f"max_abs={max_abs:.3g} cosine={cosine:.9f}")
            print(f"bs{bs} {label} {name}: max abs {max_abs:.3g}, cosine {cosine:.9f}")
            assert max_abs < 1e-4 and cosine > 1 - 1e-6


def test_samples_and_preprocessing_match_patches_dataset(upstream, photographs, tmp_path, monkeypatch):
    patches_dataset = importlib.import_module("datasets.patches_dataset")
    data = tmp_path / "HPatches"  # upstream reads DATA_PATH/HPatches
    data.symlink_to(photographs)
    monkeypatch.setattr(patches_dataset, "DATA_PATH", str(tmp_path))
    dataset = patches_dataset.PatchesDataset(dataset="hpatches", alteration="all", preprocessing={"resize": [240, 320]})

    samples = {sample.path: sample for sample in superpoint.list_samples(data, superpoint.Settings())}
    upstream_pairs = {(Path(a).name, Path(b).parent.name, Path(b).name) for a, b in zip(dataset.files["image_paths"], dataset.files["warped_image_paths"])}
    our_pairs = {("1.ppm", s.meta["seq"], f"{s.meta['n']}.ppm") for s in samples.values() if s.meta["n"] > 1}
    assert upstream_pairs == our_pairs

    for index in range(len(dataset)):
        item = dataset[index]
        first = Path(dataset.files["image_paths"][index])
        warped = Path(dataset.files["warped_image_paths"][index])
        np.testing.assert_array_equal(superpoint.preprocess(samples[first], superpoint.Settings())[0], item["image"].transpose(2, 0, 1))
        np.testing.assert_array_equal(superpoint.preprocess(samples[warped], superpoint.Settings())[0], item["warped_image"].transpose(2, 0, 1))
        original_shape = cv2.imread(str(first)).shape[:2]
        homography = superpoint.adapt_homography(np.loadtxt(first.parent / f"H_1_{warped.stem}"), original_shape, (240, 320))
        np.testing.assert_array_equal(homography, item["homography"])


@pytest.mark.parametrize("train_mode", [False, True], ids=["eval-bn", "train-bn"])
def test_postprocess_matches_val_model_heatmap(train_mode, upstream, photographs):
    """eval-bn gives the near-uniform heatmap of an untrained network (every pixel a candidate);
    train-bn (what upstream's export_descriptor really runs: it never calls eval()) gives
    per-image normalised, much more varied heatmaps. Both regimes must agree."""
    pytest.importorskip("tqdm", reason="upstream Val_model_heatmap needs tqdm")
    pytest.importorskip("torchgeometry", reason="upstream soft_argmax_points needs torchgeometry==0.1.2")
    agent = importlib.import_module("Val_model_heatmap").Val_model_heatmap(
        {"name": "SuperPointNet_gauss2", "params": {}, "pretrained": None, "nms": 4,
         "detection_threshold": 0.015, "nn_thresh": 1.0, "subpixel": {"enable": True, "patch_size": 5}},
        device="cpu",
    )
    agent.net = random_upstream_network().train(train_mode)
    for sample in superpoint.list_samples(photographs, superpoint.Settings())[::4]:
        image = torch.from_numpy(superpoint.preprocess(sample, superpoint.Settings())[0][None])
        agent.run(image)  # export_descriptor's get_pts_desc_from_agent, step by step
        integer_points = agent.heatmap_to_pts()
        subpixel_points = agent.soft_argmax_points(integer_points, patch_size=5)
        descriptors = agent.desc_to_sparseDesc()

        semi, coarse = agent.outs["semi"][0].numpy(), agent.outs["desc"][0].numpy()
        heatmap = heatmap_from_semi(semi)
        ours_integer = remove_border(grid_nms(candidates(heatmap, 0.015), heatmap.shape, 4), heatmap.shape, 4)
        ours = extract_keypoints(semi, coarse, **POSTPROCESS)

        np.testing.assert_array_equal(heatmap, agent.heatmap[0, 0])
        np.testing.assert_array_equal(ours_integer, integer_points[0].T)
        np.testing.assert_allclose(ours.points, subpixel_points[0].T, atol=1e-5, rtol=0)
        np.testing.assert_allclose(ours.descriptors, descriptors[0].T, atol=1e-5, rtol=0)


def test_grid_nms_matches_get_pts_from_heatmap_with_ties(upstream):
    """`getPtsFromHeatmap` = threshold, `nms_fast`, a second sort, border removal."""
    pytest.importorskip("tqdm", reason="upstream models/model_wrap.py needs tqdm")
    frontend_class = importlib.import_module("models.model_wrap").SuperPointFrontend_torch
    frontend = frontend_class({"model": {"subpixel": {"enable": False}}}, None, nms_dist=4, conf_thresh=0.3, nn_thresh=0.7, load=False)
    heatmap = np.round(np.random.default_rng(0).random((240, 320)), 2).astype(np.float32)  # thousands of ties
    ours = remove_border(grid_nms(candidates(heatmap, 0.3), heatmap.shape, 4), heatmap.shape, 4)
    np.testing.assert_array_equal(ours, frontend.getPtsFromHeatmap(heatmap).T)
