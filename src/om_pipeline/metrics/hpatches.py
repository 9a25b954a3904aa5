"""HPatches keypoint metrics, computed as eric-yyjau/pytorch-superpoint's `evaluation.py` does.

One image pair = image 1 and image k of a sequence, each with keypoints (x, y, confidence) and
unit descriptors, plus the ground-truth homography from image 1 to image k. Per pair:

- repeatability and localisation error: `evaluations/detector_evaluation.py:compute_repeatability`;
- nearest-neighbour AP: `evaluation.py` (PointTracker two-way NN matching on (y, x) points,
  OpenCV RANSAC inliers as labels, sklearn's average_precision_score on max(d) - d);
- homography accuracy and matching score: `evaluations/descriptor_evaluation.py:compute_homography`
  (cross-checked brute-force matching, RANSAC, mean corner error) and `evaluation.py`'s score.

`summarize` averages over pairs as `evaluation.py` does. Upstream quirks that change numbers are
kept on purpose and marked "as upstream".
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_HOMOGRAPHY_MATCHES = 4  # cv2.findHomography refuses fewer


@dataclass(frozen=True)
class PairPrediction:
    points: np.ndarray  # (N1, 3) x, y, confidence in image 1
    descriptors: np.ndarray  # (N1, D) float32
    warped_points: np.ndarray  # (N2, 3) in image k
    warped_descriptors: np.ndarray  # (N2, D) float32
    homography: np.ndarray  # (3, 3) image 1 -> image k, in the network's input pixels
    shape: tuple[int, int] = (240, 320)  # (height, width) of the network input


@dataclass(frozen=True)
class PairMetrics:
    repeatability: float
    localization_error: float | None  # None when no point is repeated
    nn_average_precision: float
    matching_score: float
    homography_correct: tuple[bool, ...]  # one per threshold


def warp_keypoints(points_xy: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """(N, 2) x, y -> (N, 2) x, y through a 3x3 homography."""
    homogeneous = np.concatenate([points_xy, np.ones((len(points_xy), 1))], axis=1)
    warped = np.dot(homogeneous, np.transpose(homography))
    return warped[:, :2] / warped[:, 2:]


def inside(points_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    x, y = points_xy[:, 0], points_xy[:, 1]
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def top_k(points: np.ndarray, k: int) -> np.ndarray:
    """`select_k_best`: the k most confident (x, y), in ascending confidence. Same argsort call
    as upstream, so ties at the cut fall the same way."""
    ascending = points[points[:, 2].argsort(), :2]
    return ascending[-min(k, len(points)):]


def repeatability(pair: PairPrediction, keep: int = 1000, distance: float = 3.0) -> tuple[float, float | None]:
    """Share of points seen in both images (within `distance` px after warping), counted from
    both sides over the points that both images can see; and the mean of those distances."""
    seen_in_image1 = inside(warp_keypoints(pair.warped_points[:, :2], np.linalg.inv(pair.homography)), pair.shape)
    warped = top_k(pair.warped_points[seen_in_image1], keep)
    projected = pair.points.copy()
    projected[:, :2] = warp_keypoints(pair.points[:, :2], pair.homography)
    projected = top_k(projected[inside(projected[:, :2], pair.shape)], keep)

    distances = np.linalg.norm(projected[:, None, :] - warped[None, :, :], axis=2)
    nearest_from_projected = distances.min(axis=1) if len(warped) else np.empty(0)
    nearest_from_warped = distances.min(axis=0) if len(projected) else np.empty(0)
    repeated = np.concatenate([
        nearest_from_projected[nearest_from_projected <= distance],
        nearest_from_warped[nearest_from_warped <= distance],
    ])
    if len(repeated) == 0:
        return 0.0, None
    return len(repeated) / (len(projected) + len(warped)), float(repeated.sum() / len(repeated))


def mutual_nearest_neighbours(descriptors1: np.ndarray, descriptors2: np.ndarray, threshold: float):
    """`PointTracker.nn_match_two_way`: pairs (i, j) that are each other's nearest neighbour at
    L2 distance < threshold. Returns (indices1, indices2, distances)."""
    if len(descriptors1) == 0 or len(descriptors2) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    # The same operand layouts as upstream (a C-ordered D x N1 copy, transposed; a D x N2 view),
    # so BLAS takes the same path and near-equal distances compare the same way.
    similarity = np.dot(np.ascontiguousarray(descriptors1.T).T, descriptors2.T)
    distances = np.sqrt(2 - 2 * np.clip(similarity, -1, 1))
    nearest = np.argmin(distances, axis=1)
    scores = distances[np.arange(len(nearest)), nearest]
    mutual = np.argmin(distances, axis=0)[nearest] == np.arange(len(nearest))
    keep = (scores < threshold) & mutual
    return np.flatnonzero(keep), nearest[keep], scores[keep]


def ransac_inliers(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """cv2.findHomography with RANSAC (default 3 px): (homography or None, inlier mask)."""
    if len(source) < MIN_HOMOGRAPHY_MATCHES:
        return None, np.zeros(len(source), dtype=bool)
    homography, mask = cv2.findHomography(source, target, cv2.RANSAC)
    if mask is None:
        return None, np.zeros(len(source), dtype=bool)
    return homography, mask.ravel().astype(bool)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """sklearn.metrics.average_precision_score for binary labels: the sum over distinct score
    thresholds, highest first, of (recall gained) x (precision there)."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, labels = scores[order], labels[order].astype(np.float64)
    last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_each_score]
    precision = true_positives / (last_of_each_score + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def nn_average_precision(pair: PairPrediction, threshold: float = 1.2) -> float:
    """`evaluation.py`'s mAP term for one pair (the number the Ascend guide reports)."""
    first, second, distances = mutual_nearest_neighbours(pair.descriptors, pair.warped_descriptors, threshold)
    # As upstream: the tracker is fed (y, x) points, so RANSAC runs on (y, x) coordinates.
    source, target = pair.points[first][:, [1, 0]], pair.warped_points[second][:, [1, 0]]
    _, inliers = ransac_inliers(source, target)
    if not inliers.any():
        return 0.0
    distances = distances.astype(np.float64)  # upstream stores them in a float64 match array
    return average_precision(inliers, distances.max() - distances)


def corner_error(estimated: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> float:
    """Mean distance between the image corners warped by the two homographies."""
    height, width = shape
    corners = np.array([[0, 0], [0, height - 1], [width - 1, 0], [width - 1, height - 1]], dtype=np.float64)
    return float(np.mean(np.linalg.norm(warp_keypoints(corners, truth) - warp_keypoints(corners, estimated), axis=1)))


def homography_estimate(pair: PairPrediction) -> tuple[np.ndarray | None, int]:
    """`compute_homography`: cross-checked L2 brute-force matches, then RANSAC on (x, y).
    Returns (estimated homography or None, number of RANSAC inliers)."""
    if len(pair.descriptors) == 0 or len(pair.warped_descriptors) == 0:
        return None, 0
    matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(pair.descriptors, pair.warped_descriptors)
    first = np.array([m.queryIdx for m in matches], dtype=np.int64)
    second = np.array([m.trainIdx for m in matches], dtype=np.int64)
    homography, inliers = ransac_inliers(pair.points[first][:, :2], pair.warped_points[second][:, :2])
    return homography, int(inliers.sum())


def points_mapped_back(pair: PairPrediction) -> int:
    """`evaluation.py:warpLabels` count, as upstream: the image-k points are given in (y, x)
    order, truncated to integers, warped by H^-1 in float32 as if (x, y), and kept when the
    first coordinate is in [0, W-1] and the second in [0, H-1]."""
    height, width = pair.shape
    swapped = np.trunc(pair.warped_points[:, [1, 0]]).astype(np.float32)
    homogeneous = np.concatenate([swapped, np.ones((len(swapped), 1), np.float32)], axis=1)
    warped = (np.linalg.inv(pair.homography).astype(np.float32) @ homogeneous.T).T
    warped = warped[:, :2] / warped[:, 2:]
    kept = (warped >= 0).all(axis=1) & (warped[:, 0] <= width - 1) & (warped[:, 1] <= height - 1)
    return int(kept.sum())


def evaluate_pair(
    pair: PairPrediction,
    *,
    keep: int = 1000,
    distance: float = 3.0,
    nn_threshold: float = 1.2,
    homography_thresholds: tuple[float, ...] = (1, 3, 5, 10, 20, 50),
) -> PairMetrics:
    rep, localization = repeatability(pair, keep, distance)
    estimated, inlier_count = homography_estimate(pair)
    error = np.inf if estimated is None else corner_error(estimated, pair.homography, pair.shape)
    denominator = len(pair.points) + points_mapped_back(pair)
    return PairMetrics(
        repeatability=rep,
        localization_error=localization,
        nn_average_precision=nn_average_precision(pair, nn_threshold),
        matching_score=2 * inlier_count / denominator if denominator else 0.0,
        homography_correct=tuple(bool(error <= eps) for eps in homography_thresholds),
    )


def summarize(pairs: list[PairMetrics], homography_thresholds: tuple[float, ...]) -> dict[str, float]:
    """Means over pairs, as `evaluation.py`: the localisation error averages only the pairs
    where it is positive (upstream's -1 for 'no repeated point' and exact zeros both skipped)."""
    localization = [p.localization_error for p in pairs if p.localization_error is not None and p.localization_error > 0]
    correct = np.array([p.homography_correct for p in pairs], dtype=np.float64).reshape(len(pairs), len(homography_thresholds))
    summary = {
        "pairs": float(len(pairs)),
        "repeatability": float(np.mean([p.repeatability for p in pairs])),
        "localization_error": float(np.mean(localization)) if localization else float("nan"),
        "nn_map": float(np.mean([p.nn_average_precision for p in pairs])),
        "matching_score": float(np.mean([p.matching_score for p in pairs])),
    }
    for eps, accuracy in zip(homography_thresholds, correct.mean(axis=0)):
        summary[f"homography_accuracy_{eps:g}"] = float(accuracy)
    return summary
