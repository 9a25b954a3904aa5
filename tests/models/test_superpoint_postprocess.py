"""SuperPoint postprocessing on constructed inputs with known answers.

`reference_nms_fast` below is upstream's `nms_fast` algorithm written out plainly from its
description (sort by confidence, visit in that order, a point not yet wiped is kept and wipes its
(2r+1)^2 square, survivors sorted by confidence); `grid_nms` must return the same rows in the
same order.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from om_pipeline.models.superpoint_postprocess import (
    CELL,
    candidates,
    extract_keypoints,
    grid_nms,
    heatmap_from_semi,
    refine_subpixel,
    remove_border,
    sample_descriptors,
    square_max,
)

SHAPE = (240, 320)


def reference_nms_fast(points: np.ndarray, shape: tuple[int, int], radius: int) -> np.ndarray:
    order = np.argsort(-points[:, 2])
    state = np.zeros((shape[0] + 2 * radius, shape[1] + 2 * radius), dtype=int)  # 1 pending, -1 kept
    index = np.zeros(shape, dtype=int)
    for i in order:
        x, y = int(round(points[i, 0])), int(round(points[i, 1]))
        state[y + radius, x + radius] = 1
        index[y, x] = i
    for i in order:
        x, y = int(round(points[i, 0])) + radius, int(round(points[i, 1])) + radius
        if state[y, x] == 1:
            state[y - radius:y + radius + 1, x - radius:x + radius + 1] = 0
            state[y, x] = -1
    rows, cols = np.nonzero(state[radius:-radius, radius:-radius] == -1)
    kept = points[index[rows, cols]]
    kept = kept[np.argsort(-kept[:, 2])]
    return kept[np.argsort(kept[:, 2])[::-1]]


def heatmap_like_network(rng: np.random.Generator, peaked: float) -> np.ndarray:
    """A heatmap from random logits: `peaked` > 0 gives a trained-looking map (dustbin high,
    a few strong cells); 0 gives the near-uniform map of an untrained network."""
    semi = rng.normal(0.0, 1.0, size=(65, SHAPE[0] // CELL, SHAPE[1] // CELL)).astype(np.float32)
    semi[64] += peaked
    strong = rng.random(semi.shape[1:]) < 0.4
    channel = rng.integers(0, 64, size=semi.shape[1:])
    rows, cols = np.nonzero(strong)
    semi[channel[rows, cols], rows, cols] += 1.5 * peaked
    return heatmap_from_semi(semi)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("peaked", [0.0, 4.0])
def test_grid_nms_equals_reference_on_network_like_heatmaps(seed, peaked):
    heatmap = heatmap_like_network(np.random.default_rng(seed), peaked)
    points = candidates(heatmap, 0.015)
    assert len(points) > 500
    np.testing.assert_array_equal(grid_nms(points, SHAPE, 4), reference_nms_fast(points, SHAPE, 4))


@pytest.mark.parametrize("radius", [1, 2, 4, 7])
def test_grid_nms_equals_reference_with_many_equal_confidences(radius):
    # Two decimals: thousands of ties, so the visiting order among equal values matters.
    heatmap = np.round(np.random.default_rng(radius).random(SHAPE), 2).astype(np.float32)
    points = candidates(heatmap, 0.5)
    np.testing.assert_array_equal(grid_nms(points, SHAPE, radius), reference_nms_fast(points, SHAPE, radius))


def test_grid_nms_is_greedy_not_local_maximum():
    # A > B > C four pixels apart in a row: A wipes B; C survives because B, which would have
    # wiped it, was wiped first. A plain "local maximum in the window" test would drop C.
    points = np.array([[100, 50, 0.9], [104, 50, 0.8], [108, 50, 0.7], [150, 50, 0.1]])
    kept = grid_nms(points, SHAPE, 4)
    np.testing.assert_array_equal(kept, points[[0, 2, 3]])


def test_grid_nms_keeps_points_exactly_outside_the_radius():
    points = np.array([[10, 10, 0.5], [15, 10, 0.6], [15, 14, 0.4], [0, 0, 0.3], [319, 239, 0.2]])
    kept = grid_nms(points, SHAPE, 4)
    np.testing.assert_array_equal(kept, points[[1, 0, 3, 4]])  # (15,14) is 4 below (15,10): wiped


def test_grid_nms_without_points():
    assert grid_nms(np.zeros((0, 3)), SHAPE, 4).shape == (0, 3)
    one = np.array([[3.0, 4.0, 0.5]])
    np.testing.assert_array_equal(grid_nms(one, SHAPE, 4), one)


def test_square_max_counts_outside_as_zero():
    grid = np.zeros((5, 6), dtype=np.float32)
    grid[0, 0] = 7
    grid[4, 5] = 3
    result = square_max(grid, 1)
    assert result[:2, :2].tolist() == [[7, 7], [7, 7]]
    assert result[3:, 4:].tolist() == [[3, 3], [3, 3]]
    assert result[2, 2] == 0


def test_heatmap_from_semi_places_each_channel_in_its_cell_pixel():
    semi = np.zeros((65, 3, 4), dtype=np.float32)
    semi[64] = 10.0  # dustbin wins everywhere ...
    semi[19, 2, 1] = 30.0  # ... except cell (row 2, col 1), where channel 19 = (y 2, x 3) does
    heatmap = heatmap_from_semi(semi)
    assert heatmap.shape == (24, 32)
    assert np.unravel_index(heatmap.argmax(), heatmap.shape) == (2 * CELL + 19 // CELL, 1 * CELL + 19 % CELL)
    assert heatmap.max() == pytest.approx(1.0, abs=1e-6)


def test_heatmap_from_semi_equals_softmax_then_pixel_shuffle():
    semi = np.random.default_rng(0).normal(size=(65, 30, 40)).astype(np.float32)
    expected = torch.nn.functional.pixel_shuffle(torch.softmax(torch.from_numpy(semi), 0)[None, :64], CELL)[0, 0]
    np.testing.assert_array_equal(heatmap_from_semi(semi), expected.numpy())


def test_candidates_use_an_inclusive_threshold_in_row_major_order():
    heatmap = np.zeros((4, 5), dtype=np.float32)
    heatmap[3, 0] = 0.5
    heatmap[1, 4] = np.float32(0.015)
    heatmap[1, 2] = 0.0149
    points = candidates(heatmap, np.float32(0.015))
    np.testing.assert_allclose(points, [[4, 1, 0.015], [0, 3, 0.5]], rtol=1e-6)


def test_remove_border_keeps_the_inner_band():
    points = np.array([[3, 100, 1], [4, 100, 1], [315, 100, 1], [316, 100, 1], [100, 3, 1], [100, 235, 1], [100, 236, 1]], float)
    np.testing.assert_array_equal(remove_border(points, SHAPE, 4)[:, :2], [[4, 100], [315, 100], [100, 235]])


def test_refine_subpixel_moves_to_the_centre_of_mass_of_the_window():
    heatmap = np.zeros(SHAPE, dtype=np.float32)
    heatmap[50, 100] = 1.0
    heatmap[50, 101] = 1.0  # equal right neighbour: half a pixel right
    heatmap[120, 200] = 0.6
    heatmap[121, 200] = 0.2  # below, a third of the centre: y + 0.2 / 0.8
    heatmap[120, 198] = 0.2  # two left: x - 2 * 0.2 / 1.0 after adding it
    heatmap[30, 60] = 0.5  # alone: stays put
    points = np.array([[100, 50, 0.9], [200, 120, 0.6], [60, 30, 0.5]])
    refined = refine_subpixel(points, heatmap, 5)
    np.testing.assert_allclose(refined[:, :2], [[100.5, 50], [200 - 0.4, 120 + 0.2], [60, 30]], atol=1e-5)
    np.testing.assert_array_equal(refined[:, 2], points[:, 2])


def test_refine_subpixel_near_the_edge_counts_outside_as_zero():
    heatmap = np.zeros(SHAPE, dtype=np.float32)
    heatmap[0, 0] = 1.0
    heatmap[0, 1] = 1.0
    np.testing.assert_allclose(refine_subpixel(np.array([[0.0, 0.0, 1.0]]), heatmap, 5)[0, :2], [0.5, 0.0], atol=1e-5)


def test_sample_descriptors_equals_grid_sample_with_align_corners():
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(256, 30, 40)).astype(np.float32)
    points = np.stack([rng.integers(0, 320, 500), rng.integers(0, 240, 500), rng.random(500)], axis=1).astype(np.float64)
    grid = torch.from_numpy(np.stack([points[:, 0] / 160 - 1, points[:, 1] / 120 - 1], axis=1)).float().view(1, 1, -1, 2)
    expected = torch.nn.functional.grid_sample(torch.from_numpy(coarse)[None], grid, align_corners=True)[0, :, 0].T.numpy()
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    got = sample_descriptors(coarse, points)
    assert got.dtype == np.float32 and got.shape == (500, 256)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_sample_descriptors_of_a_constant_map_is_that_unit_vector():
    direction = np.random.default_rng(1).normal(size=8).astype(np.float32)
    coarse = np.broadcast_to(direction[:, None, None], (8, 30, 40))
    got = sample_descriptors(coarse, np.array([[4.0, 4.0, 1.0], [315.0, 235.0, 1.0]]))
    np.testing.assert_allclose(got, np.tile(direction / np.linalg.norm(direction), (2, 1)), atol=1e-6)


def test_extract_keypoints_chains_the_steps():
    rng = np.random.default_rng(3)
    semi = rng.normal(size=(65, 30, 40)).astype(np.float32)
    semi[64] += 4.0
    coarse = rng.normal(size=(256, 30, 40)).astype(np.float32)
    keypoints = extract_keypoints(semi, coarse, detection_threshold=0.015, nms_radius=4, border=4, subpixel_patch_size=5)
    heatmap = heatmap_from_semi(semi)
    integer = remove_border(grid_nms(candidates(heatmap, 0.015), SHAPE, 4), SHAPE, 4)
    assert len(integer) > 50
    np.testing.assert_array_equal(keypoints.descriptors, sample_descriptors(coarse, integer))
    np.testing.assert_array_equal(keypoints.points, refine_subpixel(integer, heatmap, 5))
    assert np.all(np.abs(keypoints.points[:, :2] - integer[:, :2]) <= 2)
    assert np.all(np.diff(keypoints.points[:, 2]) <= 0)
