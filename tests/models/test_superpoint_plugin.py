"""The SuperPoint plugin's own behaviour: samples, preprocessing, export mechanics, evaluator.
No upstream checkout needed (export runs on a stand-in network with the same interface)."""
from __future__ import annotations

import random
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from om_pipeline.errors import UserError
from om_pipeline.models import superpoint
from om_pipeline.plugin import ExportContext, Sample, settings_from_params
from om_pipeline.testing.atc_gate import gate_failures

TRANSLATION_32PX = np.array([[1.0, 0, 32.0], [0, 1.0, 0], [0, 0, 1.0]])


def write_sequence(root: Path, name: str, homography: np.ndarray = np.eye(3), shape=(480, 640)) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    for n in range(1, 7):
        cv2.imwrite(str(folder / f"{n}.ppm"), rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    for n in range(2, 7):
        np.savetxt(folder / f"H_1_{n}", homography)
    return folder


# ------------------------------------------------------------------------ list_samples

def test_list_samples_orders_sequences_by_name_and_images_by_number(tmp_path):
    for name in ("v_zebra", "i_apple", "v_boat"):
        write_sequence(tmp_path, name)
    (tmp_path / ".cache").mkdir()
    samples = superpoint.list_samples(tmp_path, superpoint.Settings())
    assert [s.id for s in samples[:7]] == [f"i_apple_{n}" for n in range(1, 7)] + ["v_boat_1"]
    assert len(samples) == 18
    assert samples[8].meta == {"seq": "v_boat", "n": 3}
    assert samples[8].path == tmp_path / "v_boat" / "3.ppm"


def test_list_samples_names_the_missing_file_and_where_it_looked(tmp_path):
    folder = write_sequence(tmp_path, "i_apple")
    (folder / "H_1_4").unlink()
    (folder / "6.ppm").unlink()
    with pytest.raises(UserError) as error:
        superpoint.list_samples(tmp_path, superpoint.Settings())
    assert str(folder / "6.ppm") in error.value.message and f"looked in {folder}" in error.value.message
    assert "H_1_4" in error.value.details[0]
    assert "H_1_2" in error.value.hint


@pytest.mark.parametrize("layout", ["missing", "empty", "files only"])
def test_list_samples_rejects_a_folder_without_sequences(tmp_path, layout):
    data = tmp_path / "hpatches"
    if layout != "missing":
        data.mkdir()
    if layout == "files only":
        (data / "1.ppm").write_bytes(b"")
    with pytest.raises(UserError, match=str(data)):
        superpoint.list_samples(data, superpoint.Settings())


def test_list_samples_rejects_a_sequence_name_that_is_not_file_name_safe(tmp_path):
    write_sequence(tmp_path, "v.boat")
    with pytest.raises(UserError, match="v.boat"):
        superpoint.list_samples(tmp_path, superpoint.Settings())


# ------------------------------------------------------------------------ preprocess

def preprocess_image(tmp_path: Path, bgr: np.ndarray) -> np.ndarray:
    path = tmp_path / "image.ppm"
    cv2.imwrite(str(path), bgr)
    (array,) = superpoint.preprocess(Sample(id="x", path=path), superpoint.Settings())
    assert array.dtype == np.float32 and array.shape == (1, 240, 320)
    return array


def test_preprocess_keeps_upstreams_channel_swap(tmp_path):
    blue = np.zeros((240, 320, 3), np.uint8)
    blue[..., 0] = 255  # BGR: pure blue
    # RGB2GRAY on BGR data weighs blue with red's 0.299: 76, not the true luma 29.
    np.testing.assert_array_equal(preprocess_image(tmp_path, blue), np.float32(76) / 255)


def test_preprocess_crops_from_the_top_left(tmp_path):
    image = np.zeros((480, 800, 3), np.uint8)
    image[:, 640:] = 255  # s = max(240/480, 320/800) = 0.5: the crop keeps columns 0..639
    assert preprocess_image(tmp_path, image).max() == 0


def test_preprocess_of_an_image_at_input_size_is_gray_over_255(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    expected = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    np.testing.assert_array_equal(preprocess_image(tmp_path, image)[0], expected)


def test_preprocess_reports_an_unreadable_image(tmp_path):
    path = tmp_path / "broken.ppm"
    path.write_bytes(b"P6 nonsense")
    with pytest.raises(UserError, match="broken.ppm"):
        superpoint.preprocess(Sample(id="x", path=path), superpoint.Settings())


def test_adapt_homography_scales_to_network_pixels():
    # 960x1280 -> 240x320: s = 0.25, so a 40 px shift becomes 10 px; a pure scale is unchanged.
    adapted = superpoint.adapt_homography(np.array([[1.0, 0, 40], [0, 1, -8], [0, 0, 1]]), (960, 1280), (240, 320))
    np.testing.assert_allclose(adapted, [[1, 0, 10], [0, 1, -2], [0, 0, 1]])
    perspective = np.array([[1.0, 0, 0], [0, 1, 0], [0.001, 0, 1]])
    np.testing.assert_allclose(superpoint.adapt_homography(perspective, (960, 1280), (240, 320))[2, 0], 0.004)


def test_settings_from_params():
    settings = settings_from_params(superpoint.Settings, {"nms_radius": 2, "homography_thresholds": [1, 3]})
    assert settings.nms_radius == 2 and settings.homography_thresholds == (1, 3)
    assert settings.detection_threshold == 0.015 and settings.top_k == 1000 and settings.nn_threshold == 1.2
    with pytest.raises(UserError, match="params.nms_radius"):
        settings_from_params(superpoint.Settings, {"nms_radius": "four"})
    with pytest.raises(UserError, match="params.other_stage_key: unknown setting"):
        settings_from_params(superpoint.Settings, {"other_stage_key": 1})


# ------------------------------------------------------------------------ export

STAND_IN_NETWORK = '''
import torch


class SuperPointNet_gauss2(torch.nn.Module):
    """Same interface as upstream's: N x 1 x H x W -> {'semi', 'desc'} at 1/8 resolution."""

    def __init__(self):
        super().__init__()
        self.detector = torch.nn.Conv2d(1, 65, 8, stride=8)
        self.descriptor = torch.nn.Conv2d(1, 256, 8, stride=8)

    def forward(self, x):
        desc = self.descriptor(x)
        return {"semi": self.detector(x), "desc": desc / torch.norm(desc, p=2, dim=1, keepdim=True)}
'''


@pytest.fixture
def stand_in_checkout(tmp_path) -> Path:
    models = tmp_path / "checkout" / "models"
    models.mkdir(parents=True)
    (models / "__init__.py").write_text("")
    (models / "SuperPointNet_gauss2.py").write_text(STAND_IN_NETWORK)
    return models.parent


def export_context(source: Path, out: Path, bs: int = 2, weights: Path | None = None, seed: int = 0) -> ExportContext:
    return ExportContext(source=source, weights=weights, target="ascend", bs=bs, out=out, opset=11,
                         input_names=["image"], output_names=["semi", "desc"], settings=superpoint.Settings(), seed=seed)


def stand_in_network(source: Path, seed: int) -> torch.nn.Module:
    with superpoint.upstream_modules(source):
        torch.manual_seed(seed)
        from models.SuperPointNet_gauss2 import SuperPointNet_gauss2
        return SuperPointNet_gauss2().eval()


def run_onnx(path: Path, image: np.ndarray) -> list[np.ndarray]:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["semi", "desc"], {"image": image})


def test_export_writes_a_static_opset_11_graph_with_the_recipe_names(stand_in_checkout, tmp_path):
    out = tmp_path / "sp_bs2.onnx"
    superpoint.export(export_context(stand_in_checkout, out, bs=2, seed=3))
    model = onnx.load(out)
    assert model.opset_import[0].version == 11
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*model.graph.input, *model.graph.output]}
    assert shapes == {"image": [2, 1, 240, 320], "semi": [2, 65, 30, 40], "desc": [2, 256, 30, 40]}
    assert gate_failures(model, "superpoint") == []  # ATC's parse gate, the recipe's flags at every bs

    image = np.random.default_rng(0).random((2, 1, 240, 320), dtype=np.float32)
    with torch.no_grad():
        expected = stand_in_network(stand_in_checkout, seed=3)(torch.from_numpy(image))
    semi, desc = run_onnx(out, image)
    np.testing.assert_allclose(semi, expected["semi"].numpy(), atol=1e-5)
    np.testing.assert_allclose(desc, expected["desc"].numpy(), atol=1e-5)


