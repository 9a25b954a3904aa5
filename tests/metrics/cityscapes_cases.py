"""Constructed Cityscapes evaluation cases, NumPy only, so the same cases can be scored by
cityscapesScripts in an environment of its own (tests/metrics/test_cityscapes.py records its
answers and checks them live when cityscapesscripts is importable).

Each case is a list of (predicted train ids, ground-truth label ids) pairs of uint8 maps.
"""
from __future__ import annotations

import numpy as np

EVALUATED_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
NOT_EVALUATED_LABEL_IDS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)
SHAPE = (48, 96)


def _random_truth(rng, labels=EVALUATED_LABEL_IDS + NOT_EVALUATED_LABEL_IDS) -> np.ndarray:
    return rng.choice(np.array(labels, dtype=np.uint8), size=SHAPE)


def _noisy(rng, truth_train: np.ndarray, flip: float, classes=19) -> np.ndarray:
    prediction = np.where(truth_train == 255, rng.integers(0, classes, SHAPE), truth_train).astype(np.uint8)
    flips = rng.random(SHAPE) < flip
    prediction[flips] = rng.integers(0, classes, int(flips.sum()))
    return prediction


def to_train(label_ids: np.ndarray) -> np.ndarray:
    table = np.full(256, 255, dtype=np.uint8)
    table[list(EVALUATED_LABEL_IDS)] = np.arange(19, dtype=np.uint8)
    return table[label_ids]


def cases() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(20261201)
    found: dict[str, list] = {}
    # every class present, predictions right except where the ground truth is not evaluated
    truths = [_random_truth(rng) for _ in range(2)]
    found["perfect"] = [(_noisy(rng, to_train(t), 0.0), t) for t in truths]
    # three images, 30 % of the pixels predicted at random
    truths = [_random_truth(rng) for _ in range(3)]
    found["noisy"] = [(_noisy(rng, to_train(t), 0.3), t) for t in truths]
    # classes 14-18 (truck .. bicycle) neither in the ground truth nor predicted: NaN, skipped
    few = EVALUATED_LABEL_IDS[:14] + NOT_EVALUATED_LABEL_IDS
    truths = [_random_truth(rng, few) for _ in range(2)]
    found["absent_classes"] = [(_noisy(rng, to_train(t), 0.2, classes=14), t) for t in truths]
    # one class predicted but never in the ground truth: its IoU is 0 and counts
    truth = _random_truth(rng, few)
    prediction = _noisy(rng, to_train(truth), 0.1, classes=14)
    prediction[:4, :] = 18  # bicycle
    found["predicted_not_present"] = [(prediction, truth)]
    # ground truth mostly void (0) and ignored classes; predictions there must not count
    truth = np.where(rng.random(SHAPE) < 0.8, np.uint8(0), _random_truth(rng)).astype(np.uint8)
    found["mostly_void"] = [(rng.integers(0, 19, SHAPE).astype(np.uint8), truth)]
    return found
