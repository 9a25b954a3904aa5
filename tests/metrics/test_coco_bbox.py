"""COCO bbox metric (DESIGN.md section 4, link 4): constructed cases with known answers, and
pycocotools' own numbers on a noisy detector. The ground truth is built here, in COCO format."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from om_pipeline.metrics import coco_bbox


def ground_truth() -> dict:
    """Two images; boxes of three categories, medium and large (no small ones)."""
    boxes = {  # image id -> [(category id, x, y, w, h)]
        1: [(1, 10, 20, 100, 80), (3, 200, 50, 60, 60), (90, 300, 300, 150, 120)],
        2: [(1, 40, 40, 100, 100), (13, 150, 10, 50, 90)],
    }
    annotations = [
        {"id": index + 1, "image_id": image_id, "category_id": category, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
        for index, (image_id, (category, x, y, w, h)) in enumerate((i, box) for i, image_boxes in boxes.items() for box in image_boxes)
    ]
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 480, "width": 640}, {"id": 2, "file_name": "b.jpg", "height": 400, "width": 400}],
        "annotations": annotations,
        "categories": [{"id": i, "name": str(i)} for i in coco_bbox.COCO80_CATEGORY_IDS],
    }


def as_results(gt: dict, score: float = 0.9) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": score, "bbox": list(a["bbox"])}
            for a in gt["annotations"]]


def test_the_80_category_ids():
    ids = coco_bbox.COCO80_CATEGORY_IDS
    assert len(ids) == 80 and ids[0] == 1 and ids[11] == 13 and ids[-1] == 90
    assert set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


def test_a_perfect_detector_scores_one():
    gt = ground_truth()
    stats = coco_bbox.evaluate(gt, as_results(gt))
    assert stats["ap"] == stats["ap50"] == stats["ap75"] == 1.0
    assert stats["ap_small"] == -1.0  # pycocotools: no ground truth in that area range
    assert stats["ar100"] == 1.0


@pytest.mark.parametrize("iou, expected_ap", [(0.62, 0.3), (0.83, 0.7), (0.97, 1.0), (0.4, 0.0)])
def test_shifted_boxes_score_what_the_iou_thresholds_say(iou, expected_ap):
    """Every box moved sideways by w (1 - r) / (1 + r), which leaves IoU r with its ground
    truth: it is a true positive at the thresholds 0.50, 0.55, ..., 0.95 up to r and a miss
    above, so AP@[.5:.95] is the fraction of thresholds <= r (0.62 -> 3 of 10)."""
    gt = ground_truth()
    results = as_results(gt)
    for result in results:
        result["bbox"][0] += result["bbox"][2] * (1 - iou) / (1 + iou)
    stats = coco_bbox.evaluate(gt, results)
    assert stats["ap"] == pytest.approx(expected_ap, abs=1e-12)
    assert stats["ap50"] == (1.0 if iou >= 0.5 else 0.0)
    assert stats["ap75"] == (1.0 if iou >= 0.75 else 0.0)
    assert stats == direct_pycocotools(gt, results)


def direct_pycocotools(gt: dict, results: list[dict], image_ids=None) -> dict[str, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        if image_ids is not None:
            evaluation.params.imgIds = image_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return dict(zip(coco_bbox.STAT_NAMES, map(float, evaluation.stats)))


def noisy_detector(gt: dict, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    results = []
    for a in gt["annotations"]:
        for _ in range(3):
            x, y, w, h = np.array(a["bbox"], float) + rng.normal(0, 8, 4)
            results.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x, y, max(w, 1), max(h, 1)],
                            "score": float(rng.random())})
    for image in gt["images"]:  # false positives
        for _ in range(5):
            results.append({"image_id": image["id"], "category_id": int(rng.choice(coco_bbox.COCO80_CATEGORY_IDS)),
                            "bbox": list(rng.uniform(0, 200, 4) + [0, 0, 5, 5]), "score": float(rng.random())})
    return results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_noisy_detector_scores_what_pycocotools_says(seed):
    gt = ground_truth()
    results = noisy_detector(gt, seed)
    stats = coco_bbox.evaluate(gt, results)
    assert 0 < stats["ap"] < 1
    assert stats == direct_pycocotools(gt, results)


def test_image_ids_limit_the_evaluation_to_the_images_that_ran():
    gt = ground_truth()
    only_first = [r for r in as_results(gt) if r["image_id"] == 1]
    assert coco_bbox.evaluate(gt, only_first, image_ids=[1])["ap"] == pytest.approx(1.0, abs=1e-12)
    everywhere = coco_bbox.evaluate(gt, only_first)
    assert everywhere["ap"] < 1.0 and everywhere == direct_pycocotools(gt, only_first)


def test_no_detection_scores_zero():
    assert coco_bbox.evaluate(ground_truth(), [])["ap"] == 0.0


def test_results_as_upstream_writes_them():
    boxes = np.array([[10.004, 20.005, 110.0, 99.996], [1.5, 2.25, 3.125, 4.0625], [0, 0, 1, 1]], dtype=np.float32)
    scores = np.array([0.123456, 0.995, 0.5], dtype=np.float32)
    labels = np.array([79, 0, 0])
    records = coco_bbox.detections_to_results(7, boxes, scores, labels)
    # Per category in id order, the given order inside a category; ids mapped; x, y, w, h.
    assert [r["category_id"] for r in records] == [1, 1, 90]
    assert records[0] == {"image_id": 7, "category_id": 1, "bbox": [1.5, 2.25, 1.62, 1.81], "score": float(f"{np.float32(0.995):.2f}")}
    assert records[2]["bbox"] == [10.0, 20.0, float(f"{np.float32(110.0) - np.float32(10.004):.2f}"), float(f"{np.float32(99.996) - np.float32(20.005):.2f}")]
    assert records[2]["score"] == 0.12
    for record in records:  # upstream's rounding: float("{:.2f}".format(v)), of the float32 value
        assert all(v == float(f"{v:.2f}") for v in record["bbox"])


def test_rounding_is_the_format_rounding():
    for value in (0.125, 0.135, 2.675, 1.005, 0.285, np.float32(0.995), np.float32(12.345)):
        assert coco_bbox.round2(value) == float("{:.2f}".format(value))


def test_detections_are_checked():
    with pytest.raises(ValueError, match="class index"):
        coco_bbox.detections_to_results(1, np.zeros((1, 4)), np.zeros(1), np.array([80]))
    with pytest.raises(ValueError, match="length"):
        coco_bbox.detections_to_results(1, np.zeros((2, 4)), np.zeros(1), np.array([0]))


def larger_ground_truth(seed: int, images: int = 12) -> dict:
    """Many images, crowd boxes, small/medium/large areas, images without any box."""
    rng = np.random.default_rng(seed)
    annotations = []
    for image_id in range(1, images + 1):
        for _ in range(int(rng.integers(0, 6))):
            w, h = rng.uniform(8, 200, 2)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(rng.choice([1, 3, 13, 90])),
                                "bbox": [*rng.uniform(0, 300, 2), w, h], "area": float(w * h), "iscrowd": int(rng.random() < 0.1)})
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "height": 500, "width": 500} for i in range(1, images + 1)],
            "annotations": annotations, "categories": [{"id": i, "name": str(i)} for i in coco_bbox.COCO80_CATEGORY_IDS]}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_image_evaluation_as_results_arrive_equals_pycocotools_to_the_last_digit(seed):
    gt = larger_ground_truth(seed)
    results = noisy_detector(gt, seed)
    for record in results[::7]:
        record["score"] = 0.5  # ties: the arrival order must decide them as loadRes's order does
    by_image: dict[int, list] = {}
    for record in results:
        by_image.setdefault(record["image_id"], []).append(record)
    run = [1, 2, 3, 5, 6, 8, 9, 10, 11]  # 4, 7 and 12 were not run; one run image gets no detection
    incremental = coco_bbox.PerImageEvaluation(gt, run)
    for image_id in reversed(run):  # any order of images
        if image_id != 9:
            incremental.add(image_id, by_image.get(image_id, []))
    in_order = [r for image_id in reversed(run) if image_id != 9 for r in by_image.get(image_id, [])]
    stats = incremental.finish()
    assert 0 < stats["ap"] < 1
    assert stats == direct_pycocotools(gt, in_order, image_ids=run) == coco_bbox.evaluate(gt, in_order, image_ids=run)
    with pytest.raises(ValueError, match="twice"):
        incremental.add(run[0], [])
    assert coco_bbox.PerImageEvaluation(gt, run).finish() == coco_bbox.evaluate(gt, [], image_ids=run)
    added = coco_bbox.PerImageEvaluation(gt)  # scored: the images added
    for image_id in run:
        added.add(image_id, by_image.get(image_id, []))
    every = [r for image_id in run for r in by_image.get(image_id, [])]
    assert added.images == set(run) and added.finish() == direct_pycocotools(gt, every, image_ids=run)


def evaluated(gt: dict, results: list[dict], iou_type: str = "bbox", max_dets=None, use_cats: int = 1, image_ids=None):
    """pycocotools' COCOeval after evaluate(), before accumulate."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
        evaluation.params.useCats = use_cats
        if max_dets is not None:
            evaluation.params.maxDets = max_dets
        if image_ids is not None:
            evaluation.params.imgIds = image_ids
        evaluation.evaluate()
    return evaluation


