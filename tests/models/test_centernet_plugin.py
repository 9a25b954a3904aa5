"""The CenterNet plugin without upstream: samples from a COCO-format folder, preprocessing against
its closed form, and the evaluator end to end on network outputs that encode the ground truth
(decode + map back + COCO results + pycocotools must give AP 1)."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from om_pipeline.errors import UserError
from om_pipeline.models import centernet
from om_pipeline.data.centernet_tinycoco import write_tiny_coco
from om_pipeline.metrics.coco_bbox import COCO80_CATEGORY_IDS
from om_pipeline.plugin import ExportContext, settings_from_params

# Upstream's normalisation, quoted (BGR order, as upstream reads images with cv2):
# xingyizhou/CenterNet @ 2b7692c377c6686fb35e473dac2de6105eed62c6, src/lib/datasets/dataset/coco.py:16-19
#   mean = np.array([0.40789654, 0.44719302, 0.47026115],
#   std  = np.array([0.28863828, 0.27408164, 0.27809835],
UPSTREAM_MEAN = (0.40789654, 0.44719302, 0.47026115)
UPSTREAM_STD = (0.28863828, 0.27408164, 0.27809835)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco"), images=6, seed=3)


@pytest.fixture
def tiny_copy(tiny, tmp_path):
    return shutil.copytree(tiny, tmp_path / "coco")


def annotations(root) -> dict:
    return json.loads((root / "annotations" / "instances_val2017.json").read_text())


def test_samples_follow_the_annotation_file(tiny_copy):
    dataset = annotations(tiny_copy)
    dataset["images"].reverse()  # upstream's order is the file's (coco.getImgIds()), not sorted
    (tiny_copy / "annotations" / "instances_val2017.json").write_text(json.dumps(dataset))
    samples = centernet.list_samples(tiny_copy, centernet.Settings())
    assert [s.meta["image_id"] for s in samples] == [image["id"] for image in dataset["images"]]
    assert [s.id for s in samples] == [image["file_name"][:-4] for image in dataset["images"]]
    assert all(s.path == tiny_copy / "val2017" / s.meta["file_name"] for s in samples)
    assert {(s.meta["height"], s.meta["width"]) for s in samples} == {(i["height"], i["width"]) for i in dataset["images"]}


def test_unsafe_file_names_get_the_image_id(tiny_copy):
    dataset = annotations(tiny_copy)
    image = dataset["images"][0]
    (tiny_copy / "val2017" / image["file_name"]).rename(tiny_copy / "val2017" / "my photo.v2.jpg")
    image["file_name"] = "my photo.v2.jpg"
    (tiny_copy / "annotations" / "instances_val2017.json").write_text(json.dumps(dataset))
    assert centernet.list_samples(tiny_copy, centernet.Settings())[0].id == f"image_{image['id']}"
    assert centernet.sample_id_for(139, "000000000139.jpg") == "000000000139"


def test_missing_images_and_annotations_are_user_errors(tiny_copy):
    (tiny_copy / "val2017" / annotations(tiny_copy)["images"][2]["file_name"]).unlink()
    with pytest.raises(UserError, match="1 image"):
        centernet.list_samples(tiny_copy, centernet.Settings())
    (tiny_copy / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(UserError, match="instances_val2017.json does not exist"):
        centernet.list_samples(tiny_copy, centernet.Settings())


def test_normalisation_is_upstreams():
    settings = centernet.Settings()
    assert settings.mean == UPSTREAM_MEAN and settings.std == UPSTREAM_STD


def test_preprocess_is_the_letterbox_warp(tiny):
    for sample in centernet.list_samples(tiny, centernet.Settings())[:3]:
        (array,) = centernet.preprocess(sample, centernet.Settings())
        assert array.shape == (3, 512, 512) and array.dtype == np.float32
        image = cv2.imread(str(sample.path))
        height, width = image.shape[:2]
        side = max(height, width)
        matrix = np.array([[512 / side, 0, 256 - width / 2 * 512 / side], [0, 512 / side, 256 - height / 2 * 512 / side]])
        warped = cv2.warpAffine(image, matrix, (512, 512), flags=cv2.INTER_LINEAR).astype(np.float64)
        want = ((warped / 255 - np.array(UPSTREAM_MEAN)) / np.array(UPSTREAM_STD)).transpose(2, 0, 1)
        np.testing.assert_allclose(array, want, rtol=0, atol=1e-4)
        # BGR kept: channel 0 is blue, normalised with the first (blue) mean and std.
        blue = image[height // 2, width // 2, 0] / 255
        assert array[0, 256, 256] == pytest.approx((blue - UPSTREAM_MEAN[0]) / UPSTREAM_STD[0], abs=0.2)


def test_preprocess_checks_the_annotated_size(tiny):
    sample = centernet.list_samples(tiny, centernet.Settings())[0]
    wrong = type(sample)(sample.id, sample.path, {**sample.meta, "height": sample.meta["height"] + 1})
    with pytest.raises(UserError, match="annotation says"):
        centernet.preprocess(wrong, centernet.Settings())


def encoded_outputs(dataset: dict, image: dict, settings: centernet.Settings):
    """Network outputs (hm logits, wh, reg on the 128x128 grid) that hold exactly the image's
    ground-truth boxes: a peak at each box centre's cell of its class, wh and reg there."""
    out_w, out_h = settings.output_size
    hm = np.full((80, out_h, out_w), -10.0, dtype=np.float32)
    wh = np.zeros((2, out_h, out_w), dtype=np.float32)
    reg = np.zeros((2, out_h, out_w), dtype=np.float32)
    side = max(image["height"], image["width"])
    for annotation in (a for a in dataset["annotations"] if a["image_id"] == image["id"]):
        x, y, w, h = annotation["bbox"]
        cx = (x + w / 2 - image["width"] / 2) * out_w / side + out_w / 2
        cy = (y + h / 2 - image["height"] / 2) * out_h / side + out_h / 2
        col, row = int(cx), int(cy)
        hm[COCO80_CATEGORY_IDS.index(annotation["category_id"]), row, col] = 10.0
        reg[:, row, col] = cx - col, cy - row
        wh[:, row, col] = w * out_w / side, h * out_h / side
    return [hm, wh, reg]


