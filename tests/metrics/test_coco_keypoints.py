"""COCO keypoint AP (om_pipeline.metrics.coco_keypoints) on constructed cases: rescoring, OKS,
OKS-NMS, and the AP pycocotools itself gives (perfect keypoints -> 1.0)."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from om_pipeline.errors import UserError
from om_pipeline.metrics import coco_keypoints as ck
from om_pipeline.data.transpose_synth import synthesize

# The 17 COCO keypoint OKS sigmas, quoted: yangsenius/TransPose @ dab9007b6f61c9c8dce04d61669a04922bbcd148,
# lib/nms/nms.py:77 (oks_iou, used by upstream's oks_nms)
#   sigmas = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
UPSTREAM_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    root = synthesize(tmp_path_factory.mktemp("coco"), images=4, seed=11)
    path = root / "annotations" / "person_keypoints_val2017.json"
    return path, json.loads(path.read_text())


def people(coco: dict) -> list[dict]:
    return [a for a in coco["annotations"] if not a["iscrowd"] and a["category_id"] == 1 and a["num_keypoints"] > 0]


def perfect(coco: dict, score: float = 1.0) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": 1, "keypoints": [float(v) for v in a["keypoints"]], "score": score}
            for a in people(coco)]


def pycocotools_stats(path, detections, image_ids=None) -> list[float]:
    """The reference: pycocotools' own COCOeval, called directly."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        evaluation = COCOeval(gt, gt.loadRes(copy.deepcopy(detections)), "keypoints")
        if image_ids is not None:
            evaluation.params.imgIds = image_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return list(evaluation.stats)


def test_perfect_keypoints_score_one(coco_set):
    path, coco = coco_set
    metrics, summary = ck.evaluate(path, perfect(coco))
    assert list(metrics) == list(ck.STAT_NAMES)
    assert metrics["ap"] == 1.0 and metrics["ar"] == 1.0 and metrics["ap50"] == 1.0
    assert "Average Precision" in summary


def test_ap_equals_pycocotools_on_degraded_predictions(coco_set):
    path, coco = coco_set
    rng = np.random.default_rng(0)
    detections = perfect(coco)
    for index, detection in enumerate(detections):
        points = np.array(detection["keypoints"]).reshape(17, 3)
        points[:, :2] += rng.normal(0, 2 + 3 * index, (17, 2))  # worse and worse
        detection["keypoints"] = points.ravel().tolist()
        detection["score"] = float(rng.random())
    detections = detections[1:]  # one person missed
    metrics, _ = ck.evaluate(path, detections)
    assert list(metrics.values()) == pycocotools_stats(path, detections)
    assert 0 < metrics["ap"] < 1


def test_image_ids_restrict_the_evaluation(coco_set):
    path, coco = coco_set
    first_image = coco["images"][0]["id"]
    only_first = [d for d in perfect(coco) if d["image_id"] == first_image]
    assert ck.evaluate(path, only_first)[0]["ap"] < 1.0  # the other images' people count as missed
    assert ck.evaluate(path, only_first, image_ids=[first_image])[0]["ap"] == pytest.approx(1.0)
    assert list(ck.evaluate(path, only_first, image_ids=[first_image])[0].values()) == pycocotools_stats(path, only_first, [first_image])


def test_no_detections_is_a_clear_error(coco_set):
    with pytest.raises(UserError, match="no keypoint detections"):
        ck.evaluate(coco_set[0], [])


def test_rescoring_averages_confidences_above_the_threshold_times_the_box_score():
    confidences = np.array([[0.9, 0.5, 0.1] + [0.0] * 14, [0.1] * 17, [0.3] * 17], dtype=np.float32)
    scores = ck.rescore(confidences, np.array([1.0, 1.0, 0.5]), 0.2)
    np.testing.assert_allclose(scores, [0.7, 0.0, 0.15], rtol=1e-6)
    assert scores.dtype == np.float64


def test_oks_sigmas_are_upstreams_and_pycocotools():
    from pycocotools.cocoeval import Params

    np.testing.assert_array_equal(ck.SIGMAS, UPSTREAM_SIGMAS)
    np.testing.assert_array_equal(ck.SIGMAS, Params(iouType="keypoints").kpt_oks_sigmas)  # what COCOeval scores with


def test_oks_is_one_for_identical_keypoints_and_falls_with_distance():
    reference = np.array([[100.0, 100.0, 1.0]] * 17).ravel()
    others = np.stack([reference, reference + np.tile([5.0, 0, 0], 17), reference + np.tile([50.0, 0, 0], 17)])
    values = ck.oks(reference, others, 4000.0, np.full(3, 4000.0))
    assert values[0] == pytest.approx(1.0) and 1 > values[1] > values[2] > 0
    # by hand for one joint kind: exp(-d^2 / (2 s^2 (2 sigma)^2)) with s^2 = the mean area
    expected = np.mean(np.exp(-25 / ((UPSTREAM_SIGMAS * 2) ** 2) / (4000 + np.spacing(1)) / 2))
    assert values[1] == pytest.approx(expected)


