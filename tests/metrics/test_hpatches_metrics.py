"""HPatches metrics equal upstream's `evaluation.py` (DESIGN.md section 4, link 4).

tests/fixtures/superpoint-predictions/0..6.npz are upstream's own export of the 170k checkpoint
on one illumination sequence (H = identity). The constructed pairs move the warped points of
three of them by a known homography, so that warping, border filtering and the (y, x) quirks
are exercised too.

The UPSTREAM_* constants were produced by running upstream's evaluation code itself, at the
pinned commit with patches/superpoint applied (Python 3.11, numpy 2.4.6, opencv-python-headless
4.14.0, scikit-learn 1.9.1):
    python evaluation.py <dir with the npz files> --repeatibility --homography
then reading the per-pair lists from the result.npz it writes. `test_equal_to_upstream_recomputed`
does the same live when OMPIPE_UPSTREAM_SUPERPOINT names a clone or mirror of upstream (it
patches a checkout of its own from it).
"""
from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import numpy as np
import pytest

from om_pipeline.metrics.hpatches import (
    PairMetrics,
    PairPrediction,
    average_precision,
    evaluate_pair,
    mutual_nearest_neighbours,
    repeatability,
    summarize,
    warp_keypoints,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "superpoint-predictions"
THRESHOLDS = (1, 3, 5, 10, 20, 50)

# fixture index -> homography applied to its warped points
CONSTRUCTED_HOMOGRAPHIES = {
    1: [[0.9, 0.05, 12.0], [-0.04, 0.95, 8.0], [1e-4, -5e-5, 1.0]],
    3: [[1.1, 0.0, -15.0], [0.0, 1.1, -10.0], [0.0, 0.0, 1.0]],
    5: [[0.98, -0.17, 30.0], [0.17, 0.98, -20.0], [2e-4, 1e-4, 1.0]],
}

# Per pair: repeatability, localisation error, NN AP, matching score, homography correct at THRESHOLDS.
UPSTREAM_FIXTURE_PAIRS = [
    (0.8944381384790011, 0.36777972065778836, 0.9996717415262767, 1.0038216560509554, (1, 1, 1, 1, 1, 1)),
    (0.8577827547592385, 0.40949021600673396, 0.9978611997501472, 0.9191919191919192, (1, 1, 1, 1, 1, 1)),
    (0.7589686098654709, 0.7033454637587068, 0.9800884503059704, 0.648989898989899, (0, 1, 1, 1, 1, 1)),
    (0.6044198895027625, 1.083647215072518, 0.7633710940831236, 0.23588456712672523, (0, 1, 1, 1, 1, 1)),
    (0.5513812154696133, 1.1652108193547308, 0.6156225662835093, 0.1414141414141414, (0, 0, 1, 1, 1, 1)),
    (0.7271589486858573, 0.6953654429569844, 0.9665062200897528, 0.6751412429378532, (1, 1, 1, 1, 1, 1)),
    (0.729936305732484, 0.7278371787125765, 0.9510584413443952, 0.6411347517730497, (1, 1, 1, 1, 1, 1)),
]
UPSTREAM_CONSTRUCTED_PAIRS = [
    (0.8622620380739082, 0.3843399314692698, 0.9987490426601984, 0.9230769230769231, (1, 1, 1, 1, 1, 1)),
    (0.536046511627907, 1.0766001735841386, 0.7517543441292824, 0.2275, (0, 1, 1, 1, 1, 1)),
    (0.7455919395465995, 0.7107465085092872, 0.9671137343768795, 0.7046783625730995, (1, 1, 1, 1, 1, 1)),
]
# evaluation.py's printed means for the seven fixture pairs.
UPSTREAM_FIXTURE_MEANS = {
    "repeatability": 0.7320122660706325,
    "nn_map": 0.8963113876261678,
    "matching_score": 0.6093683110692203,
    "homography_accuracy_1": 4 / 7,
    "homography_accuracy_3": 6 / 7,
    "homography_accuracy_5": 1.0,
}


def fixture_record(index: int) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{index}.npz") as data:
        return {key: data[key] for key in data.files}


def constructed_record(index: int) -> dict[str, np.ndarray]:
    record = fixture_record(index)
    homography = np.array(CONSTRUCTED_HOMOGRAPHIES[index])
    record["warped_prob"] = record["warped_prob"].copy()
    record["warped_prob"][:, :2] = warp_keypoints(record["warped_prob"][:, :2], homography)
    record["homography"] = homography
    return record


def all_records() -> list[dict[str, np.ndarray]]:
    return [fixture_record(i) for i in range(7)] + [constructed_record(i) for i in sorted(CONSTRUCTED_HOMOGRAPHIES)]


def as_pair(record: dict[str, np.ndarray]) -> PairPrediction:
    return PairPrediction(
        points=record["prob"],
        descriptors=record["desc"],
        warped_points=record["warped_prob"],
        warped_descriptors=record["warped_desc"],
        homography=record["homography"],
        shape=record["image"].shape,
    )


def assert_pair_equals(metrics: PairMetrics, expected) -> None:
    rep, localization, ap, score, correct = expected
    assert metrics.repeatability == pytest.approx(rep, abs=1e-6)
    assert metrics.localization_error == pytest.approx(localization, abs=1e-6)
    assert metrics.nn_average_precision == pytest.approx(ap, abs=1e-6)
    assert metrics.matching_score == pytest.approx(score, abs=1e-6)
    assert metrics.homography_correct == tuple(bool(c) for c in correct)


@pytest.mark.parametrize("index", range(7))
def test_fixture_pair_equals_upstream(index):
    assert_pair_equals(evaluate_pair(as_pair(fixture_record(index))), UPSTREAM_FIXTURE_PAIRS[index])


@pytest.mark.parametrize("position, index", list(enumerate(sorted(CONSTRUCTED_HOMOGRAPHIES))))
def test_constructed_pair_equals_upstream(position, index):
    assert_pair_equals(evaluate_pair(as_pair(constructed_record(index))), UPSTREAM_CONSTRUCTED_PAIRS[position])


def test_summary_equals_upstream_means():
    summary = summarize([evaluate_pair(as_pair(fixture_record(i))) for i in range(7)], THRESHOLDS)
    assert summary["pairs"] == 7
    for name, value in UPSTREAM_FIXTURE_MEANS.items():
        assert summary[name] == pytest.approx(value, abs=1e-6), name
    assert summary["localization_error"] == pytest.approx(np.mean([p[1] for p in UPSTREAM_FIXTURE_PAIRS]), abs=1e-6)


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        ([1, 0, 1], [0.9, 0.8, 0.7], 0.5 * 1 + 0.5 * 2 / 3),
        ([0, 1], [0.9, 0.1], 0.5),
        ([1, 0], [0.5, 0.5], 0.5),  # one threshold for tied scores: precision 1/2 at recall 1
        ([1, 1, 0, 1], [0.4, 0.4, 0.4, 0.1], 2 / 3 * 2 / 3 + 1 / 3 * 3 / 4),
        ([1, 1, 1], [0.3, 0.2, 0.1], 1.0),
    ],
)
def test_average_precision_known_answers(labels, scores, expected):
    assert average_precision(np.array(labels), np.array(scores, dtype=float)) == pytest.approx(expected, abs=1e-12)


