"""TransPose geometry and heatmap decoding, vectorised over a batch (NumPy + OpenCV only).

What upstream does (yangsenius/TransPose @ dab9007, `lib/utils/transforms.py`,
`lib/core/inference.py`, `lib/core/function.py:validate`), and so what this module does:

- the crop: the DARK/UDP affine with `(size - 1)` terms: a box centre `c` and scale `s`
  (in units of pixel_std = 200) map to an output of `(w, h)` pixels by the uniform factor
  `k = (w - 1) / (200 s_w - 1)`, `x' = k (x - c_x) + (w - 1) / 2`, `y' = k (y - c_y) + (h - 1) / 2`.
  Upstream builds it from three float32 points and `cv2.getAffineTransform`; so do we, with the
  same float32 roundings, so the matrices agree to the last bits.
- the flip test: the heatmaps of the W-flipped input are flipped back (W reversed, the 8
  left/right joint pairs swapped) and averaged with the normal ones, in float32. No one-pixel
  shift (`TEST.SHIFT_HEATMAP` is read nowhere upstream).
- DARK decoding: argmax per joint (coordinates zeroed where the maximum is <= 0); a Gaussian
  blur (kernel 11 from the experiment YAML, sigma 0 -> OpenCV's 2.0) on the zero-padded map,
  rescaled so its maximum equals the original one; log of max(map, 1e-10); a second-order
  Taylor step `-H^-1 g` at the integer argmax when it is at least 2 pixels from the border and
  the Hessian is not singular. The confidences are the *unblurred* maxima.
- back to the image: the inverse affine of the heatmap size.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# COCO: 0 nose, 1/2 eyes, 3/4 ears, 5/6 shoulders, 7/8 elbows, 9/10 wrists, 11/12 hips,
# 13/14 knees, 15/16 ankles (lib/dataset/coco.py flip_pairs).
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
PIXEL_STD = 200.0


# ---------------------------------------------------------------- the affine crop

def _triangles(centers: np.ndarray, scales: np.ndarray, output_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The three source and destination points upstream's get_affine_transform builds
    (rotation 0, no shift), as float32 arrays of shape (N, 3, 2), rounded where it rounds."""
    centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
    count = len(centers)
    width, height = output_size
    source_width = scales[:, 0] * np.float32(PIXEL_STD)  # float32, as scale * 200.0
    half = (source_width - np.float32(1)) * np.float32(-0.5)  # float32, as (src_w - 1) * -0.5

    src = np.zeros((count, 3, 2), dtype=np.float32)
    src[:, 0] = centers
    # center (float32) + [0, half] (a list of float64) is computed in float64, then stored in float32
    src[:, 1, 0] = centers[:, 0]
    src[:, 1, 1] = (centers[:, 1].astype(np.float64) + half.astype(np.float64)).astype(np.float32)
    src[:, 2] = _third_point(src[:, 0], src[:, 1])

    dst = np.zeros((count, 3, 2), dtype=np.float32)
    dst[:, 0] = [(width - 1) * 0.5, (height - 1) * 0.5]
    dst[:, 1] = np.array([(width - 1) * 0.5, (height - 1) * 0.5]) + np.array([0, (width - 1) * -0.5], np.float32)
    dst[:, 2] = _third_point(dst[:, 0], dst[:, 1])
    return src, dst


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = a - b
    return b + np.stack([-direction[:, 1], direction[:, 0]], axis=1).astype(np.float32)


def _solve_affine(points_from: np.ndarray, points_to: np.ndarray) -> np.ndarray:
    """(N, 2, 3) float64 matrices mapping three points onto three points, batched
    (what cv2.getAffineTransform solves, one matrix at a time)."""
    lhs = np.concatenate([points_from.astype(np.float64), np.ones((len(points_from), 3, 1))], axis=2)
    return np.linalg.solve(lhs, points_to.astype(np.float64)).transpose(0, 2, 1)


def affine_transforms(centers, scales, output_size: Sequence[int], inverse: bool = False) -> np.ndarray:
    """(N, 2, 3): image -> output (or output -> image with `inverse`), for N boxes."""
    src, dst = _triangles(centers, scales, output_size)
    return _solve_affine(dst, src) if inverse else _solve_affine(src, dst)


def crop_transform(center, scale, output_size: Sequence[int]) -> np.ndarray:
    """One box's 2x3 image -> crop matrix, through cv2.getAffineTransform like upstream, so
    cv2.warpAffine gets bit-identical coefficients."""
    src, dst = _triangles(center, scale, output_size)
    return cv2.getAffineTransform(src[0], dst[0])


def transform_back(coords: np.ndarray, centers, scales, heatmap_size: Sequence[int]) -> np.ndarray:
    """Heatmap coordinates (N, J, 2) -> image coordinates (float64), upstream's transform_preds."""
    matrices = affine_transforms(centers, scales, heatmap_size, inverse=True)
    homogeneous = np.concatenate([coords.astype(np.float64), np.ones(coords.shape[:2] + (1,))], axis=2)
    return np.einsum("nij,nkj->nki", matrices, homogeneous)


# ---------------------------------------------------------------- flip test

