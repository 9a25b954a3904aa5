"""GFocalV2 postprocessing and COCO evaluation (DESIGN.md section 4, links 3 and 4).

- NMS: `multiclass_nms` equals a plain transcription of mmdet 2.6's multiclass_nms over mmcv
  1.2.4's batched_nms (both its single-call and its per-class "split" path) and nms_cpu, on
  random boxes with many overlaps, ties of coordinates, empty boxes and a top-k cut;
- outputs are identified by shape and dtype, in either order and either form;
- COCO records: the guide's rescale, bbox2result (the 81st channel dropped), _det2json;
- COCOeval: equal to pycocotools driven directly with mmdet's settings; known answers;
- the image sets: mmdet's `_filter_imgs` (4952 of 5000 on val2017) on a constructed file.
"""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from om_pipeline.models import gfocalv2_postprocess as post
from om_pipeline.data.gfocalv2_tinycoco import COCO_IDS, coco_categories

F32 = np.float32


# ---------------------------------------------------------------- a plain reference NMS


def nms_cpu_reference(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """mmcv v1.2.4 ops/csrc/pytorch/nms.cpp nms_cpu, loop for loop, in float32 (offset 0)."""
    x1, y1, x2, y2 = (boxes[:, i].astype(F32) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable, like ours, for ties
    select = [True] * len(order)
    for _i in range(len(order)):
        if not select[_i]:
            continue
        i = order[_i]
        for _j in range(_i + 1, len(order)):
            if not select[_j]:
                continue
            j = order[_j]
            w = max(F32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
            h = max(F32(0), min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = F32(w * h)
            with np.errstate(divide="ignore", invalid="ignore"):
                ovr = F32(inter / F32(F32(areas[i] + areas[j]) - inter))
            if ovr >= F32(threshold):
                select[_j] = False
    return [order[k] for k in range(len(order)) if select[k]]


def multiclass_nms_reference(boxes, scores, score_thr, iou_thr, max_num, split_thr=10000):
    """mmdet/core/post_processing/bbox_nms.py multiclass_nms + mmcv ops/nms.py batched_nms."""
    valid = scores > F32(score_thr)
    cand_boxes, cand_scores, labels = [], [], []
    for a in range(scores.shape[0]):  # masked_select order: row-major (box, class)
        for c in range(scores.shape[1]):
            if valid[a, c]:
                cand_boxes.append(boxes[a]), cand_scores.append(scores[a, c]), labels.append(c)
    if not labels:
        return np.zeros((0, 5), F32), np.zeros((0,), np.int64)
    cand_boxes, cand_scores, labels = np.array(cand_boxes, F32), np.array(cand_scores, F32), np.array(labels)
    offsets = labels.astype(F32) * (cand_boxes.max() + F32(1))
    shifted = cand_boxes + offsets[:, None]
    if len(labels) < split_thr:
        keep = nms_cpu_reference(shifted, cand_scores, iou_thr)
    else:
        mask = np.zeros(len(labels), bool)
        for c in np.unique(labels):
            index = np.nonzero(labels == c)[0]
            mask[index[nms_cpu_reference(shifted[index], cand_scores[index], iou_thr)]] = True
        keep = np.nonzero(mask)[0]
        keep = keep[np.argsort(-cand_scores[keep], kind="stable")]
    keep = list(keep)[:max_num]
    dets = np.concatenate([cand_boxes[keep], cand_scores[keep, None]], axis=1)
    return dets, labels[keep]


def random_detections(seed: int, anchors: int = 60, classes: int = 6, size: float = 100.0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (anchors, 2))
    half = rng.uniform(1, size / 4, (anchors, 2))
    boxes = np.concatenate([centres - half, centres + half], axis=1).astype(F32)
    boxes[rng.random(anchors) < 0.1] = boxes[0]  # exact duplicates
    boxes[3, 2:] = boxes[3, :2]  # an empty box
    scores = rng.uniform(0, 0.6, (anchors, classes)).astype(F32)
    scores[rng.random((anchors, classes)) < 0.3] = 0
    return boxes, scores


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("split_thr", [10000, 8])
def test_multiclass_nms_equals_mmdets(seed, split_thr):
    boxes, scores = random_detections(seed)
    max_num = 25 if seed % 2 else 1000
    got_dets, got_labels = post.multiclass_nms(boxes, scores, 0.05, 0.6, max_num)
    want_dets, want_labels = multiclass_nms_reference(boxes, scores, 0.05, 0.6, max_num, split_thr)
    assert np.array_equal(got_labels, want_labels)
    assert np.array_equal(got_dets, want_dets)
    assert got_dets.dtype == np.float32 and got_labels.dtype == np.int64


def test_multiclass_nms_threshold_is_strict_and_classes_do_not_suppress_each_other():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10]], F32)
    scores = np.array([[0.9, 0.05], [0.8, 0.7], [0.06, 0.0]], F32)
    dets, labels = post.multiclass_nms(boxes, scores, 0.05, 0.6, 100)
    # class 0: box 0 keeps, box 1 (IoU 1) and box 2 (IoU 9/11 = 0.82) go; class 1: box 1 stays
    # although class 0's box 0 covers it; score 0.05 is not > 0.05
    assert labels.tolist() == [0, 1] and dets[:, 4].tolist() == pytest.approx([0.9, 0.7])
    assert post.multiclass_nms(boxes, np.zeros_like(scores), 0.05, 0.6, 100)[0].shape == (0, 5)


def test_iou_equal_to_the_threshold_suppresses():
    # IoU of [0, 0, 10, 10] and [0, 0, 10, 6] = 60 / 100 = 0.6 exactly in float32: >= suppresses
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 6]], F32)
    dets, _ = post.multiclass_nms(boxes, np.array([[0.9], [0.8]], F32), 0.05, 0.6, 100)
    assert len(dets) == 1