def assert_accumulates_as_pycocotools(evaluation) -> None:
    """coco_bbox.accumulate's eval arrays are COCOeval.accumulate's, bit for bit, and so are the
    12 numbers summarize() makes of them."""
    ours = copy.deepcopy(evaluation)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.accumulate()
        coco_bbox.accumulate(ours)
        evaluation.summarize()
        ours.summarize()
    assert ours.eval["counts"] == evaluation.eval["counts"] and ours.params.catIds == evaluation.params.catIds
    for key in ("precision", "recall", "scores"):
        assert ours.eval[key].dtype == evaluation.eval[key].dtype and ours.eval[key].shape == evaluation.eval[key].shape
        assert ours.eval[key].tobytes() == evaluation.eval[key].tobytes(), key
    assert list(ours.stats) == list(evaluation.stats)


@pytest.mark.parametrize("seed, max_dets, use_cats", [(0, None, 1), (1, [1, 3, 4], 1), (2, [2, 5, 100], 0), (3, None, 1)])
def test_accumulate_gives_pycocotools_arrays_to_the_last_bit(seed, max_dets, use_cats):
    gt = larger_ground_truth(seed)
    results = noisy_detector(gt, seed)
    for record in results[::5]:
        record["score"] = 0.25  # ties, which only the stable sort's order decides
    evaluation = evaluated(gt, results, max_dets=max_dets, use_cats=use_cats)
    assert_accumulates_as_pycocotools(evaluation)
    assert (evaluation.eval["precision"] > 0).any()
    assert (evaluation.eval["precision"] == -1).any() == bool(use_cats)  # a category without ground truth: -1


