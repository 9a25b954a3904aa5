"""COCO bounding-box detection metrics: results in COCO's format, scored by pycocotools.

`detections_to_results` writes what xingyizhou/CenterNet's `COCO.convert_eval_format`
(src/lib/datasets/dataset/coco.py) writes: one record per box, the class index mapped to one of
COCO's 80 category ids, bbox as [x, y, width, height], every bbox value and the score rounded
to two decimals the way `float("{:.2f}".format(v))` rounds (the exact decimal value of the float,
not NumPy's scaled rounding). The rounding matters: pycocotools sorts detections by score with
a stable sort, so rounded scores tie and the record order decides; records come per image, per
category in id order, and within a category in the order given (the detector's, by score).

`evaluate` is pycocotools' COCOeval(gt, dt, "bbox"): evaluate, accumulate, summarize, with its
printing captured. `image_ids` limits the evaluation to the images that were run (pycocotools
otherwise scores every image of the annotation file, counting images without detections as
misses); with the full dataset both are the same.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import UserError

# The 80 COCO category ids in the order of the 80 detector classes (CenterNet's `_valid_ids`,
# the same order as every COCO-trained detector uses): 1..90 without 12, 26, 29, 30, 45, 66,
# 68, 69, 71, 83 (ids of the 2014 paper's 91 classes that have no annotations).
COCO80_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83})



def evaluated_category_ids(categories: Iterable[dict[str, Any]], label_ids: Sequence[int] = COCO80_CATEGORY_IDS) -> list[int]:
    """The annotation file's categories that a class index maps to (`label_ids`), in the file's
    order: all 80 for COCO, fewer for a user's mini-COCO, which is scored on those it has.
    None at all is a user error: the file is not COCO-format detection ground truth."""
    wanted = set(label_ids)
    ids = [int(c["id"]) for c in categories if c.get("id") in wanted]
    if not ids:
        raise UserError("the annotation file has none of COCO's 80 detection categories (by id)",
                        hint="give a COCO-format file whose categories use COCO's ids (1..90)")
    return ids


# COCOeval.summarize()'s 12 numbers, in its order, with the names we report them under.
STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def round2(value: float) -> float:
    """`float("{:.2f}".format(value))`, as upstream rounds boxes and scores."""
    return float(f"{value:.2f}")


def detections_to_results(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                          category_ids: Sequence[int] = COCO80_CATEGORY_IDS) -> list[dict[str, Any]]:
    """One image's detections -> COCO result records.

    boxes: (K, 4) x1, y1, x2, y2 in image pixels; scores: (K,); labels: (K,) class indices
    0..len(category_ids)-1. Width and height are computed in the boxes' own dtype (float32 for
    CenterNet, as upstream subtracts in its float32 arrays) before rounding."""
    boxes = np.asarray(boxes)
    labels = np.asarray(labels).astype(np.int64)
    if len(boxes) != len(scores) or len(boxes) != len(labels):
        raise ValueError(f"boxes, scores and labels differ in length: {len(boxes)}, {len(scores)}, {len(labels)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(category_ids)):
        raise ValueError(f"class index outside 0..{len(category_ids) - 1}: {labels.min()}..{labels.max()}")
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    order = np.argsort(labels, kind="stable")  # per category in id order, detector order inside
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[labels[i]]),
            "bbox": [round2(boxes[i, 0]), round2(boxes[i, 1]), round2(widths[i]), round2(heights[i])],
            "score": round2(scores[i]),
        }
        for i in order
    ]


def load_ground_truth(source: "str | Path | dict | Any"):
    """A pycocotools COCO from an annotation file, an already-parsed dict, or a COCO as is."""
    from pycocotools.coco import COCO

    if isinstance(source, COCO):
        return source
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(source, dict):
            coco = COCO()
            coco.dataset = source
            coco.createIndex()
            return coco
        return COCO(str(source))


def evaluate(ground_truth, results: list[dict[str, Any]], image_ids: Iterable[int] | None = None) -> dict[str, float]:
    """COCOeval bbox over `results` (COCO result records). Returns the 12 summary numbers as
    fractions (pycocotools' -1, "no ground truth in this area range", is kept as -1)."""
    from pycocotools.cocoeval import COCOeval

    gt = load_ground_truth(ground_truth)
    if not results:
        # pycocotools cannot load an empty result list; no detection scores 0 wherever there is
        # something to detect.
        return {name: 0.0 for name in STAT_NAMES}
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        dt = gt.loadRes(_json_roundtrip(results))
        coco_eval = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = sorted({int(i) for i in image_ids})
        coco_eval.evaluate()
        accumulate(coco_eval)
        coco_eval.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats)}