# ---------------------------------------------------------------- which output is which


def ascend_outputs():
    dets = np.zeros((100, 5), F32)
    dets[:3] = [[1, 2, 30, 40, 0.9], [5, 5, 50, 60, 0.5], [0, 0, 10, 10, 0.2]]
    labels = np.zeros(100, np.int64)
    labels[:3] = [3, 80, 0]
    return dets, labels


def test_outputs_are_identified_by_shape_and_dtype_in_any_order():
    dets, labels = ascend_outputs()
    for outputs in ([dets, labels], [labels, dets], [dets[None], labels[None]], [dets, labels.astype(np.float64)]):
        form, arrays = post.identify_outputs(outputs)
        assert form == "ascend" and np.array_equal(arrays["dets"], dets) and np.array_equal(arrays["labels"].reshape(-1), labels)
    boxes, scores = random_detections(0, classes=81)
    for outputs in ([boxes, scores], [scores, boxes], [boxes[None], scores[None]]):
        form, arrays = post.identify_outputs(outputs)
        assert form == "pre_nms" and arrays["boxes"].shape == (60, 4) and arrays["scores"].shape == (60, 81)


@pytest.mark.parametrize("outputs", [
    [np.zeros((100, 5), F32)],
    [np.zeros((100, 5), F32), np.zeros((100, 5), F32)],
    [np.zeros((100, 5), F32), np.full(100, 0.5)],  # labels must be integral
    [np.zeros((10, 4), F32), np.zeros((12, 81), F32)],
    [np.zeros((100, 7), F32), np.zeros(100, np.int64)],
])
def test_unidentifiable_outputs_are_an_error(outputs):
    with pytest.raises(ValueError):
        post.identify_outputs(outputs)


def test_both_forms_give_the_same_detections():
    boxes, scores = random_detections(4, anchors=80, classes=81)
    dets, labels = post.multiclass_nms(boxes, scores, 0.05, 0.6, 100)
    padded_dets = np.zeros((100, 5), F32)
    padded_dets[:len(dets)] = dets
    padded_labels = np.zeros(100, np.int64)
    padded_labels[:len(labels)] = labels
    from_graph = post.detections_from_outputs([padded_dets, padded_labels])
    from_numpy = post.detections_from_outputs([boxes, scores])
    assert from_graph.form == "ascend" and from_numpy.form == "pre_nms"
    assert np.array_equal(from_graph.dets[:len(dets)], from_numpy.dets)
    assert np.array_equal(from_graph.labels[:len(labels)], from_numpy.labels)


# ---------------------------------------------------------------- records


def test_records_rescale_drop_the_81st_channel_and_go_per_class():
    dets, labels = ascend_outputs()
    scale = post.resize_scale(640, 427, (800, 1216))  # = 800 / 427 (height-capped)
    records = post.to_coco_records(397133, post.Detections(dets, labels, "ascend"), scale, COCO_IDS)
    # label 80 (the head's 81st channel) is no class; the 97 padding rows are label 0, score 0
    assert len(records) == 99
    assert [r["category_id"] for r in records[:2]] == [1, 1] and records[-1]["category_id"] == COCO_IDS[3]
    first_class0 = records[0]
    x1, y1, x2, y2 = (np.array([0, 0, 10, 10], F32) / F32(scale)).tolist()
    assert first_class0["bbox"] == [x1, y1, x2 - x1, y2 - y1] and first_class0["score"] == pytest.approx(0.2)
    assert records[-1]["bbox"][0] == pytest.approx(1 * 427 / 800) and records[-1]["image_id"] == 397133


def test_resize_geometry_examples_from_the_guide():
    from om_pipeline.models.gfocalv2 import resized_size

    # w x h -> new w x h (models.md section 1.5)
    assert resized_size(640, 427, (800, 1216)) == (1199, 800)
    assert resized_size(640, 480, (800, 1216)) == (1066, 800)
    assert resized_size(480, 640, (800, 1216)) == (600, 800)
    assert resized_size(640, 360, (800, 1216)) == (1216, 684)
    assert resized_size(427, 640, (800, 1216)) == (533, 800)


