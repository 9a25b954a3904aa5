"""SuperPoint postprocessing: network outputs -> keypoints and descriptors, as upstream does it.

Upstream (eric-yyjau/pytorch-superpoint: `Val_model_heatmap`, `SuperPointFrontend_torch` in
`models/model_wrap.py`) visits every candidate pixel in a Python loop; here the same steps are
array operations. Each function names the upstream code it stands for. The steps, in order:

    semi (65 x Hc x Wc) --softmax, drop dustbin, depth-to-space--> heatmap (8Hc x 8Wc)
    heatmap --threshold--> candidates --grid NMS--> --border--> integer keypoints
    integer keypoints --bilinear sampling of desc (D x Hc x Wc)--> descriptors
    integer keypoints --5x5 soft-argmax on the heatmap--> sub-pixel keypoints

Keypoints are (x, y, confidence) rows, highest confidence first, in upstream's exact order.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CELL = 8  # pixels per side of a heatmap cell: fixed by the network (three 2x poolings)


@dataclass(frozen=True)
class Keypoints:
    points: np.ndarray  # (N, 3) float64: x, y (sub-pixel), confidence; highest confidence first
    descriptors: np.ndarray  # (N, D) float32, unit L2 norm, sampled at the integer points


def heatmap_from_semi(semi: np.ndarray) -> np.ndarray:
    """`utils/utils.py:flattenDetection`: softmax over the 65 channels, drop the dustbin (last
    channel), then depth-to-space: heat[y, x] = p[(y % 8) * 8 + x % 8, y // 8, x // 8]."""
    # torch's softmax, not NumPy's: their exp() differ in the last bit, and a one-ulp change can
    # swap two neighbouring confidences in NMS or move one across the threshold, so only the
    # same kernel as upstream's gives the identical point set.
    import torch  # slow to import; only callers that postprocess pay for it

    logits = torch.from_numpy(np.ascontiguousarray(semi, dtype=np.float32))
    probabilities = torch.nn.functional.softmax(logits[None], dim=1)[0].numpy()
    cells = probabilities[:-1]
    _, rows, cols = cells.shape
    return cells.reshape(CELL, CELL, rows, cols).transpose(2, 0, 3, 1).reshape(rows * CELL, cols * CELL)


def candidates(heatmap: np.ndarray, threshold: float) -> np.ndarray:
    """`getPtsFromHeatmap`'s first half: pixels with heat >= threshold as (x, y, heat) rows, in
    row-major order (np.where's order, which decides ties in the sorts that follow)."""
    rows, cols = np.nonzero(heatmap >= threshold)
    return np.stack([cols, rows, heatmap[rows, cols]], axis=1).astype(np.float64)


def grid_nms(points: np.ndarray, shape: tuple[int, int], radius: int) -> np.ndarray:
    """`nms_fast`: greedy NMS on the pixel grid, without its per-point loop.

    Upstream visits points by falling confidence; a point still standing is kept and wipes the
    (2r+1)^2 square around it. The same set falls out of rounds over the whole grid: a live
    point that outranks every live point in its square is kept (nothing above it in its square
    can still be kept, so the greedy pass keeps it too), then every live point in a kept point's
    square dies (the greedy pass would have wiped it: it ranks lower, or it was not live).

    `points` lie on distinct pixels (as `candidates` gives them). Returns the kept rows in
    upstream's order, highest confidence first (see `sort_like_upstream`).
    """
    count = len(points)
    if count == 0:
        return points
    # The rank is upstream's visiting order: the same argsort call on the same array, so equal
    # confidences are visited in the same order. float32 holds ranks exactly up to 2^24 pixels.
    visiting_order = np.argsort(-points[:, 2])
    priority = np.zeros(shape, dtype=np.float32)  # 0 = no point; higher = visited earlier
    index = np.zeros(shape, dtype=np.int64)
    cols, rows = points[:, 0].round().astype(np.int64), points[:, 1].round().astype(np.int64)
    priority[rows[visiting_order], cols[visiting_order]] = np.arange(count, 0, -1)
    index[rows, cols] = np.arange(count)

    kept = np.zeros(shape, dtype=bool)
    live = priority > 0
    while live.any():
        live_priority = np.where(live, priority, np.float32(0))
        winners = live & (live_priority == square_max(live_priority, radius))
        kept |= winners
        live &= square_max(winners.view(np.uint8), radius) == 0

    survivors = points[index[np.nonzero(kept)]]  # row-major, as `np.where(grid == -1)`
    return sort_like_upstream(survivors)


def sort_like_upstream(points: np.ndarray) -> np.ndarray:
    """Highest confidence first. `nms_fast` sorts by -confidence and `getPtsFromHeatmap` sorts
    again ascending and reverses; both calls are repeated because NumPy's default sort is not
    stable, and only the same calls order equal confidences the same way."""
    points = points[np.argsort(-points[:, 2])]
    return points[np.argsort(points[:, 2])[::-1]]


def square_max(grid: np.ndarray, radius: int) -> np.ndarray:
    """Maximum over the (2r+1)^2 square around each cell of a uint8 or float32 grid of values
    >= 0. cv2.dilate ignores cells beyond the edge, which for such values is the same as
    counting them 0; it is some 30 times faster than a NumPy sliding-window maximum."""
    return cv2.dilate(grid, np.ones((2 * radius + 1, 2 * radius + 1), dtype=np.uint8))


def remove_border(points: np.ndarray, shape: tuple[int, int], border: int) -> np.ndarray:
    """`getPtsFromHeatmap`'s last step: drop points closer than `border` to the image edge."""
    height, width = shape
    x, y = points[:, 0], points[:, 1]
    inside = (x >= border) & (x < width - border) & (y >= border) & (y < height - border)
    return points[inside]


def sample_descriptors(coarse: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`sample_desc_from_points`: bilinear sampling of the D x Hc x Wc map at the points, as
    `grid_sample(..., align_corners=True)` with the grid x / (W/2) - 1, y / (H/2) - 1 where
    W = 8 Wc, H = 8 Hc; then each descriptor divided by its L2 norm."""
    _, rows, cols = coarse.shape
    # align_corners=True maps -1..1 onto cell centres 0..Wc-1: u = x (Wc-1) / W. Since x < W,
    # u < Wc-1, so the right and lower neighbours always exist: no padding needed.
    u = points[:, 0] * (cols - 1) / (cols * CELL)
    v = points[:, 1] * (rows - 1) / (rows * CELL)
    u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    du, dv = u - u0, v - v0
    sampled = (
        coarse[:, v0, u0] * ((1 - du) * (1 - dv))
        + coarse[:, v0, u0 + 1] * (du * (1 - dv))
        + coarse[:, v0 + 1, u0] * ((1 - du) * dv)
        + coarse[:, v0 + 1, u0 + 1] * (du * dv)
    ).T
    return (sampled / np.linalg.norm(sampled, axis=1, keepdims=True)).astype(np.float32)


def refine_subpixel(points: np.ndarray, heatmap: np.ndarray, patch_size: int) -> np.ndarray:
    """`soft_argmax_points`: move each point to the soft-argmax of the patch_size^2 heatmap window
    centred on it (zero outside the heatmap); confidence unchanged.

    Upstream normalises the window by (sum + 1e-6), takes the log and runs torchgeometry's
    SpatialSoftArgmax2d: exp(l - max l) / (sum exp(l - max l) + 1e-6). Since exp(log w - log
    w_max) = w / w_max, that is the window over its maximum, normalised with the same 1e-6.
    """
    half = patch_size // 2
    offsets = np.arange(patch_size)
    cols, rows = points[:, 0].astype(np.int64), points[:, 1].astype(np.int64)
    padded = np.pad(heatmap.astype(np.float64), half)
    windows = padded[rows[:, None, None] + offsets[:, None], cols[:, None, None] + offsets]
    windows = windows / (windows.sum(axis=(1, 2), keepdims=True) + 1e-6)
    weights = windows / windows.max(axis=(1, 2), keepdims=True)
    weights = weights / (weights.sum(axis=(1, 2), keepdims=True) + 1e-6)
    refined = points.copy()
    refined[:, 0] += (weights * offsets).sum(axis=(1, 2)) - half
    refined[:, 1] += (weights * offsets[:, None]).sum(axis=(1, 2)) - half
    return refined


def extract_keypoints(
    semi: np.ndarray,
    coarse_descriptors: np.ndarray,
    *,
    detection_threshold: float,
    nms_radius: int,
    border: int,
    subpixel_patch_size: int,
) -> Keypoints:
    """The chain of `export.py:export_descriptor` for one image (subpixel enabled)."""
    heatmap = heatmap_from_semi(semi)
    points = grid_nms(candidates(heatmap, detection_threshold), heatmap.shape, nms_radius)
    points = remove_border(points, heatmap.shape, border)
    # Descriptors come from the integer points (`desc_to_sparseDesc` reads `pts_nms_batch`),
    # not from the refined ones.
    descriptors = sample_descriptors(coarse_descriptors, points)
    return Keypoints(refine_subpixel(points, heatmap, subpixel_patch_size), descriptors)