def test_accumulate_refuses_an_evaluation_that_was_not_run():
    evaluation = evaluated(ground_truth(), as_results(ground_truth()))
    evaluation.evalImgs = []
    with pytest.raises(ValueError, match="evaluate"):
        coco_bbox.accumulate(evaluation)


def test_per_image_entries_are_evaluateimgs_own():
    """The entries PerImageEvaluation builds without evaluateImg (an image's category with only
    ground truth or only detections) are evaluateImg's, field by field, dtypes included."""
    gt = larger_ground_truth(4)
    results = noisy_detector(gt, 4)
    for record in results[::4]:
        record["score"] = 0.75
    run = [1, 2, 3, 4, 6, 7, 9, 10, 11, 12]
    incremental = coco_bbox.PerImageEvaluation(gt, run)
    arrived = []
    for image_id in run[::-1]:
        records = [r for r in results if r["image_id"] == image_id] if image_id != 7 else []
        incremental.add(image_id, records)
        arrived += records
    incremental.finish()
    reference = evaluated(gt, arrived, image_ids=run).evalImgs
    ours = incremental._eval.evalImgs
    assert len(ours) == len(reference)
    kinds = set()
    for mine, theirs in zip(ours, reference):
        assert (mine is None) == (theirs is None)
        if theirs is None:
            continue
        kinds.add((bool(theirs["gtIds"]), bool(theirs["dtIds"])))
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            if isinstance(value, np.ndarray):
                assert mine[key].dtype == value.dtype and mine[key].shape == value.shape, key
                assert np.array_equal(mine[key], value), key
            elif key == "image_id":  # evaluate() passes NumPy's ints (np.unique), ours Python's: nothing reads it
                assert mine[key] == value
            else:
                assert mine[key] == value and type(mine[key]) is type(value), key
    assert kinds == {(True, True), (True, False), (False, True)}  # all three paths were compared