# ---------------------------------------------------------------- image sets


def constructed_dataset() -> dict:
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": w, "height": h}
              for i, (w, h) in {11: (640, 480), 12: (640, 480), 13: (31, 480), 14: (640, 480), 15: (100, 32), 16: (640, 480)}.items()]
    annotations = [
        {"id": 1, "image_id": 11, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 2, "image_id": 13, "category_id": 3, "bbox": [1, 1, 20, 20], "area": 400, "iscrowd": 0},  # side 31 < 32
        {"id": 3, "image_id": 14, "category_id": 18, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 1},  # crowd counts
        {"id": 4, "image_id": 15, "category_id": 90, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0},  # side 32 is enough
        {"id": 5, "image_id": 16, "category_id": 200, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0},  # not one of the 80
    ]
    categories = coco_categories() + [{"id": 200, "name": "not a coco class", "supercategory": "none"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_annotated_images_are_mmdets_filter():
    dataset = constructed_dataset()
    assert post.annotated_image_ids(dataset) == [11, 14, 15]  # 12: none, 13: too small, 16: other category
    assert post.all_image_ids(dataset) == [11, 12, 13, 14, 15, 16]
    assert post.category_ids(dataset["categories"]) == list(COCO_IDS)


# ---------------------------------------------------------------- COCOeval


def pycocotools_directly(dataset, records, image_ids):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(dataset))
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(json.loads(json.dumps(records))), "bbox")
        evaluation.params.catIds = list(COCO_IDS)
        evaluation.params.imgIds = list(image_ids)
        evaluation.params.maxDets = [100, 300, 1000]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def test_evaluate_equals_pycocotools_and_perfect_detections_score_one():
    dataset = constructed_dataset()
    perfect = [{"image_id": 11, "category_id": 1, "bbox": [10.0, 10.0, 50.0, 50.0], "score": 0.9},
               {"image_id": 15, "category_id": 90, "bbox": [5.0, 5.0, 10.0, 10.0], "score": 0.8}]
    annotated = post.annotated_image_ids(dataset)
    metrics = post.evaluate(dataset, perfect, annotated)
    assert metrics["ap"] == pytest.approx(1.0) and metrics["ap50"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noisy = [{"image_id": int(i), "category_id": int(c), "score": float(s),
              "bbox": [float(v) for v in rng.uniform(0, 60, 2)] + [float(v) for v in rng.uniform(5, 60, 2)]}
             for i, c, s in zip(rng.choice([11, 12, 14, 15, 16], 40), rng.choice([1, 3, 18, 90], 40), rng.random(40))]
    records = perfect + noisy
    for image_ids in (annotated, post.all_image_ids(dataset)):
        got = post.evaluate(dataset, records, image_ids)
        want = pycocotools_directly(dataset, [r for r in records if r["image_id"] in image_ids], image_ids)
        assert list(got.values()) == pytest.approx(list(want), abs=0)
    # images without ground truth only add false positives: the standard way scores lower
    assert post.evaluate(dataset, records, post.all_image_ids(dataset))["ap"] < post.evaluate(dataset, records, annotated)["ap"]


def test_evaluate_without_detections_is_zero():
    assert post.evaluate(constructed_dataset(), [], [11])["ap"] == 0.0


def test_per_image_evaluation_as_images_arrive_equals_evaluate_for_both_image_sets():
    """The evaluator scores each image as it arrives (coco_bbox.PerImageEvaluation with mmdet's
    categories and maxDets); at the end both image sets are only accumulated: the same numbers."""
    from om_pipeline.metrics import coco_bbox

    dataset = constructed_dataset()
    rng = np.random.default_rng(3)
    by_image = {int(i): [] for i in (15, 11, 14, 12)}  # arrival order, one image (16) never run
    for i, c, s in zip(rng.choice(list(by_image), 60), rng.choice([1, 3, 18, 90], 60), rng.random(60).round(2)):
        by_image[int(i)].append({"image_id": int(i), "category_id": int(c), "score": float(s),
                                 "bbox": [float(v) for v in rng.uniform(0, 60, 2)] + [float(v) for v in rng.uniform(5, 60, 2)]})
    incremental = coco_bbox.PerImageEvaluation(dataset, cat_ids=post.evaluated_category_ids(dataset["categories"]), max_dets=post.MAX_DETS)
    for image_id, records in by_image.items():
        incremental.add(image_id, records)
    arrived = [r for records in by_image.values() for r in records]
    for image_ids in ([i for i in post.annotated_image_ids(dataset) if i in by_image], [i for i in post.all_image_ids(dataset) if i in by_image]):
        assert incremental.finish(image_ids, names=post.STAT_NAMES) == post.evaluate(dataset, arrived, image_ids)
