"""COCO keypoint AP, as top-down pose code (HRNet, TransPose) computes it.

- rescoring: a person's score = box score x mean of its keypoint confidences above
  `in_vis_threshold` (0 when none is), `lib/dataset/coco.py:COCODataset.evaluate`;
- OKS-NMS per image: greedy by score, a candidate is dropped when its OKS with a kept one is
  above the threshold, OKS over all 17 joints without a visibility filter, areas from the
  padded boxes (`lib/nms/nms.py:oks_nms`);
- pycocotools `COCOeval(gt, dt, "keypoints")`, stats[0..9].

Float types follow upstream where they decide ties: keypoints are float32 (upstream keeps them
in a float32 array), scores float64.
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from ..errors import UserError
from .coco_bbox import accumulate

# pycocotools' COCO keypoint sigmas (the same in lib/nms/nms.py)
SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
STAT_NAMES = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")
PERSON = 1


@dataclass
class Instances:
    """Per-person predictions of a set of boxes, in one array each."""

    image_ids: np.ndarray  # (N,) int64
    keypoints: np.ndarray  # (N, J, 3) float32: x, y, confidence
    box_scores: np.ndarray  # (N,) float64
    areas: np.ndarray  # (N,) float64: the padded box area, (200 s_w) (200 s_h)
    centers: np.ndarray  # (N, 2)
    scales: np.ndarray  # (N, 2)

    FIELDS: ClassVar[tuple[str, ...]] = ("image_ids", "keypoints", "box_scores", "areas", "centers", "scales")

    def __len__(self) -> int:
        return len(self.image_ids)

    def rows(self, rows: np.ndarray) -> "Instances":
        """The instances at `rows` (an index or boolean array)."""
        return Instances(*(getattr(self, name)[rows] for name in Instances.FIELDS))

    @classmethod
    def concatenate(cls, parts: Sequence["Instances"]) -> "Instances":
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.FIELDS))


def rescore(confidences: np.ndarray, box_scores: np.ndarray, in_vis_threshold: float) -> np.ndarray:
    """(N, J) confidences, (N,) box scores -> (N,) float64 scores. The mean is accumulated joint by
    joint in float32, as upstream's loop does, so equal inputs give equal scores bit for bit."""
    confidences = np.asarray(confidences, dtype=np.float32)
    visible = confidences > in_vis_threshold
    total = np.zeros(len(confidences), dtype=np.float32)
    for joint in range(confidences.shape[1]):
        total = total + np.where(visible[:, joint], confidences[:, joint], np.float32(0))
    count = visible.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, total / count.astype(np.float32), np.float32(0))
    return mean.astype(np.float64) * np.asarray(box_scores, dtype=np.float64)


def oks(reference: np.ndarray, others: np.ndarray, reference_area: float, other_areas: np.ndarray,
        sigmas: np.ndarray = SIGMAS) -> np.ndarray:
    """OKS of one instance (J*3,) against M others (M, J*3), over all joints (lib/nms/nms.py:oks_iou)."""
    variances = (sigmas * 2) ** 2
    dx = others[:, 0::3] - reference[0::3]
    dy = others[:, 1::3] - reference[1::3]
    e = (dx ** 2 + dy ** 2) / variances / ((reference_area + other_areas[:, None]) / 2 + np.spacing(1)) / 2
    return np.sum(np.exp(-e), axis=1) / e.shape[1]


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float,
            sigmas: np.ndarray = SIGMAS) -> list[int]:
    """Indices kept by greedy OKS-NMS, best first. Keeps upstream's ordering for equal scores
    (the same argsort, reversed)."""
    if len(scores) == 0:
        return []
    flat = np.asarray(keypoints).reshape(len(scores), -1)
    areas = np.asarray(areas)
    order = np.asarray(scores).argsort()[::-1]
    keep = []
    while order.size > 0:
        best = order[0]
        keep.append(int(best))
        overlap = oks(flat[best], flat[order[1:]], areas[best], areas[order[1:]], sigmas)
        order = order[np.where(overlap <= threshold)[0] + 1]
    return keep


def select(instances: Instances, in_vis_threshold: float, oks_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rescoring and per-image OKS-NMS: (kept indices, their scores)."""
    scores = rescore(instances.keypoints[..., 2], instances.box_scores, in_vis_threshold)
    by_image: dict[int, list[int]] = defaultdict(list)
    for index, image_id in enumerate(instances.image_ids.tolist()):
        by_image[image_id].append(index)
    kept = []
    for indices in by_image.values():
        indices = np.asarray(indices)
        keep = oks_nms(instances.keypoints[indices], scores[indices], instances.areas[indices], oks_threshold)
        kept.extend(indices[keep] if keep else indices)  # upstream keeps all when NMS keeps none
    kept = np.asarray(kept, dtype=np.int64)
    return kept, scores[kept]


def results(instances: Instances, kept: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """COCO keypoint results (what upstream writes to keypoints_val2017_results_0.json)."""
    return [{
        "image_id": int(instances.image_ids[i]),
        "category_id": PERSON,
        "keypoints": [float(v) for v in instances.keypoints[i].astype(np.float64).ravel()],
        "score": float(score),
        "center": [float(v) for v in instances.centers[i]],
        "scale": [float(v) for v in instances.scales[i]],
    } for i, score in zip(kept.tolist(), scores.tolist())]


def load_ground_truth(annotations: Path | str):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(annotations))


def evaluate(ground_truth, detections: list[dict[str, Any]], image_ids: Iterable[int] | None = None) -> tuple[dict[str, float], str]:
    """pycocotools keypoint evaluation: ({ap, ap50, ..., ar_large}, COCOeval's printed summary).
    `ground_truth` is a COCO object or an annotation file; `image_ids` restricts the evaluation
    (e.g. to the images of a `--limit` subset); all images otherwise."""
    from pycocotools.cocoeval import COCOeval

    if not isinstance(ground_truth, (str, Path)):
        coco = ground_truth
    else:
        coco = load_ground_truth(ground_truth)
    if not detections:
        raise UserError("no keypoint detections to evaluate", hint="check the infer stage's outputs and the sample list")
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        predicted = coco.loadRes(copy.deepcopy(detections))  # loadRes adds area, bbox and id in place
        evaluation = COCOeval(coco, predicted, "keypoints")
        evaluation.params.useSegm = None
        if image_ids is not None:
            evaluation.params.imgIds = sorted(set(int(i) for i in image_ids))
        evaluation.evaluate()
        accumulate(evaluation)  # COCOeval.accumulate's numbers, faster
        evaluation.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluation.stats)}, summary.getvalue()