def test_export_random_weights_follow_the_seed(stand_in_checkout, tmp_path):
    image = np.ones((1, 1, 240, 320), np.float32)
    outputs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        superpoint.export(export_context(stand_in_checkout, tmp_path / f"{name}.onnx", bs=1, seed=seed))
        outputs.append(run_onnx(tmp_path / f"{name}.onnx", image)[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.allclose(outputs[0], outputs[2])


def export_with_checkpoint(source: Path, tmp_path: Path, content: dict) -> tuple[Path, torch.nn.Module]:
    trained = stand_in_network(source, seed=42)
    checkpoint = tmp_path / "checkpoint.pth.tar"
    torch.save({**content, "model_state_dict": trained.state_dict()}, checkpoint)
    superpoint.export(export_context(source, tmp_path / "sp.onnx", bs=1, weights=checkpoint))
    return tmp_path / "sp.onnx", trained


def assert_same_network(onnx_path: Path, network: torch.nn.Module) -> None:
    image = np.random.default_rng(1).random((1, 1, 240, 320), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(onnx_path, image)[0], network(torch.from_numpy(image))["semi"].numpy(), atol=1e-5)


def test_export_loads_a_checkpoint_in_upstreams_layout(stand_in_checkout, tmp_path):
    assert_same_network(*export_with_checkpoint(stand_in_checkout, tmp_path, {"n_iter": 170000, "loss": torch.tensor(0.5)}))


def test_export_unpickles_fully_only_upstreams_own_checkpoint(stand_in_checkout, tmp_path, monkeypatch):
    with_numpy_scalar = {"n_iter": 170000, "loss": np.float64(0.5)}  # the weights-only loader refuses it
    with pytest.raises(UserError, match="not upstream's checkpoint"):
        export_with_checkpoint(stand_in_checkout, tmp_path, with_numpy_scalar)
    monkeypatch.setattr(superpoint, "UPSTREAM_CHECKPOINT_BLOB", superpoint.git_blob_id(tmp_path / "checkpoint.pth.tar"))
    assert_same_network(*export_with_checkpoint(stand_in_checkout, tmp_path, with_numpy_scalar))


def test_trusted_checkpoint_blob_is_the_one_upstreams_tree_lists():
    """The blob id that may be unpickled fully, quoted from the pinned tree (the blob itself is
    absent from a snapshot, but the tree entry that names it is not):
    `git ls-tree 5eb75d74df27c07f6e7311df8f167e2a9c01a798 logs/superpoint_coco_heat2_0/checkpoints/` in
    eric-yyjau/pytorch-superpoint gives
      100644 blob a6de43741db7fe038aed600e64b3554b02f7572d	logs/superpoint_coco_heat2_0/checkpoints/superPointNet_170000_checkpoint.pth.tar
    Also recorded (and regenerated by the gated test) in tests/fixtures/upstream-pins/superpoint.json."""
    from om_pipeline.recipe import find_recipe

    weights = find_recipe("superpoint").recipe.stages.weights
    assert superpoint.UPSTREAM_CHECKPOINT_BLOB == "a6de43741db7fe038aed600e64b3554b02f7572d" == weights.git_blob
    assert weights.in_source == "logs/superpoint_coco_heat2_0/checkpoints/superPointNet_170000_checkpoint.pth.tar"


def test_git_blob_id_is_gits(tmp_path):
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert superpoint.git_blob_id(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


def test_export_refuses_a_checkpoint_of_another_network(stand_in_checkout, tmp_path):
    checkpoint = tmp_path / "other.pth"
    torch.save({"model_state_dict": {"conv.weight": torch.zeros(1)}}, checkpoint)
    with pytest.raises(UserError, match="does not fit SuperPointNet_gauss2"):
        superpoint.export(export_context(stand_in_checkout, tmp_path / "sp.onnx", weights=checkpoint))


def test_export_leaves_sys_path_and_modules_as_they_were(stand_in_checkout, tmp_path, monkeypatch):
    unrelated_models = types.ModuleType("models")
    monkeypatch.setitem(sys.modules, "models", unrelated_models)
    path_before = list(sys.path)
    superpoint.export(export_context(stand_in_checkout, tmp_path / "sp.onnx", bs=1))
    assert sys.modules["models"] is unrelated_models
    assert "models.SuperPointNet_gauss2" not in sys.modules
    assert sys.path == path_before


def test_export_rejects_a_folder_that_is_not_the_upstream_checkout(tmp_path):
    with pytest.raises(UserError, match="is not the expected upstream checkout"):
        superpoint.export(export_context(tmp_path, tmp_path / "sp.onnx"))


# ------------------------------------------------------------------------ evaluator

def network_outputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """semi with a confident point in 40% of the cells, and random descriptors."""
    semi = rng.normal(size=(65, 30, 40)).astype(np.float32)
    semi[64] += 4
    rows, cols = np.nonzero(rng.random((30, 40)) < 0.4)
    semi[rng.integers(0, 64, len(rows)), rows, cols] += 9
    return semi, rng.normal(size=(256, 30, 40)).astype(np.float32)


def shifted_two_cells_right(outputs: tuple[np.ndarray, np.ndarray], rng) -> tuple[np.ndarray, np.ndarray]:
    """The outputs of the same scene moved 16 network pixels right; new content on the left."""
    moved = []
    for array in outputs:
        shifted = rng.normal(size=array.shape).astype(np.float32)
        shifted[:, :, 2:] = array[:, :, :-2]
        moved.append(shifted)
    moved[0][64, :, :2] += 4
    return moved[0], moved[1]


def evaluate(data: Path, outputs_by_sample: dict[str, tuple], order=None) -> dict[str, float]:
    samples = [s for s in superpoint.list_samples(data, superpoint.Settings()) if s.id in outputs_by_sample]
    evaluator = superpoint.evaluator(data, superpoint.Settings())
    for sample in order(samples) if order else samples:
        evaluator.add(sample, list(outputs_by_sample[sample.id]))
    return evaluator.result()


def test_evaluator_scores_identical_views_as_perfect(tmp_path):
    write_sequence(tmp_path, "i_same")
    outputs = network_outputs(np.random.default_rng(0))
    result = evaluate(tmp_path, {f"i_same_{n}": outputs for n in range(1, 7)})
    assert result["pairs"] == 5
    assert result["repeatability"] == 1.0 and result["nn_map"] == 1.0
    assert result["homography_accuracy_1"] == 1.0 and result["homography_accuracy_50"] == 1.0


def test_evaluator_uses_the_homography_adapted_to_the_network_input(tmp_path):
    # 32 px in the 480x640 original = 16 px = two cells at 240x320.
    write_sequence(tmp_path, "v_moved", TRANSLATION_32PX)
    write_sequence(tmp_path, "v_claims_still", np.eye(3))
    rng = np.random.default_rng(1)
    outputs = {}
    for sequence in ("v_moved", "v_claims_still"):
        first = network_outputs(rng)
        outputs[f"{sequence}_1"] = first
        outputs.update({f"{sequence}_{n}": shifted_two_cells_right(first, rng) for n in range(2, 7)})
    evaluator = superpoint.evaluator(tmp_path, superpoint.Settings())
    for sample in superpoint.list_samples(tmp_path, superpoint.Settings()):
        evaluator.add(sample, list(outputs[sample.id]))
    moved = [evaluator.pair_metrics[("v_moved", n)] for n in range(2, 7)]
    claims_still = [evaluator.pair_metrics[("v_claims_still", n)] for n in range(2, 7)]
    assert min(m.repeatability for m in moved) > 0.9
    assert max(m.repeatability for m in claims_still) < 0.5  # chance coincidences only
    assert all(m.homography_correct[1] for m in moved) and not any(m.homography_correct[1] for m in claims_still)


def test_evaluator_pairs_images_in_any_arrival_order_and_accepts_a_batch_axis(tmp_path):
    for name in ("i_a", "v_b"):
        write_sequence(tmp_path, name)
    rng = np.random.default_rng(2)
    outputs = {f"{s}_{n}": network_outputs(rng) for s in ("i_a", "v_b") for n in range(1, 7)}
    in_order = evaluate(tmp_path, outputs)
    shuffled = evaluate(tmp_path, {k: tuple(a[None] for a in v) for k, v in outputs.items()}, order=lambda s: random.Random(0).sample(s, len(s)))
    assert shuffled == pytest.approx(in_order, nan_ok=True)
    assert in_order["pairs"] == 10


def test_evaluator_of_a_limited_run_scores_the_pairs_it_has(tmp_path):
    write_sequence(tmp_path, "i_a")
    outputs = network_outputs(np.random.default_rng(3))
    assert evaluate(tmp_path, {f"i_a_{n}": outputs for n in (1, 2, 3)})["pairs"] == 2
    with pytest.raises(UserError, match="no image pair"):
        evaluate(tmp_path, {"i_a_1": outputs})