def test_repeatability_known_answer():
    grid = np.stack(np.meshgrid(np.arange(20, 300, 20), np.arange(20, 220, 20)), axis=-1).reshape(-1, 2).astype(float)
    points = np.hstack([grid, np.linspace(0.1, 0.9, len(grid))[:, None]])
    shifted = points.copy()
    shifted[:, 0] += 1.0  # every point found again, 1 px off
    descriptors = np.eye(len(points), 256, dtype=np.float32)
    pair = PairPrediction(points, descriptors, shifted, descriptors, np.eye(3))
    assert repeatability(pair) == (1.0, 1.0)
    assert repeatability(pair, distance=0.5) == (0.0, None)


def test_repeatability_counts_only_points_both_images_see():
    points = np.array([[10.0, 10.0, 0.9], [300.0, 10.0, 0.8]])
    to_the_right = np.array([[1.0, 0, 100.0], [0, 1.0, 0], [0, 0, 1.0]])  # (300, 10) leaves image k
    warped = np.array([[110.0, 10.0, 0.9]])
    descriptors = np.eye(2, 4, dtype=np.float32)
    pair = PairPrediction(points, descriptors, warped, descriptors[:1], to_the_right)
    assert repeatability(pair) == (1.0, 0.0)


def test_repeatability_keeps_the_most_confident_points():
    points = np.array([[10.0, 10.0, 0.9], [50.0, 50.0, 0.1]])
    warped = np.array([[10.0, 10.0, 0.2], [90.0, 90.0, 0.8]])
    descriptors = np.eye(2, 4, dtype=np.float32)
    pair = PairPrediction(points, descriptors, warped, descriptors, np.eye(3))
    assert repeatability(pair, keep=1) == (0.0, None)  # (10, 10) in image 1 vs (90, 90) in image k
    assert repeatability(pair, keep=2)[0] == pytest.approx(0.5)


