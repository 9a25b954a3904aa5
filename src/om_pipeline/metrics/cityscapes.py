"""Cityscapes pixel-level semantic labelling: class IoU and its mean, as cityscapesScripts
(`cityscapesscripts/evaluation/evalPixelLevelSemanticLabeling.py`) computes them.

cityscapesScripts builds a 34 x 34 confusion matrix over label ids (rows ground truth, columns
prediction) and scores each of the 19 evaluated classes as
    IoU(c) = TP / (TP + FP + FN),  FN = row sum - TP,  FP = column sum over ground-truth rows of
                                                           classes evaluated, other than c
(NaN when the denominator is 0), and reports the mean of the non-NaN values
(`averageScoreClasses`). A prediction is always one of the 19 classes here (an argmax), so this
equals a 19 x 19 confusion matrix over train ids with every other ground-truth pixel (void and
the 16 classes with ignoreInEval) left out, which is what `ConfusionMatrix` keeps: 2.9 KB, not a
34 x 34 matrix per image file, and no PNG round trip of the predictions.

Label tables are `cityscapesscripts/helpers/labels.py` (train id -> label id: the id a
prediction PNG holds, as detectron2's CityscapesSemSegEvaluator writes it).
"""
from __future__ import annotations

import numpy as np

IGNORE = 255

# (label id, name) of train ids 0..18, in train id order.
TRAIN_CLASSES: tuple[tuple[int, str], ...] = (
    (7, "road"), (8, "sidewalk"), (11, "building"), (12, "wall"), (13, "fence"), (17, "pole"),
    (19, "traffic light"), (20, "traffic sign"), (21, "vegetation"), (22, "terrain"), (23, "sky"),
    (24, "person"), (25, "rider"), (26, "car"), (27, "truck"), (28, "bus"), (31, "train"),
    (32, "motorcycle"), (33, "bicycle"),
)
NUM_CLASSES = len(TRAIN_CLASSES)
TRAIN_ID_TO_LABEL_ID = np.array([label for label, _ in TRAIN_CLASSES], dtype=np.uint8)
CLASS_NAMES = tuple(name for _, name in TRAIN_CLASSES)


def _label_to_train_table() -> np.ndarray:
    """uint8 label id -> train id; 255 for the ids cityscapesScripts does not evaluate (0-6
    void classes, 9 parking, 10 rail track, 14 guard rail, 15 bridge, 16 tunnel, 18 polegroup,
    29 caravan, 30 trailer, and -1 licence plate, which labelIds PNGs never hold)."""
    table = np.full(256, IGNORE, dtype=np.uint8)
    table[TRAIN_ID_TO_LABEL_ID] = np.arange(NUM_CLASSES, dtype=np.uint8)
    return table


LABEL_ID_TO_TRAIN_ID = _label_to_train_table()


def label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train ids (0..18) -> Cityscapes label ids, the values of a `*_pred.png`."""
    train_ids = np.asarray(train_ids)
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= NUM_CLASSES):
        raise ValueError(f"train ids outside 0..{NUM_CLASSES - 1}: {train_ids.min()}..{train_ids.max()}")
    return TRAIN_ID_TO_LABEL_ID[train_ids]


def train_ids(label_id_map: np.ndarray) -> np.ndarray:
    """A `*_gtFine_labelIds.png` (label ids) -> train ids, 255 where not evaluated."""
    return LABEL_ID_TO_TRAIN_ID[np.asarray(label_id_map, dtype=np.uint8)]


class ConfusionMatrix:
    """19 x 19 counts, rows ground truth, columns prediction, over train ids; ground truth 255
    is left out."""

    def __init__(self) -> None:
        self.counts = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)

    def add(self, prediction: np.ndarray, ground_truth_train_ids: np.ndarray) -> None:
        prediction = np.asarray(prediction)
        truth = np.asarray(ground_truth_train_ids)
        if prediction.shape != truth.shape:
            # cityscapesScripts refuses this too ("Image widths/heights ... are not equal")
            raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in size")
        keep = truth != IGNORE
        pred, true = prediction[keep].astype(np.int64), truth[keep].astype(np.int64)
        if pred.size and (pred.min() < 0 or pred.max() >= NUM_CLASSES):
            raise ValueError(f"predicted train ids outside 0..{NUM_CLASSES - 1}")
        if true.size and true.max() >= NUM_CLASSES:
            raise ValueError(f"ground-truth train ids outside 0..{NUM_CLASSES - 1} (and not {IGNORE})")
        self.counts += np.bincount(true * NUM_CLASSES + pred, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)

    def class_iou(self) -> np.ndarray:
        """Per train id; NaN where the class is neither in the ground truth nor predicted."""
        tp = np.diag(self.counts).astype(np.float64)
        fn = self.counts.sum(axis=1) - tp
        fp = self.counts.sum(axis=0) - tp
        denominator = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, tp / np.where(denominator > 0, denominator, 1), np.nan)

    def mean_iou(self) -> float:
        iou = self.class_iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.counts.sum()
        return float(np.trace(self.counts) / total) if total else float("nan")
