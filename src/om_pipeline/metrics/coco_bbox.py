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
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats)}


def _json_roundtrip(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What upstream evaluates is its results.json read back; a round trip through JSON gives
    pycocotools the same Python floats and leaves the caller's records untouched (loadRes adds
    keys to the records it is given)."""
    return json.loads(json.dumps(results))
