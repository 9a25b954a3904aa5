"""The TransPose plugin without upstream: person boxes from COCO annotations, the crop and
normalisation, the two views, and the evaluator from heatmaps to keypoint AP (perfect heatmaps
-> AP 1.0). Tiny COCO sets are written by the tests (om_pipeline.data.transpose_synth)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from om_pipeline.errors import UserError
from om_pipeline.metrics import coco_keypoints
from om_pipeline.models import transpose
from om_pipeline.models.transpose_postprocess import affine_transforms, flip_back
from om_pipeline.data.transpose_synth import synthesize
from om_pipeline.plugin import SAMPLE_ID, Sample

# Upstream's normalisation (RGB), quoted: yangsenius/TransPose @ dab9007b6f61c9c8dce04d61669a04922bbcd148,
# tools/test.py:123-125
#   normalize = transforms.Normalize(
#       mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
#   )
UPSTREAM_MEAN = (0.485, 0.456, 0.406)
UPSTREAM_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("coco"), images=5, seed=3)


def coco_json(root) -> dict:
    return json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())


def test_ground_truth_boxes_as_upstream_selects_them(coco):
    samples = transpose.list_samples(coco, transpose.Settings())
    data = coco_json(coco)
    usable = [a for a in data["annotations"] if a["category_id"] == 1 and not a["iscrowd"] and max(a["keypoints"]) > 0]
    assert [s.id for s in samples] == [f"{a['image_id']:012d}_{a['id']}" for a in usable]  # file order; crowd, empty, non-person out
    assert len(samples) == 10 and len(data["annotations"]) == 13
    assert all(SAMPLE_ID.match(s.id) and s.path.is_file() and s.meta["score"] == 1.0 for s in samples)
    assert samples[0].path.name == "000000000139.jpg" and samples[0].meta["image_id"] == 139


def test_boxes_are_clipped_to_the_image_before_centre_and_scale(coco):
    data = coco_json(coco)
    image = data["images"][1]
    border = next(a for a in data["annotations"] if a["image_id"] == image["id"] and a["bbox"][0] == image["width"] - 40.0)
    sample = next(s for s in transpose.list_samples(coco, transpose.Settings()) if s.id.endswith(f"_{border['id']}"))
    clipped = transpose.clean_box(border["bbox"], image["width"], image["height"])
    assert clipped == [image["width"] - 40.0, image["height"] - 50.0, 40.0, 50.0]
    center, scale = transpose.box_to_center_scale(clipped, transpose.Settings())
    assert sample.meta["center"] == center.tolist() and sample.meta["scale"] == scale.tolist()


def test_clean_box_drops_empty_boxes():
    assert transpose.clean_box([-5.0, -3.0, 10.0, 10.0], 100, 100) == [0, 0, 10.0, 10.0]
    assert transpose.clean_box([120.0, 10.0, 10.0, 10.0], 100, 100) is None


def test_center_and_scale_grow_the_box_to_the_input_aspect_and_pad_it():
    settings = transpose.Settings()
    center, scale = transpose.box_to_center_scale([10, 20, 30, 80], settings)  # narrow: width grows to 60
    assert center.dtype == np.float32 and center.tolist() == [24.5, 59.5]
    np.testing.assert_allclose(scale, [60 / 200 * 1.25, 80 / 200 * 1.25], rtol=1e-6)
    _, scale = transpose.box_to_center_scale([0, 0, 120, 80], settings)  # wide: height grows to 160
    np.testing.assert_allclose(scale, [120 / 200 * 1.25, 160 / 200 * 1.25], rtol=1e-6)


def test_detection_boxes_as_an_option(coco):
    detections = [
        {"image_id": 139, "category_id": 1, "bbox": [10.0, 12.0, 50.0, 90.0], "score": 0.93},
        {"image_id": 139, "category_id": 2, "bbox": [1.0, 1.0, 5.0, 5.0], "score": 0.99},  # not a person
        {"image_id": 146, "category_id": 1, "bbox": [30.0, 40.0, 60.0, 60.0], "score": 0.05},
    ]
    (coco / "dets.json").write_text(json.dumps(detections))
    samples = transpose.list_samples(coco, transpose.Settings(boxes="detections", detection_file="dets.json"))
    assert [s.id for s in samples] == ["000000000139_det0", "000000000146_det2"]
    assert [s.meta["score"] for s in samples] == [0.93, 0.05]
    center, scale = transpose.box_to_center_scale(detections[0]["bbox"], transpose.Settings())  # not clipped
    assert samples[0].meta["center"] == center.tolist() and samples[0].meta["scale"] == scale.tolist()
    kept = transpose.list_samples(coco, transpose.Settings(boxes="detections", detection_file=str(coco / "dets.json"), image_threshold=0.1))
    assert [s.id for s in kept] == ["000000000139_det0"]


def test_bad_params_and_layouts_are_user_errors(coco, tmp_path):
    with pytest.raises(UserError, match="params.boxes"):
        transpose.list_samples(coco, transpose.Settings(boxes="yolo"))
    with pytest.raises(UserError, match="blur_kernel"):
        transpose.Settings(blur_kernel=4)
    with pytest.raises(UserError, match="person_keypoints_val2017.json does not exist"):
        transpose.list_samples(tmp_path, transpose.Settings())


def test_preprocess_gives_both_views_of_the_normalised_crop(coco):
    sample = transpose.list_samples(coco, transpose.Settings())[0]
    views = transpose.preprocess(sample, transpose.Settings())
    assert set(views) == {"normal", "flip"}
    (normal,), (flipped,) = views["normal"], views["flip"]
    assert normal.shape == (3, 256, 192) and normal.dtype == np.float32 and normal.flags.c_contiguous
    assert np.array_equal(flipped, normal[:, :, ::-1]) and flipped.flags.c_contiguous


def test_the_crop_puts_the_box_centre_at_the_input_centre_in_rgb(tmp_path):
    """A red square at the box centre of a black PNG lands at ((192-1)/2, (256-1)/2); black and
    the area outside the image become (0 - mean) / std."""
    root = tmp_path / "coco"
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    image[147:154, 197:204] = (0, 0, 255)  # BGR red, centred on (200, 150)
    cv2.imwrite(str(root / "images" / "val2017" / "square.png"), image)
    box = [170.5, 90.5, 60.0, 120.0]  # centre (200, 150), a 60 x 120 box: 0.75 of 80 x 120 -> width grows to 90
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "square.png", "width": 400, "height": 300}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": box, "area": 100.0,
                         "keypoints": [200, 150, 2] + [0] * 48, "num_keypoints": 1}],
        "categories": [{"id": 1, "name": "person"}]}))
    (sample,) = transpose.list_samples(root, transpose.Settings())
    assert sample.meta["center"] == [200.0, 150.0]
    (crop,) = transpose.preprocess(sample, transpose.Settings())["normal"]
    assert transpose.Settings().mean == UPSTREAM_MEAN and transpose.Settings().std == UPSTREAM_STD
    mean, std = np.array(UPSTREAM_MEAN, np.float32), np.array(UPSTREAM_STD, np.float32)
    red = (np.array([1, 0, 0], np.float32) - mean) / std
    black = (0 - mean) / std
    np.testing.assert_allclose(crop[:, 127, 95], red, rtol=1e-6)  # the input's centre pixel
    np.testing.assert_allclose(crop[:, 0, 0], black, rtol=1e-6)
    pixels_per_image_pixel = 191 / (200 * sample.meta["scale"][0] - 1)
    assert pixels_per_image_pixel == pytest.approx(191 / (90 * 1.25 - 1))
    red_columns = np.flatnonzero(np.isclose(crop[0, 127], red[0], atol=1e-3))
    assert red_columns.min() < 95.5 < red_columns.max() and len(red_columns) == pytest.approx(7 * pixels_per_image_pixel, abs=2.5)


def render(sample: Sample, keypoints: np.ndarray) -> np.ndarray:
    """The heatmaps a perfect network would give: a Gaussian (sigma 2, peak 1) at each labelled
    keypoint in heatmap space; a faint one (peak 0.1, under the 0.2 threshold) for the others."""
    matrix = affine_transforms([sample.meta["center"]], [sample.meta["scale"]], (48, 64))[0]
    ys, xs = np.mgrid[0:64, 0:48]
    maps = np.zeros((17, 64, 48), dtype=np.float32)
    for joint, (x, y, visible) in enumerate(keypoints):
        hx, hy = matrix @ [x, y, 1] if visible else (24.0, 32.0)
        maps[joint] = (1.0 if visible else 0.1) * np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / 8)
    return maps


def perfect_outputs(coco, samples) -> dict[str, dict]:
    by_id = {a["id"]: a for a in coco_json(coco)["annotations"]}
    outputs = {}
    for sample in samples:
        maps = render(sample, np.array(by_id[int(sample.id.split("_")[1])]["keypoints"], float).reshape(17, 3))
        outputs[sample.id] = {"normal": [maps], "flip": [flip_back(maps[None])[0]]}  # what a flip-consistent net gives
    return outputs


def test_perfect_heatmaps_give_ap_one_through_flip_dark_and_the_inverse_crop(coco):
    samples = transpose.list_samples(coco, transpose.Settings())
    outputs = perfect_outputs(coco, samples)
    evaluator = transpose.evaluator(coco, transpose.Settings(decode_chunk=4))  # several chunks, one partial
    for sample in samples:
        evaluator.add(sample, outputs[sample.id])
    metrics = evaluator.result()
    assert metrics["ap"] == 1.0 and metrics["ar"] == 1.0
    assert metrics["instances"] == 10 and metrics["images"] == 5
    assert "Average Precision" in evaluator.summary and len(evaluator.detections) == 10


def test_flip_test_averages_the_views_and_can_be_switched_off(coco):
    samples = transpose.list_samples(coco, transpose.Settings())
    outputs = perfect_outputs(coco, samples)
    for views in outputs.values():
        views["flip"] = [np.roll(views["flip"][0], 6, axis=2)]  # a flip view 6 heatmap px off
    results = {}
    for flip_test in (True, False):
        evaluator = transpose.evaluator(coco, transpose.Settings(flip_test=flip_test))
        for sample in samples:
            evaluator.add(sample, outputs[sample.id])
        results[flip_test] = evaluator.result()["ap"]
    assert results[False] == 1.0 and results[True] < 1.0


def test_the_evaluator_needs_both_views(coco):
    sample = transpose.list_samples(coco, transpose.Settings())[0]
    with pytest.raises(UserError, match="views"):
        transpose.evaluator(coco, transpose.Settings()).add(sample, [np.zeros((17, 64, 48), np.float32)])
    with pytest.raises(UserError, match="no samples"):
        transpose.evaluator(coco, transpose.Settings()).result()


def test_images_are_evaluated_as_they_complete_and_a_reopened_image_counts_once(coco):
    """Persons grouped by image (list_samples' order) or not, decoded in any chunks: the numbers of
    one COCOeval over every result (the per-image evaluation runs as images complete)."""
    samples = transpose.list_samples(coco, transpose.Settings())
    outputs = perfect_outputs(coco, samples)
    rng = np.random.default_rng(0)
    for views in outputs.values():
        views["flip"] = [np.roll(views["flip"][0], int(rng.integers(-4, 5)), axis=2)]  # imperfect, so AP < 1
    scrambled = samples[1:] + samples[:1]  # the first image's persons split: its first comes last
    results = {}
    for name, order, chunk in (("grouped", samples, 3), ("scrambled", scrambled, 2)):
        evaluator = transpose.evaluator(coco, transpose.Settings(decode_chunk=chunk))
        for sample in order:
            evaluator.add(sample, outputs[sample.id])
        results[name] = evaluator.result()
        assert len(evaluator.detections) == 10
    assert 0 < results["grouped"]["ap"] < 1 and results["scrambled"] == results["grouped"]
    reference = transpose.evaluator(coco, transpose.Settings())
    for sample in samples:
        reference.add(sample, outputs[sample.id])
    instances = reference.instances()
    settings = transpose.Settings()
    kept, scores = coco_keypoints.select(instances, settings.in_vis_threshold, settings.oks_threshold)
    want, _ = coco_keypoints.evaluate(transpose.annotation_file(coco, transpose.Settings()),
                                      coco_keypoints.results(instances, kept, scores), image_ids=instances.image_ids)
    assert {name: results["grouped"][name] for name in want} == want