@pytest.mark.parametrize("decode_batch", [1, 4])
def test_outputs_holding_the_ground_truth_score_ap_one(tiny, decode_batch):
    dataset = annotations(tiny)
    images = {image["id"]: image for image in dataset["images"]}
    settings = centernet.Settings()
    evaluator = centernet.evaluator(tiny, centernet.Settings(decode_batch=decode_batch))
    for sample in centernet.list_samples(tiny, centernet.Settings()):
        outputs = encoded_outputs(dataset, images[sample.meta["image_id"]], settings)
        evaluator.add(sample, [o[np.newaxis] if sample.meta["image_id"] % 2 else o for o in outputs])  # with/without batch axis
    metrics = evaluator.result()
    assert metrics["images"] == 6
    assert metrics["ap"] == pytest.approx(1.0, abs=1e-9) and metrics["ap50"] == pytest.approx(1.0, abs=1e-9)
    assert len(evaluator.results) == 6 * 100  # K = 100 per image, no threshold
    # results.json, serialised image by image as they were evaluated: the same records
    assert json.loads(evaluator.artifacts()["coco_results"]) == evaluator.results


def test_limit_scores_only_the_images_that_ran(tiny):
    dataset = annotations(tiny)
    images = {image["id"]: image for image in dataset["images"]}
    evaluator = centernet.evaluator(tiny, centernet.Settings())
    for sample in centernet.list_samples(tiny, centernet.Settings())[:2]:
        evaluator.add(sample, encoded_outputs(dataset, images[sample.meta["image_id"]], centernet.Settings()))
    metrics = evaluator.result()
    assert metrics["images"] == 2 and metrics["ap"] == pytest.approx(1.0, abs=1e-9)


def test_settings_are_upstreams_and_checked():
    settings = settings_from_params(centernet.Settings, {"K": "50", "mean": [0.1, 0.2, 0.3]})
    assert settings.K == 50 and settings.mean == (0.1, 0.2, 0.3) and settings.output_size == (128, 128)
    assert centernet.Settings() == centernet.Settings(input_h=512, input_w=512, down_ratio=4, K=100, max_per_image=100)
    with pytest.raises(UserError, match="multiples of 32"):
        settings_from_params(centernet.Settings, {"input_h": 500})
    with pytest.raises(UserError, match="DLA-34"):
        settings_from_params(centernet.Settings, {"arch": "hourglass"})
    with pytest.raises(UserError, match="not valid"):
        settings_from_params(centernet.Settings, {"K": "many"})
    with pytest.raises(UserError, match="unknown setting"):
        settings_from_params(centernet.Settings, {"unrelated": 1})


def test_export_refuses_an_opset_without_deformconv(tmp_path):
    ctx = ExportContext(source=tmp_path, weights=None, target="onnxruntime", bs=1, out=tmp_path / "x.onnx", opset=11,
                        input_names=["actual_input"], output_names=["output1", "output2", "output3"],
                        settings=centernet.Settings(onnxruntime_opset=17))
    with pytest.raises(UserError, match="opset 19"):
        centernet.export(ctx)
    with pytest.raises(UserError, match="not a|expected upstream checkout"):
        centernet.export(ExportContext(**{**ctx.__dict__, "settings": centernet.Settings()}))
