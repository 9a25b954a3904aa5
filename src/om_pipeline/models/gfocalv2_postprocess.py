"""GFocalV2 postprocessing and COCO evaluation, as the Ascend guide's `gfocal_postprocess.py`
and upstream mmdet 2.6 do it, without mmdet.

- `identify_outputs`: the model's outputs by shape and dtype, never by position (the guide's
  scripts read dets and labels from different output indices over its history): either the
  Ascend graph's `dets` (100 x 5 float) + `labels` (100 integers), behind BatchMultiClassNMS,
  or the standard-op graph's pre-NMS `boxes` (K x 4) + `scores` (K x 81: the head has 81 score
  channels, `use_sigmoid=False` in the config; the 81st is no COCO class).
- `multiclass_nms`: mmdet's `multiclass_nms` with mmcv 1.2.4's `batched_nms` / `nms` (CPU
  kernel) for the pre-NMS form, over all 81 score channels (upstream appends a zero background
  column and drops only that): per class, score > 0.05, class-offset NMS at IoU 0.6 (offset 0
  in the IoU, suppression when IoU >= threshold, float32 arithmetic on the offset boxes), sorted
  by score, top 100.
- `to_coco_records`: the guide's step 4-6: all four coordinates divided by the preprocessing
  scale (no clipping: boxes were only clamped to the 800 x 1216 canvas in the graph), every row
  kept (the guide does not filter the Ascend op's padding rows; they score 0), `bbox2result`
  per class (labels outside 0..79, i.e. the 81st channel, dropped), mmdet's `_det2json` records ([x, y, w, h], no
  rounding), category ids in the annotation file's order of the 80 class names.
- `annotated_image_ids`: mmdet's `CocoDataset._filter_imgs` with `test_mode=False`, which the
  guide's postprocess builds: images with at least one annotation of the 80 classes and
  min(width, height) >= 32 (4952 of val2017's 5000). The guide's AP 0.406 is over these;
  upstream's `tools/test.py` (test_mode=True) scores all 5000.
- `evaluate`: pycocotools COCOeval as mmdet's `CocoDataset.evaluate` sets it up: catIds = the
  80 ids, imgIds given, maxDets [100, 300, 1000]. With at most 100 detections per image the AP
  numbers equal the usual maxDets-100 ones; the recall numbers are reported as ar_100/300/1000.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..metrics import coco_bbox
from ..metrics.coco_bbox import COCO80_CATEGORY_IDS, accumulate

# mmdet 2.6 `CocoDataset.CLASSES`: label i is the category named CLASSES[i].
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
NUM_CLASSES = len(COCO_CLASSES)
SCORE_CHANNELS = NUM_CLASSES + 1  # the head's cls_out_channels (use_sigmoid=False)
MIN_IMAGE_SIZE = 32  # CocoDataset._filter_imgs(min_size=32)
MAX_DETS = (100, 300, 1000)  # CocoDataset.evaluate's proposal_nums
STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar_100", "ar_300", "ar_1000", "ar_small", "ar_medium", "ar_large")


# ---------------------------------------------------------------- which outputs are which


@dataclass(frozen=True)
class Detections:
    """Boxes x1, y1, x2, y2 and score per row (float32, network-input pixels) and class labels."""

    dets: np.ndarray  # (M, 5)
    labels: np.ndarray  # (M,) int64
    form: str  # "ascend" (in-graph NMS) or "pre_nms" (NMS done here)


def identify_outputs(outputs: Sequence[np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    """('ascend', {dets, labels}) or ('pre_nms', {boxes, scores}), by shape and dtype.

    dets: float, last axis 5; labels: integer (or integral floats, as TXT output reads back);
    boxes: float, last axis 4; scores: float, last axis 81 (or 80) and as many rows as boxes. A
    leading batch axis of 1 is dropped."""
    arrays = [_drop_batch_axis(np.asarray(o)) for o in outputs]
    if len(arrays) != 2:
        raise ValueError(f"GFocalV2 has two outputs (dets + labels, or boxes + scores); got {len(arrays)}")
    by_role: dict[str, np.ndarray] = {}
    for array in arrays:
        role = _role(array)
        if role is None or role in by_role:
            shapes = [(a.shape, str(a.dtype)) for a in arrays]
            raise ValueError(f"cannot tell GFocalV2's outputs apart by shape and dtype: {shapes}")
        by_role[role] = array
    if set(by_role) == {"dets", "labels"}:
        if len(by_role["dets"]) != by_role["labels"].size:
            raise ValueError(f"dets has {len(by_role['dets'])} rows but labels {by_role['labels'].size} values")
        return "ascend", by_role
    if set(by_role) == {"boxes", "scores"}:
        if len(by_role["boxes"]) != len(by_role["scores"]):
            raise ValueError(f"boxes has {len(by_role['boxes'])} rows but scores {len(by_role['scores'])}")
        return "pre_nms", by_role
    raise ValueError(f"GFocalV2 outputs do not pair up: {sorted(by_role)}")


def _drop_batch_axis(array: np.ndarray) -> np.ndarray:
    return array[0] if array.ndim == 3 and array.shape[0] == 1 else array


def _role(array: np.ndarray) -> str | None:
    integral = np.issubdtype(array.dtype, np.integer)
    if array.ndim == 2 and not integral and array.shape[1] in (5, 4, NUM_CLASSES, SCORE_CHANNELS):
        return {5: "dets", 4: "boxes", NUM_CLASSES: "scores", SCORE_CHANNELS: "scores"}[array.shape[1]]
    if array.ndim == 1 or (array.ndim == 2 and 1 in array.shape):  # (100,), (100, 1) or with a batch axis (1, 100)
        if integral or (array.size and np.all(np.mod(array, 1) == 0)):
            return "labels"
    return None


def detections_from_outputs(outputs: Sequence[np.ndarray], score_thr: float = 0.05, iou_threshold: float = 0.6,
                            max_num: int = 100) -> Detections:
    form, arrays = identify_outputs(outputs)
    if form == "ascend":
        return Detections(arrays["dets"].astype(np.float32), arrays["labels"].reshape(-1).astype(np.int64), form)
    dets, labels = multiclass_nms(arrays["boxes"], arrays["scores"], score_thr, iou_threshold, max_num)
    return Detections(dets, labels, form)


# ---------------------------------------------------------------- NMS with mmdet's semantics


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_thr: float = 0.05, iou_threshold: float = 0.6,
                   max_num: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """mmdet `multiclass_nms(boxes, [scores | 0], score_thr, nms=dict(iou_threshold), max_num)`.

    boxes (K, 4), scores (K, C) without the zero background column (C = 81 for GFocalV2: the
    81st channel competes as class 80). Returns dets (M, 5) float32 (boxes as given, score) in
    descending score order and labels (M,) int64, M <= max_num.

    Candidates are the (box, class) pairs with score > score_thr in row-major order, as
    `masked_select` gives them. mmcv's batched_nms moves each class's boxes apart by
    label * (max coordinate + 1), in float32, and runs one greedy NMS (or, from 10000
    candidates, one per class: the same kept set); the greedy pass visits candidates by
    descending score and drops later ones with IoU >= threshold against a kept one. The first
    `max_num` kept are the result, so the pass stops there. Equal scores are visited in
    candidate order (torch's sort does not promise an order for ties)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32)
    anchor, label = np.nonzero(scores > np.float32(score_thr))
    if anchor.size == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0,), np.int64)
    cand_boxes, cand_scores = boxes[anchor], scores[anchor, label]
    max_coordinate = cand_boxes.max()
    offsets = label.astype(np.float32) * (max_coordinate + np.float32(1))
    shifted = cand_boxes + offsets[:, None]
    order = np.argsort(-cand_scores, kind="stable")
    keep = greedy_nms(shifted[order], np.float32(iou_threshold), max_num if max_num > 0 else len(order))
    kept = order[keep]
    dets = np.concatenate([cand_boxes[kept], cand_scores[kept, None]], axis=1)
    return dets.astype(np.float32), label[kept].astype(np.int64)


