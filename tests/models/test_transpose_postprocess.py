"""TransPose geometry and DARK decoding (om_pipeline.models.transpose_postprocess) on constructed
inputs with known answers; no upstream needed (test_transpose_upstream.py compares with
upstream's own functions when a checkout is at hand)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from om_pipeline.models.transpose_postprocess import (FLIP_PAIRS, affine_transforms, average_flip, crop_transform, decode,
                                                      final_preds, flip_back, gaussian_blur, max_preds, taylor,
                                                      transform_back)

HEATMAP = (48, 64)  # (width, height)


def gaussian_maps(points: np.ndarray, sigma: float = 2.0, size=HEATMAP, peak: float = 1.0) -> np.ndarray:
    """(N, J, 2) heatmap points -> (N, J, H, W) Gaussians, the targets TransPose is trained on."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    x = points[..., 0][..., None, None]
    y = points[..., 1][..., None, None]
    return (peak * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))).astype(np.float32)


def test_the_crop_is_the_dark_affine_with_size_minus_one_terms():
    """x' = k (x - c_x) + (w - 1) / 2, y' = k (y - c_y) + (h - 1) / 2, k = (w - 1) / (200 s_w - 1)."""
    centers = np.array([[320.0, 240.0], [101.5, 77.25], [10.0, 500.0]], dtype=np.float32)
    scales = np.array([[1.0, 1.3333334], [0.37, 0.5], [2.5, 3.3]], dtype=np.float32)
    for size in ((192, 256), HEATMAP):
        matrices = affine_transforms(centers, scales, size)
        k = (size[0] - 1) / (200 * scales[:, 0].astype(np.float64) - 1)
        expected = np.zeros((3, 2, 3))
        expected[:, 0, 0] = expected[:, 1, 1] = k
        expected[:, 0, 2] = -k * centers[:, 0] + (size[0] - 1) / 2
        expected[:, 1, 2] = -k * centers[:, 1] + (size[1] - 1) / 2
        np.testing.assert_allclose(matrices, expected, rtol=1e-6, atol=1e-4)
        inverse = affine_transforms(centers, scales, size, inverse=True)
        np.testing.assert_allclose(inverse[:, :, :2] @ matrices[:, :, :2], np.broadcast_to(np.eye(2), (3, 2, 2)), atol=1e-9)


def test_crop_transform_is_the_batched_matrix_through_opencv():
    center, scale = np.array([211.0, 143.5], np.float32), np.array([0.9, 1.2], np.float32)
    np.testing.assert_allclose(crop_transform(center, scale, (192, 256)), affine_transforms(center, scale, (192, 256))[0], rtol=1e-12, atol=1e-12)


def test_transform_back_inverts_the_heatmap_affine():
    rng = np.random.default_rng(0)
    centers = rng.uniform(50, 600, (5, 2)).astype(np.float32)
    scales = rng.uniform(0.2, 3, (5, 2)).astype(np.float32)
    image_points = centers[:, None, :] + rng.uniform(-40, 40, (5, 17, 2))
    forward = affine_transforms(centers, scales, HEATMAP)
    heatmap_points = np.einsum("nij,nkj->nki", forward, np.concatenate([image_points, np.ones((5, 17, 1))], axis=2))
    np.testing.assert_allclose(transform_back(heatmap_points, centers, scales, HEATMAP), image_points, atol=1e-6)
    # the closed form of models.md: x = c_x + (x_h - 23.5) (200 s_w - 1) / 47
    back = transform_back(np.array([[[0.0, 0.0], [47.0, 63.0]]]), centers[:1], scales[:1], HEATMAP)[0]
    factor = (200 * np.float64(scales[0, 0]) - 1) / 47
    np.testing.assert_allclose(back, [[centers[0, 0] - 23.5 * factor, centers[0, 1] - 31.5 * factor],
                                      [centers[0, 0] + 23.5 * factor, centers[0, 1] + 31.5 * factor]], rtol=1e-5)


def test_flip_back_reverses_width_and_swaps_the_eight_pairs():
    maps = np.random.default_rng(1).random((2, 17, 4, 5)).astype(np.float32)
    back = flip_back(maps)
    assert back[0, 0].tolist() == maps[0, 0, :, ::-1].tolist()  # the nose has no pair
    for left, right in FLIP_PAIRS:
        assert np.array_equal(back[:, left], maps[:, right, :, ::-1])
        assert np.array_equal(back[:, right], maps[:, left, :, ::-1])
    assert np.array_equal(flip_back(back), maps)
    assert len(FLIP_PAIRS) == 8 and sorted(j for pair in FLIP_PAIRS for j in pair) == list(range(1, 17))


def test_average_flip_is_the_mean_of_normal_and_flipped_back():
    rng = np.random.default_rng(2)
    normal, flipped = rng.random((2, 3, 17, 64, 48)).astype(np.float32)
    average = average_flip(normal, flipped)
    assert average.dtype == np.float32
    np.testing.assert_array_equal(average, (normal + flip_back(flipped)) * np.float32(0.5))
    assert np.array_equal(average_flip(normal, flip_back(normal)), normal)  # consistent views: no change, no shift