def test_oks_nms_keeps_the_best_of_overlapping_people_and_all_separate_ones():
    base = np.stack([np.linspace(100, 200, 17), np.linspace(50, 300, 17), np.ones(17)], axis=1)
    keypoints = np.stack([base, base + [1.0, 0.5, 0], base + [400.0, 0, 0], base + [3.0, 0, 0]])
    scores = np.array([0.5, 0.9, 0.7, 0.4])
    areas = np.full(4, 20000.0)
    assert ck.oks_nms(keypoints, scores, areas, 0.9) == [1, 2]  # 0 and 3 sit on 1
    assert ck.oks_nms(keypoints, scores, areas, 1.0) == [1, 2, 0, 3]  # OKS <= 1 always: nothing dropped
    assert ck.oks_nms(keypoints[:0], scores[:0], areas[:0], 0.9) == []


def test_select_runs_nms_per_image_only():
    base = np.stack([np.linspace(100, 200, 17), np.linspace(50, 300, 17), np.full(17, 0.9)], axis=1).astype(np.float32)
    instances = ck.Instances(
        image_ids=np.array([1, 1, 2]), keypoints=np.stack([base, base, base]), box_scores=np.array([1.0, 0.5, 1.0]),
        areas=np.full(3, 20000.0), centers=np.zeros((3, 2)), scales=np.ones((3, 2)))
    kept, scores = ck.select(instances, 0.2, 0.9)
    assert kept.tolist() == [0, 2]  # the duplicate in image 1 goes; image 2's twin stays
    np.testing.assert_allclose(scores, [0.9, 0.9], rtol=1e-6)
    results = ck.results(instances, kept, scores)
    assert [r["image_id"] for r in results] == [1, 2] and len(results[0]["keypoints"]) == 51
    assert results[0]["category_id"] == 1 and set(results[0]) >= {"score", "center", "scale"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_per_image_keypoint_evaluation_equals_pycocotools_to_the_last_digit(tmp_path, seed):
    """coco_bbox.PerImageEvaluation(iou_type="keypoints"): each image's results evaluated as
    they arrive, any order of images, one image reopened (discarded and added again with more),
    equal to one COCOeval over all results; score ties included (rounded scores)."""
    from om_pipeline.metrics.coco_bbox import PerImageEvaluation

    root = synthesize(tmp_path / "coco", images=8, seed=seed)
    path = root / "annotations" / "person_keypoints_val2017.json"
    coco = json.loads(path.read_text())
    rng = np.random.default_rng(seed)
    detections = perfect(coco)
    for detection in detections + detections[:3]:  # three people found twice: duplicates to rank
        points = np.array(detection["keypoints"], dtype=np.float64).reshape(17, 3)
        points[:, :2] += rng.normal(0, 6, (17, 2))
        detection["keypoints"] = points.ravel().tolist()
        detection["score"] = round(float(rng.random()), 1)  # ties
    detections += [dict(d, score=0.5) for d in detections[:3]]
    by_image: dict[int, list[dict]] = {}
    for detection in detections:
        by_image.setdefault(detection["image_id"], []).append(detection)
    run = sorted(image["id"] for image in coco["images"])
    incremental = PerImageEvaluation(ck.load_ground_truth(path), iou_type="keypoints")
    order = list(reversed(run))
    reopened = order[1]
    incremental.add(reopened, by_image.get(reopened, [])[:1])
    incremental.discard(reopened)
    for image_id in order:
        incremental.add(image_id, by_image.get(image_id, []))
    stats = incremental.finish(run, names=ck.STAT_NAMES)
    in_order = [d for image_id in order for d in by_image.get(image_id, [])]
    assert 0 < stats["ap"] < 1
    assert list(stats.values()) == pycocotools_stats(path, in_order, run)
    assert stats == ck.evaluate(path, in_order, image_ids=run)[0]
    assert "Average Precision" in incremental.summary


def test_accumulate_gives_pycocotools_arrays_for_keypoints(coco_set):
    from tests.metrics.test_coco_bbox import assert_accumulates_as_pycocotools, evaluated

    path, coco = coco_set
    rng = np.random.default_rng(3)
    detections = perfect(coco)
    for detection in detections:
        points = np.array(detection["keypoints"]).reshape(17, 3)
        points[:, :2] += rng.normal(0, 6, (17, 2))
        detection["keypoints"] = points.ravel().tolist()
        detection["score"] = float(rng.choice([0.3, 0.6, rng.random()]))  # some ties
    assert_accumulates_as_pycocotools(evaluated(coco, detections + detections[:2], iou_type="keypoints"))


def test_instances_fields_are_the_dataclass_fields():
    import dataclasses

    assert ck.Instances.FIELDS == tuple(field.name for field in dataclasses.fields(ck.Instances))