def _json_roundtrip(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What upstream evaluates is its results.json read back; a round trip through JSON gives
    pycocotools the same Python floats and leaves the caller's records untouched (loadRes adds
    keys to the records it is given)."""
    return json.loads(json.dumps(results))


def accumulate(coco_eval) -> None:
    """COCOeval.accumulate() over its evalImgs, the same `eval` arrays to the last bit, in a
    fraction of its time: pycocotools slices and concatenates every image's entry once per
    (category, area, maxDets) and takes the running maximum of precision in a Python loop over
    every detection (14 s of a stream's tail at 2000 CenterNet images, 205k detections). Here
    each (category, area)'s entries are concatenated once, a maxDets is a mask on each detection's
    rank in its image (an image's entries are sorted by score, so the first maxDets of each image
    are those ranked below it, in the same order), and the loops are NumPy's: the same float
    operations on the same values, the running maximum and the recall thresholds' lookup exact.
    For the evaluation evaluate() prepared (params = the evaluated params), as both callers have."""
    p = coco_eval.params
    if not coco_eval.evalImgs:
        raise ValueError("accumulate needs evaluate()'s per-image entries first")
    if not p.useCats:
        p.catIds = [-1]  # as COCOeval.accumulate leaves them
    categories = len(p.catIds)
    shape = (len(p.iouThrs), len(p.recThrs), categories, len(p.areaRng), len(p.maxDets))
    precision, scores = -np.ones(shape), -np.ones(shape)
    recall = -np.ones(shape[:1] + shape[2:])
    images, areas = len(p.imgIds), len(p.areaRng)
    for k in range(categories):
        for a in range(areas):
            first = (k * areas + a) * images
            entries = [e for e in coco_eval.evalImgs[first:first + images] if e is not None]
            if not entries:
                continue
            not_ignored = np.count_nonzero(np.concatenate([e["gtIgnore"] for e in entries]) == 0)
            if not_ignored == 0:
                continue
            counts = np.array([len(e["dtScores"]) for e in entries])
            det_scores = np.concatenate([e["dtScores"] for e in entries]).astype(float, copy=False)
            matched = np.concatenate([e["dtMatches"] for e in entries], axis=1)
            ignored = np.concatenate([e["dtIgnore"] for e in entries], axis=1)
            rank = np.arange(len(det_scores)) - np.repeat(np.cumsum(counts) - counts, counts)
            for m, max_dets in enumerate(p.maxDets):
                keep = rank < max_dets
                curves = _precision_at_recalls(det_scores[keep], matched[:, keep], ignored[:, keep], not_ignored, p.recThrs)
                precision[:, :, k, a, m], scores[:, :, k, a, m], recall[:, k, a, m] = curves
    coco_eval.eval = {"params": p, "counts": list(shape), "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
                      "precision": precision, "recall": recall, "scores": scores}


def _precision_at_recalls(det_scores, matched, ignored, not_ignored: int, recall_thresholds):
    """One (category, area, maxDets) of accumulate: precision and score at each recall
    threshold, and the final recall, per IoU threshold (rows of matched/ignored)."""
    order = np.argsort(-det_scores, kind="mergesort")  # pycocotools' stable sort, for its ties
    sorted_scores = det_scores[order]
    matched, ignored = matched[:, order], ignored[:, order]
    tp_sum = np.cumsum(np.logical_and(matched, np.logical_not(ignored)), axis=1).astype(dtype=float)
    fp_sum = np.cumsum(np.logical_and(np.logical_not(matched), np.logical_not(ignored)), axis=1).astype(dtype=float)
    detections = tp_sum.shape[1]
    rc = tp_sum / not_ignored
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # pycocotools' backward loop
    precision = np.zeros((len(rc), len(recall_thresholds)))
    scores = np.zeros_like(precision)
    for t in range(len(rc)):
        at = np.searchsorted(rc[t], recall_thresholds, side="left")
        found = at < detections  # past the last detection: pycocotools' IndexError leaves 0
        precision[t, found] = pr[t, at[found]]
        scores[t, found] = sorted_scores[at[found]]
    final_recall = rc[:, -1] if detections else np.zeros(len(rc))
    return precision, scores, final_recall


class PerImageEvaluation:
    """pycocotools' bbox (or keypoint: `iou_type`) evaluation with its per-image part done as each image's results arrive
    (`add`), so that after the last image only `accumulate` and `summarize` are left (`finish`):
    a stream's metric tail no longer grows with the dataset. It drives COCOeval's own
    computeIoU / evaluateImg / accumulate / summarize on the same inputs evaluate() would give
    them, so the 12 numbers equal `evaluate`'s to the last digit (tests/metrics/test_coco_bbox.py):
    - detections become what loadRes makes of them (a JSON round trip; bbox: area = w x h,
      iscrowd 0; keypoints: bbox and area from the keypoints' extent; ids numbered in arrival
      order), kept in arrival order, which evaluateImg's stable sort by score relies on for ties;
    - evalImgs are assembled in evaluate()'s order (category, area range, image) over the
      images evaluated (np.unique of `image_ids`, as evaluate() sorts them); an image that had
      no detection is evaluated at the end like evaluate() does, with no detection.
    `add` takes every result record of one image at once, the images in any order; the images
    scored are `image_ids` (default: those added), fixed when `finish` is called."""

    def __init__(self, ground_truth, image_ids: Iterable[int] | None = None, cat_ids: Sequence[int] | None = None,
                 max_dets: Sequence[int] | None = None, iou_type: str = "bbox"):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        gt = load_ground_truth(ground_truth)
        empty = COCO()
        empty.dataset = {"images": gt.dataset.get("images", []), "categories": gt.dataset.get("categories", []), "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            empty.createIndex()
            self._eval = COCOeval(gt, empty, iou_type)
        params = self._eval.params
        self._image_ids = None if image_ids is None else list(np.unique([int(i) for i in image_ids]))
        params.imgIds = list(np.unique(gt.getImgIds())) if self._image_ids is None else self._image_ids  # whose ground truth to index
        params.catIds = list(np.unique(params.catIds if cat_ids is None else list(cat_ids)))
        params.maxDets = sorted(params.maxDets if max_dets is None else list(max_dets))
        self._eval._prepare()  # the ground truth per (image, category), ignore flags set, no detection
        self._per_image: dict[int, list] = {}
        self._detections = 0
        self._with_detections: set[int] = set()

    def add(self, image_id: int, records: list[dict[str, Any]]) -> None:
        self.add_json(image_id, json.dumps(records))  # what loadRes gets: the records read back

    def add_json(self, image_id: int, text: str) -> None:
        """`add` for an image's records already serialised as a JSON list (an evaluator that
        writes them to its results file anyway): parsed, not serialised a second time."""
        image_id = int(image_id)
        if image_id in self._per_image:
            raise ValueError(f"image {image_id} was added twice")
        records = json.loads(text)
        for record in records:
            self._detections += 1
            record.update(_as_loaded(record, self._eval.params.iouType), id=self._detections)
            self._eval._dts[image_id, record["category_id"]].append(record)
        if records:
            self._with_detections.add(image_id)
        self._per_image[image_id] = self._evaluate_image(image_id)

    def _evaluate_image(self, image_id: int) -> list:
        """evaluateImg's entries of one image, by (category, area range); its detections freed.
        A category with ground truth and detections goes through evaluateImg; one with only
        either has nothing to match, and its entries are built directly (`unmatched_entries`,
        the same values and types): a detector's 100 boxes a image spread over many categories
        the image does not have, and evaluateImg's per-call overhead on those was most of the
        stream's per-image host cost (12 ms of CenterNet's ~25)."""
        p = self._eval.params
        overlap = self._eval.computeOks if p.iouType == "keypoints" else self._eval.computeIoU  # as evaluate() picks
        entries = []
        for cat in p.catIds:
            gts, dts = self._eval._gts[image_id, cat], self._eval._dts.pop((image_id, cat), [])
            if gts and dts:
                self._eval._dts[image_id, cat] = dts
                self._eval.ious = {(image_id, cat): overlap(image_id, cat)}
                entries += [self._eval.evaluateImg(image_id, cat, area, p.maxDets[-1]) for area in p.areaRng]
                del self._eval._dts[image_id, cat]
            elif gts or dts:
                entries += unmatched_entries(image_id, cat, gts, dts, p)
            else:
                entries += [None] * len(p.areaRng)
        return entries

    @property
    def images(self) -> set[int]:
        return set(self._per_image)

    def finish(self, image_ids: Iterable[int] | None = None, names: Sequence[str] = STAT_NAMES) -> dict[str, float]:
        """accumulate and summarize over the images scored (`image_ids` here, else the
        constructor's, else those added): the 12 numbers under `names`. May be called again."""
        p = self._eval.params
        if image_ids is not None:
            p.imgIds = list(np.unique([int(i) for i in image_ids]))
        else:
            p.imgIds = self._image_ids if self._image_ids is not None else list(np.unique(sorted(self._per_image)))
        if not self._with_detections & {int(i) for i in p.imgIds}:
            return {name: 0.0 for name in names}  # as `evaluate` with no result at all
        for image_id in p.imgIds:
            if int(image_id) not in self._per_image:
                self._per_image[int(image_id)] = self._evaluate_image(int(image_id))
        areas = len(p.areaRng)
        self._eval.evalImgs = [self._per_image[int(image_id)][c * areas + a]
                               for c in range(len(p.catIds)) for a in range(areas) for image_id in p.imgIds]
        self._eval._paramsEval = copy.deepcopy(p)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            accumulate(self._eval)
            self._eval.summarize()
        self.summary = printed.getvalue()  # COCOeval's table
        return {name: float(value) for name, value in zip(names, self._eval.stats)}

    def discard(self, image_id: int) -> None:
        """Forget an image's results (to add it again with more)."""
        image_id = int(image_id)
        self._per_image.pop(image_id, None)
        self._with_detections.discard(image_id)


def unmatched_entries(image_id: int, cat: int, gts: list[dict], dts: list[dict], p) -> list[dict]:
    """COCOeval.evaluateImg(image_id, cat, area, p.maxDets[-1]) for each of p.areaRng, for an
    (image, category) with ground truth or detections but not both (its IoUs are empty, so
    evaluateImg matches nothing): ground truth sorted ignored-last, detections by score (the
    same stable sorts), nothing matched, a detection ignored when its area is outside the range.
    Equal to evaluateImg's entries, dtypes included (tests/metrics/test_coco_bbox.py)."""
    iou_thresholds, max_dets = len(p.iouThrs), p.maxDets[-1]
    if len(dts) > 1:
        dts = [dts[i] for i in np.argsort(np.array([-d["score"] for d in dts]), kind="mergesort")[0:max_dets]]
    det_areas = np.array([d["area"] for d in dts], dtype=float)
    entries = []
    for area in p.areaRng:
        if gts:
            ignored = np.array([1 if g["ignore"] or (g["area"] < area[0] or g["area"] > area[1]) else 0 for g in gts])
            in_order = np.argsort(ignored, kind="mergesort")
            gt_ids, gt_ignore = [gts[i]["id"] for i in in_order], ignored[in_order]
        else:
            gt_ids, gt_ignore = [], np.array([])  # evaluateImg's np.array of an empty list: float64
        outside = ((det_areas < area[0]) | (det_areas > area[1])).reshape((1, len(dts)))
        entries.append({
            "image_id": image_id, "category_id": cat, "aRng": area, "maxDet": max_dets,
            "dtIds": [d["id"] for d in dts], "gtIds": gt_ids,
            "dtMatches": np.zeros((iou_thresholds, len(dts))), "gtMatches": np.zeros((iou_thresholds, len(gts))),
            "dtScores": [d["score"] for d in dts], "gtIgnore": gt_ignore,
            "dtIgnore": np.repeat(outside, iou_thresholds, 0),
        })
    return entries


def _as_loaded(record: dict[str, Any], iou_type: str) -> dict[str, Any]:
    """The fields COCO.loadRes adds to a result of this type (besides its id)."""
    if iou_type == "keypoints":
        x, y = np.asarray(record["keypoints"][0::3]), np.asarray(record["keypoints"][1::3])
        x0, x1, y0, y1 = np.min(x), np.max(x), np.min(y), np.max(y)
        return {"area": (x1 - x0) * (y1 - y0), "bbox": [x0, y0, x1 - x0, y1 - y0]}
    x, y, w, h = record["bbox"]
    return {"area": w * h, "iscrowd": 0, "segmentation": [[x, y, x, y + h, x + w, y + h, x + w, y]]}