def test_mutual_nearest_neighbours_known_answer():
    basis = np.eye(4, dtype=np.float32)
    first = basis[[0, 1, 2]]
    second = np.stack([basis[1], basis[0], (basis[2] + basis[3]) / np.sqrt(2)]).astype(np.float32)
    indices1, indices2, distances = mutual_nearest_neighbours(first, second, threshold=0.9)
    assert indices1.tolist() == [0, 1, 2] and indices2.tolist() == [1, 0, 2]
    np.testing.assert_allclose(distances, [0, 0, np.sqrt(2 - np.sqrt(2))], atol=1e-6)
    assert mutual_nearest_neighbours(first, second, threshold=0.5)[0].tolist() == [0, 1]


def test_pairs_without_enough_matches_score_zero():
    points = np.array([[10.0, 10.0, 0.9], [50.0, 50.0, 0.5]])
    descriptors = np.eye(2, 256, dtype=np.float32)
    metrics = evaluate_pair(PairPrediction(points, descriptors, points, descriptors, np.eye(3)))
    assert metrics.repeatability == 1.0
    assert metrics.nn_average_precision == 0.0 and metrics.matching_score == 0.0
    assert metrics.homography_correct == (False,) * 6


UPSTREAM = os.environ.get("OMPIPE_UPSTREAM_SUPERPOINT")


@pytest.mark.upstream
@pytest.mark.skipif(not UPSTREAM, reason="OMPIPE_UPSTREAM_SUPERPOINT is not set")
def test_equal_to_upstream_recomputed(tmp_path):
    for module in ("sklearn", "matplotlib", "coloredlogs", "tqdm"):
        pytest.importorskip(module, reason=f"upstream evaluation.py needs {module}")
    from om_pipeline.models.superpoint import upstream_modules
    from om_pipeline.testing.upstream import patched_upstream

    checkout = patched_upstream("superpoint", UPSTREAM, tmp_path / "pytorch-superpoint")
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    records = all_records()
    for i, record in enumerate(records):
        np.savez(predictions / f"{i}.npz", **record)
    with upstream_modules(checkout):
        evaluation = importlib.import_module("evaluation")
        evaluation.evaluate(argparse.Namespace(path=str(predictions), repeatibility=True, homography=True, outputImg=False, plotMatching=False, sift=False))
    with np.load(predictions / "result.npz") as upstream:
        expected = list(zip(upstream["repeatability"], upstream["localization_err"], upstream["mAP"], upstream["mscore"], upstream["correctness"]))
    for record, upstream_pair in zip(records, expected):
        assert_pair_equals(evaluate_pair(as_pair(record)), upstream_pair)