def test_max_preds_takes_the_first_maximum_and_zeroes_non_positive_maps():
    maps = np.zeros((1, 3, 64, 48), dtype=np.float32) - 1
    maps[0, 0, 10, 7] = 2.0
    maps[0, 1, 5, 3] = maps[0, 1, 6, 2] = 0.5  # tie: the first in row-major order
    coords, maxvals = max_preds(maps)
    assert coords.dtype == np.float32 and coords.shape == (1, 3, 2) and maxvals.shape == (1, 3, 1)
    assert coords[0].tolist() == [[7, 10], [3, 5], [0, 0]]
    assert maxvals[0, :, 0].tolist() == [2.0, 0.5, -1.0]


def test_gaussian_blur_equals_opencv_on_the_zero_padded_map_rescaled_to_the_maximum():
    maps = np.random.default_rng(3).random((2, 4, 64, 48)).astype(np.float32)
    blurred = gaussian_blur(maps, 11)
    for n in range(2):
        for j in range(4):
            padded = np.zeros((64 + 10, 48 + 10))
            padded[5:-5, 5:-5] = maps[n, j]
            expected = cv2.GaussianBlur(padded, (11, 11), 0)[5:-5, 5:-5].astype(np.float32)
            expected *= maps[n, j].max() / expected.max()
            np.testing.assert_array_equal(blurred[n, j], expected)  # bit for bit: the same OpenCV arithmetic
    np.testing.assert_allclose(blurred.max(axis=(2, 3)), maps.max(axis=(2, 3)), rtol=1e-6)


@pytest.mark.parametrize("kernel", [3, 11])
def test_dark_decoding_finds_subpixel_peaks(kernel):
    rng = np.random.default_rng(4)
    points = np.stack([rng.uniform(2, 45, (6, 17)), rng.uniform(2, 61, (6, 17))], axis=2)
    coords, maxvals = decode(gaussian_maps(points), kernel)
    error = np.abs(coords - points).max(axis=2)
    inner = (points.min(axis=2) > 8) & (points[..., 0] < 39) & (points[..., 1] < 55)
    assert inner.sum() > 30 and error[inner].max() < 0.01  # the integer argmax alone is off by up to 0.5
    assert error.max() < 0.25  # near the border the blur's zero padding pulls the peak inwards a little
    assert np.all(maxvals > 0.88)


def test_taylor_leaves_points_near_the_border_and_flat_maps_alone():
    points = np.array([[[1.3, 30.2], [46.4, 30.2], [20.3, 1.2], [20.3, 62.4], [20.3, 30.4]]])
    maps = gaussian_maps(points)
    coords, _ = max_preds(maps)
    log_maps = np.log(np.maximum(gaussian_blur(maps, 11), np.float32(1e-10)))
    refined = taylor(log_maps, coords)
    assert np.array_equal(refined[0, :4], coords[0, :4])  # within 2 px of the border: integer argmax
    assert abs(refined[0, 4, 1] - 30.4) < 0.02
    flat = np.zeros((1, 1, 64, 48), dtype=np.float32) + np.float32(1e-10)
    flat_coords = np.array([[[20.0, 30.0]]], dtype=np.float32)
    assert np.array_equal(taylor(np.log(flat), flat_coords), flat_coords)  # singular Hessian: no step


def test_final_preds_maps_heatmap_peaks_back_to_the_image():
    rng = np.random.default_rng(5)
    centers = rng.uniform(100, 400, (3, 2)).astype(np.float32)
    scales = rng.uniform(0.5, 2, (3, 2)).astype(np.float32)
    points = np.stack([rng.uniform(4, 43, (3, 17)), rng.uniform(4, 59, (3, 17))], axis=2)
    preds, maxvals = final_preds(gaussian_maps(points), centers, scales, 11)
    expected = transform_back(points, centers, scales, HEATMAP)
    pixel = (200 * scales[:, 0] - 1) / 47  # image pixels per heatmap pixel
    assert np.all(np.abs(preds - expected).max(axis=(1, 2)) < 0.02 * pixel)
    assert preds.dtype == np.float64 and maxvals.shape == (3, 17, 1)


def test_decoding_is_vectorised_the_same_as_one_sample_at_a_time():
    rng = np.random.default_rng(6)
    maps = (rng.standard_normal((5, 17, 64, 48)) * 0.05).astype(np.float32)
    maps += gaussian_maps(np.stack([rng.uniform(0, 47, (5, 17)), rng.uniform(0, 63, (5, 17))], axis=2))
    centers = rng.uniform(100, 400, (5, 2)).astype(np.float32)
    scales = rng.uniform(0.5, 2, (5, 2)).astype(np.float32)
    batched = final_preds(maps, centers, scales)
    for n in range(5):
        single = final_preds(maps[n:n + 1], centers[n:n + 1], scales[n:n + 1])
        assert np.array_equal(single[0][0], batched[0][n]) and np.array_equal(single[1][0], batched[1][n])
