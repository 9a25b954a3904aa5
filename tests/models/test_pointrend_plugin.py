"""PointRend plugin: samples matched by name, the guide's preprocessing (= detectron2's
read_image + pixel-mean subtraction), argmax reduction, and the Cityscapes evaluator on a
generated Cityscapes-format set. No upstream, no network."""
from __future__ import annotations

import numpy as np
import pytest

from om_pipeline.errors import UserError
from om_pipeline.metrics import cityscapes
from om_pipeline.models import pointrend as plugin
from om_pipeline.data.pointrend_synth import synthesize

SIZE = (64, 128)
PARAMS = plugin.Settings(input_size=tuple(SIZE))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("cityscapes"), images=5, size=SIZE, seed=3)


def test_samples_are_sorted_by_city_then_file_and_named_as_cityscapes(dataset):
    samples = plugin.list_samples(dataset, PARAMS)
    ids = [s.id for s in samples]
    assert ids == ["frankfurt_000000_000019", "frankfurt_000001_000033", "frankfurt_000002_000047",
                   "lindau_000000_000026", "lindau_000001_000040"]
    for sample in samples:
        assert sample.path.name == f"{sample.id}_leftImg8bit.png"
        assert sample.meta["label"].endswith(f"gtFine/val/{sample.id.split('_')[0]}/{sample.id}_gtFine_labelIds.png")


def test_missing_ground_truth_and_empty_sets_are_user_errors(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    (copy / "gtFine/val/lindau/lindau_000000_000026_gtFine_labelIds.png").unlink()
    with pytest.raises(UserError, match="1 image.*no ground truth.*lindau_000000_000026"):
        plugin.list_samples(copy, PARAMS)
    (tmp_path / "empty/leftImg8bit/val/x").mkdir(parents=True)
    with pytest.raises(UserError, match="no \\*_leftImg8bit.png"):
        plugin.list_samples(tmp_path / "empty", PARAMS)
    with pytest.raises(UserError, match="no image directory"):
        plugin.list_samples(tmp_path / "nothing", PARAMS)


def detectron2_preprocess(path, mean):
    """What the guide's PointRend_preprocess.py computes, written as detectron2 does it:
    read_image(format="BGR") (PIL, EXIF transpose, RGB -> BGR), as_tensor(transpose(2, 0, 1)),
    (x - pixel_mean) / pixel_std in float32 with std 1."""
    import torch
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    bgr = np.asarray(image)[:, :, ::-1]
    tensor = torch.as_tensor(np.ascontiguousarray(bgr.transpose(2, 0, 1))).float()
    pixel_mean = torch.tensor(mean).view(-1, 1, 1)
    return ((tensor - pixel_mean) / torch.tensor([1.0, 1.0, 1.0]).view(-1, 1, 1)).numpy()


def test_preprocessing_equals_detectron2s_exactly(dataset):
    for sample in plugin.list_samples(dataset, PARAMS):
        (ours,) = plugin.preprocess(sample, PARAMS)
        assert ours.dtype == np.float32 and ours.shape == (3, *SIZE)
        np.testing.assert_array_equal(ours, detectron2_preprocess(sample.path, list(plugin.Settings.mean)))


def test_preprocessing_is_bgr_minus_mean_not_rgb(dataset):
    sample = plugin.list_samples(dataset, PARAMS)[0]
    (ours,) = plugin.preprocess(sample, PARAMS)
    bgr = plugin.read_bgr(sample.path)
    assert ours[0, 5, 7] == np.float32(bgr[5, 7, 0]) - np.float32(103.53)  # blue first
    assert ours[2, 5, 7] == np.float32(bgr[5, 7, 2]) - np.float32(123.675)


def test_an_image_of_another_size_is_a_user_error(dataset):
    sample = plugin.list_samples(dataset, PARAMS)[0]
    with pytest.raises(UserError, match="128x64; the model takes 2048x1024"):
        plugin.preprocess(sample, plugin.Settings())


def test_reduce_outputs_is_the_argmax_as_uint8_first_maximum_on_ties():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(19, 8, 16)).astype(np.float32)
    logits[:, 0, 0] = 1.0  # a tie of all classes: the first, as torch.argmax and np.argmax give
    logits[[4, 9], 0, 1] = 50.0  # a tie of two
    (train_ids,) = plugin.reduce_outputs([logits])
    assert train_ids.dtype == np.uint8 and train_ids.shape == (8, 16)
    np.testing.assert_array_equal(train_ids, np.argmax(logits, axis=0))
    assert train_ids[0, 0] == 0 and train_ids[0, 1] == 4
    import torch

    np.testing.assert_array_equal(train_ids, torch.from_numpy(logits).argmax(dim=0).numpy())
    with pytest.raises(UserError, match="expected 19"):
        plugin.reduce_outputs([logits[:3]])


def ground_truth_logits(label_path):
    """Logits whose argmax is the ground truth's train id (class 0 where it is not evaluated)."""
    truth = cityscapes.train_ids(plugin.read_label_ids(label_path))
    logits = np.zeros((19, *truth.shape), dtype=np.float32)
    classes = np.where(truth == 255, 0, truth)
    np.put_along_axis(logits, classes[None].astype(np.int64), 5.0, axis=0)
    return logits


def test_evaluator_perfect_prediction_is_one_and_keeps_class_iou(dataset):
    evaluator = plugin.evaluator(dataset, PARAMS)
    for sample in plugin.list_samples(dataset, PARAMS):
        evaluator.add(sample, plugin.reduce_outputs([ground_truth_logits(sample.meta["label"])]))
    result = evaluator.result()
    assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0
    assert result["classes_evaluated"] == 10  # the classes the generated set holds
    artifacts = evaluator.artifacts()
    assert artifacts["class_iou"]["road"] == 1.0 and artifacts["class_iou"]["train"] is None
    assert len(artifacts["confusion_matrix"]["rows_ground_truth"]) == 19


def test_evaluator_matches_ground_truth_by_name_not_position(dataset):
    """Swapping two samples' predictions must lower the score: results are tied to their images."""
    samples = plugin.list_samples(dataset, PARAMS)
    right, swapped = plugin.evaluator(dataset, PARAMS), plugin.evaluator(dataset, PARAMS)
    predictions = [plugin.reduce_outputs([ground_truth_logits(s.meta["label"])]) for s in samples]
    for sample, prediction in zip(samples, predictions):
        right.add(sample, prediction)
    for sample, prediction in zip(samples, predictions[1:] + predictions[:1]):
        swapped.add(sample, prediction)
    assert right.result()["miou"] == 1.0 > swapped.result()["miou"]


def test_evaluator_refuses_unreduced_outputs_and_empty_runs(dataset):
    evaluator = plugin.evaluator(dataset, PARAMS)
    sample = plugin.list_samples(dataset, PARAMS)[0]
    with pytest.raises(UserError, match="not a train-id map"):
        evaluator.add(sample, [np.zeros((19, *SIZE), np.float32)])
    with pytest.raises(UserError, match="no image"):
        evaluator.result()