def greedy_nms(sorted_boxes: np.ndarray, iou_threshold: np.float32, limit: int) -> np.ndarray:
    """Indices (into `sorted_boxes`, already in visiting order) of the first `limit` boxes that
    mmcv's `nms_cpu` keeps; its float32 arithmetic: area = (x2 - x1) * (y2 - y1),
    inter = max(0, min x2 - max x1) * max(0, min y2 - max y1),
    ovr = inter / ((area_i + area_j) - inter), suppressed when ovr >= threshold."""
    x1, y1, x2, y2 = (np.ascontiguousarray(sorted_boxes[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    count = len(sorted_boxes)
    suppressed = np.zeros(count, dtype=bool)
    kept: list[int] = []
    zero = np.float32(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(count):
            if suppressed[i]:
                continue
            kept.append(i)
            if len(kept) == limit:
                break
            rest = slice(i + 1, count)
            w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
            h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
            inter = w * h
            overlap = inter / ((areas[i] + areas[rest]) - inter)
            suppressed[rest] |= overlap >= iou_threshold  # NaN (0/0, two empty boxes) never suppresses, as in C++
    return np.asarray(kept, dtype=np.int64)


# ---------------------------------------------------------------- geometry and COCO records


def resize_scale(width: int, height: int, input_hw: tuple[int, int]) -> float:
    """The guide's scale = min(net_w / w, net_h / h) (preprocessing and postprocessing alike)."""
    return min(input_hw[1] / width, input_hw[0] / height)


def category_ids(categories: Iterable[dict[str, Any]]) -> list[int]:
    """Label i -> a category id. With all 80 classes in the file, `coco.getCatIds(catNms=CLASSES)`:
    ids of the categories named like the 80 classes, in the annotation file's order (for COCO,
    ascending ids 1..90). A file with a subset of them (a user's mini-COCO) maps by COCO's
    canonical 80 ids, as CenterNet does."""
    categories = list(categories)
    ids = [c["id"] for c in categories if c.get("name") in COCO_CLASSES]
    return ids if len(ids) == NUM_CLASSES else list(COCO80_CATEGORY_IDS)


def evaluated_category_ids(categories: Iterable[dict[str, Any]]) -> list[int]:
    """The categories scored: those of the file that a label maps to."""
    categories = list(categories)
    return coco_bbox.evaluated_category_ids(categories, category_ids(categories))


def to_coco_records(image_id: int, detections: Detections, scale: float, cat_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The guide's steps 4-6 for one image: coordinates / scale, bbox2result, _det2json."""
    dets = detections.dets.astype(np.float32).copy()
    dets[:, :4] = dets[:, :4] / np.float32(scale)
    records = []
    for label in range(len(cat_ids)):
        for row in dets[detections.labels == label]:
            x1, y1, x2, y2 = row[:4].tolist()
            records.append({"image_id": int(image_id), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(row[4]), "category_id": int(cat_ids[label])})
    return records


# ---------------------------------------------------------------- image sets and COCOeval


def annotated_image_ids(dataset: dict[str, Any], min_size: int = MIN_IMAGE_SIZE) -> list[int]:
    """CocoDataset(test_mode=False)._filter_imgs: images (in the file's order) with an
    annotation (crowd ones count) of one of the 80 classes, and both sides >= min_size."""
    cat_ids = set(evaluated_category_ids(dataset["categories"]))
    with_annotation = {a["image_id"] for a in dataset.get("annotations", [])}
    in_category = {a["image_id"] for a in dataset.get("annotations", []) if a["category_id"] in cat_ids}
    keep = with_annotation & in_category
    return [img["id"] for img in dataset["images"] if img["id"] in keep and min(img["width"], img["height"]) >= min_size]


def all_image_ids(dataset: dict[str, Any]) -> list[int]:
    """CocoDataset(test_mode=True), as upstream's tools/test.py: every image of the file."""
    return [img["id"] for img in dataset["images"]]


def evaluate(dataset: dict[str, Any], records: list[dict[str, Any]], image_ids: Sequence[int]) -> dict[str, float]:
    """COCOeval(bbox) with mmdet 2.6's settings over `image_ids`; the 12 summary numbers."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_ids = [int(i) for i in image_ids]
    wanted = set(image_ids)
    records = [r for r in records if r["image_id"] in wanted]  # mmdet only writes results for its img_ids
    if not records or not image_ids:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(json.loads(json.dumps(records)))  # results.bbox.json, read back, as mmdet does
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.params.catIds = evaluated_category_ids(dataset["categories"])
        coco_eval.params.imgIds = image_ids
        coco_eval.params.maxDets = list(MAX_DETS)
        coco_eval.evaluate()
        accumulate(coco_eval)  # COCOeval.accumulate's numbers, faster
        coco_eval.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats)}