def flip_back(heatmaps: np.ndarray, pairs: Sequence[tuple[int, int]] = FLIP_PAIRS) -> np.ndarray:
    """Heatmaps of the flipped input (N, J, H, W) -> heatmaps in the normal input's frame."""
    flipped = heatmaps[..., ::-1]
    order = np.arange(heatmaps.shape[1])
    for left, right in pairs:
        order[left], order[right] = right, left
    return np.ascontiguousarray(flipped[:, order])


def average_flip(normal: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """(normal + flip_back(flipped)) * 0.5, in float32 as upstream's torch code computes it."""
    normal = np.asarray(normal, dtype=np.float32)
    return (normal + flip_back(np.asarray(flipped, dtype=np.float32))) * np.float32(0.5)


# ---------------------------------------------------------------- DARK decoding

def max_preds(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax per joint: coords (N, J, 2) float32 (x, y), maxvals (N, J, 1) float32.
    Coordinates are zeroed where the maximum is not positive (upstream's get_max_preds)."""
    count, joints, _, width = heatmaps.shape
    flat = heatmaps.reshape(count, joints, -1)
    index = np.argmax(flat, axis=2).astype(np.float32)
    maxvals = np.amax(flat, axis=2)[..., None]
    coords = np.stack([index % width, np.floor(index / width)], axis=2)
    return coords * (maxvals > 0).astype(np.float32), maxvals


def gaussian_blur(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """Blur of each zero-padded map with an OpenCV Gaussian kernel (sigma from the size), then
    rescaled to the original maximum; float32 out, like upstream's in-place gaussian_blur."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    count, joints, height, width = heatmaps.shape
    border = (kernel - 1) // 2
    padded = np.pad(heatmaps.astype(np.float64), ((0, 0), (0, 0), (border, border), (border, border)))
    # One OpenCV call for the whole batch: the zero-padded maps stacked into one tall image. The
    # kernel reaches `border` pixels, so an output pixel inside a map only reads its own padded
    # block; OpenCV's border mode touches only the padding, which is cropped, as in upstream
    # (pad by `border`, blur each map, crop) — the same arithmetic, one call instead of N x J.
    tall = padded.reshape(-1, width + 2 * border)
    blurred = cv2.GaussianBlur(tall, (kernel, kernel), 0).reshape(padded.shape)
    blurred = blurred[..., border:border + height, border:border + width].astype(np.float32)
    original_max = heatmaps.reshape(count, joints, -1).max(axis=2)
    blurred_max = blurred.reshape(count, joints, -1).max(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero map: NaN, as upstream
        blurred *= (original_max / blurred_max)[..., None, None]
    return blurred


def taylor(log_heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Second-order refinement at the integer maxima: coords - H^-1 g where the point is at
    least 2 pixels inside the map and det(H) != 0 (float32 derivatives, as upstream)."""
    count, joints, height, width = log_heatmaps.shape
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    inside = (px > 1) & (px < width - 2) & (py > 1) & (py < height - 2)
    x = np.clip(px, 2, width - 3)
    y = np.clip(py, 2, height - 3)
    n = np.arange(count)[:, None]
    j = np.arange(joints)[None, :]

    def at(dy: int, dx: int) -> np.ndarray:
        return log_heatmaps[n, j, y + dy, x + dx]

    center = at(0, 0)
    dx = np.float32(0.5) * (at(0, 1) - at(0, -1))
    dy = np.float32(0.5) * (at(1, 0) - at(-1, 0))
    dxx = np.float32(0.25) * (at(0, 2) - np.float32(2) * center + at(0, -2))
    dxy = np.float32(0.25) * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = np.float32(0.25) * (at(2, 0) - np.float32(2) * center + at(-2, 0))
    determinant = dxx * dyy - dxy ** 2
    refine = inside & (determinant != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = determinant.astype(np.float64)
        offset_x = -(dyy * dx.astype(np.float64) - dxy * dy.astype(np.float64)) / det
        offset_y = -(dxx * dy.astype(np.float64) - dxy * dx.astype(np.float64)) / det
    offsets = np.stack([offset_x, offset_y], axis=2).astype(np.float32)
    return np.where(refine[..., None], coords + offsets, coords).astype(np.float32)


def decode(heatmaps: np.ndarray, blur_kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """Heatmap-space keypoints (N, J, 2) float32 and confidences (N, J, 1): upstream's
    get_final_preds without the transform back."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    coords, maxvals = max_preds(heatmaps)
    blurred = gaussian_blur(heatmaps, blur_kernel)
    with np.errstate(invalid="ignore"):
        log_heatmaps = np.log(np.maximum(blurred, np.float32(1e-10)))
    return taylor(log_heatmaps, coords), maxvals


def final_preds(heatmaps: np.ndarray, centers, scales, blur_kernel: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Image-space keypoints (N, J, 2) float64 and confidences (N, J, 1) float32 from averaged
    heatmaps (N, J, H, W) and the boxes' centres and scales: upstream's get_final_preds."""
    coords, maxvals = decode(heatmaps, blur_kernel)
    height, width = np.asarray(heatmaps).shape[2:]
    return transform_back(coords, centers, scales, (width, height)), maxvals
