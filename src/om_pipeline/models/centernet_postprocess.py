"""CenterNet ctdet decoding in NumPy, vectorised over the batch.

Reproduces, for a batch of images at once, what xingyizhou/CenterNet does per image in
`detectors/ctdet.py` (`hm.sigmoid_()`), `models/decode.py:ctdet_decode` and
`utils/post_process.py:ctdet_post_process` (+ `merge_outputs`):

1. scores = sigmoid(hm); peaks = scores where scores equals its 3x3 neighbourhood maximum
   (max-pool, stride 1, padding 1), else 0;
2. the K best peaks over all classes and positions. Upstream takes the K best per class and
   then the K best of those; any element of the overall top K is within its class's top K, so
   the two agree (up to the order of exactly equal scores, which torch.topk leaves unspecified
   too); class = index // (H W), y = (index mod H W) // W, x = index mod W;
3. x += reg[0], y += reg[1] at the peak; box = (x - w/2, y - h/2, x + w/2, y + h/2) with
   (w, h) = wh at the peak, in float32 as upstream;
4. both corners through the inverse of the preprocessing's affine transform (output grid ->
   image pixels), computed in float64 and stored in float32 as upstream;
5. `merge_outputs`: when K exceeds max_per_image, keep the scores at or above the
   max_per_image-th best (a no-op for upstream's K = max_per_image = 100).

Upstream applies no score threshold before COCO evaluation; neither do we.

Whole-batch array operations do the work (sigmoid, the peak test, gathers, boxes, the affine
map); two small loops remain: cv2.dilate per heatmap plane (the max filter) and the top-K
selection per image, which runs over that image's peaks only (selection over a row that is
mostly zeros is slow). `benchmarks/bench_centernet_decode.py` times it against upstream.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


# ---------------------------------------------------------------- the affine transform


def affine_transform(center: np.ndarray, scale: float | np.ndarray, output_size: tuple[int, int], inverse: bool = False) -> np.ndarray:
    """CenterNet's `get_affine_transform(center, scale, rot=0, output_size)`: the 2x3 matrix
    mapping the square of side `scale` centred on `center` onto an `output_size` (width, height)
    image, centre to centre, without (size - 1) terms. Built as upstream builds it (three
    float32 point pairs through cv2.getAffineTransform) so the float64 matrix is the same to the
    last bit: (centre, centre - (0, s/2), centre - (s/2, s/2)) -> the same points of the output."""
    side = np.float32(scale[0] if isinstance(scale, (np.ndarray, list, tuple)) else scale)
    out_w, out_h = output_size
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = np.asarray(center, dtype=np.float32)
    src[1] = src[0] + np.array([0.0, -0.5 * float(side)])
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = dst[0] + np.array([0.0, -0.5 * out_w])
    for points in (src, dst):  # the third point: the second turned 90 degrees about the first
        step = points[0] - points[1]
        points[2] = points[1] + np.array([-step[1], step[0]], dtype=np.float32)
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def center_and_scale(height: int, width: int) -> tuple[np.ndarray, float]:
    """Fixed-resolution test (no --keep_res): c = (W/2, H/2) as float32, s = max(H, W)."""
    return np.array([width / 2.0, height / 2.0], dtype=np.float32), float(max(height, width))


# ---------------------------------------------------------------- decoding


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float32, in place on a copy (torch's float32 sigmoid differs from it
    by at most one unit in the last place on some values; boxes and classes do not depend on it)."""
    scores = np.negative(np.asarray(logits, dtype=np.float32))
    np.exp(scores, out=scores)
    scores += np.float32(1)
    return np.reciprocal(scores, out=scores)


_NEIGHBOURHOOD = np.ones((3, 3), dtype=np.uint8)


def neighbourhood_max(scores: np.ndarray) -> np.ndarray:
    """The 3x3 maximum (max_pool2d, stride 1, padding 1 with -inf) of every (H, W) plane, by
    cv2.dilate one plane at a time (the fastest max filter at hand)."""
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    planes = scores.reshape(-1, *scores.shape[-2:])
    result = np.empty_like(planes)
    for plane, out in zip(planes, result):
        cv2.dilate(plane, _NEIGHBOURHOOD, dst=out)
    return result.reshape(scores.shape)


def peaks(scores: np.ndarray) -> np.ndarray:
    """scores * (maxpool3x3(scores) == scores): `_nms` of models/decode.py, for (..., H, W)."""
    return np.where(neighbourhood_max(scores) == scores, scores, np.float32(0))


@dataclass(frozen=True)
class Detections:
    """Per image of the batch, K rows each, best score first."""

    boxes: np.ndarray  # (N, K, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N, K) float32
    classes: np.ndarray  # (N, K) int64, 0-based


def ctdet_decode(hm: np.ndarray, wh: np.ndarray, reg: np.ndarray | None, k: int = 100, logits: bool = True) -> Detections:
    """hm (N, C, H, W) logits (or scores with logits=False), wh and reg (N, 2, H, W) ->
    the K best detections per image, boxes in output-grid units."""
    hm = np.asarray(hm, dtype=np.float32)
    batch, classes, height, width = hm.shape
    scores = sigmoid(hm) if logits else hm
    kept = (neighbourhood_max(scores) == scores).reshape(batch, -1)
    flat = scores.reshape(batch, -1)
    k = min(k, flat.shape[1])
    index = np.stack([_top_k(row, keep, k) for row, keep in zip(flat, kept)])
    top_scores = np.where(np.take_along_axis(kept, index, axis=1), np.take_along_axis(flat, index, axis=1), np.float32(0))

    cls, spatial = np.divmod(index, height * width)
    ys = (spatial // width).astype(np.float32)
    xs = (spatial % width).astype(np.float32)
    if reg is not None:
        reg_at = _gather(reg, spatial)
        xs = xs + reg_at[:, 0]
        ys = ys + reg_at[:, 1]
    else:
        xs = xs + np.float32(0.5)
        ys = ys + np.float32(0.5)
    wh_at = _gather(wh, spatial)
    half_w = wh_at[:, 0] / np.float32(2)
    half_h = wh_at[:, 1] / np.float32(2)
    boxes = np.stack([xs - half_w, ys - half_h, xs + half_w, ys + half_h], axis=-1)
    return Detections(boxes.astype(np.float32), top_scores, cls.astype(np.int64))


def _top_k(row: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best peaks of a row (scores, peak mask), best first, equal scores by
    index; non-peaks count as 0 (upstream multiplies them by 0). Selection runs over the peaks
    (a few percent of the row): over a row that is mostly zeros it is slow."""
    candidates = np.flatnonzero(keep)
    values = row[candidates]
    if len(candidates) < k or values.min(initial=np.inf) <= 0:
        # Too few peaks (or peaks not above the zeros): select over the whole peak map.
        values = np.where(keep, row, np.float32(0))
        candidates = np.arange(len(row))
    if len(candidates) > k:
        chosen = np.argpartition(values, len(values) - k)[len(values) - k:]
        candidates, values = candidates[chosen], values[chosen]
    return candidates[np.lexsort((candidates, -values))]


def _gather(feature: np.ndarray, spatial: np.ndarray) -> np.ndarray:
    """feature (N, 2, H, W) at spatial indices (N, K) -> (N, 2, K) float32."""
    feature = np.asarray(feature, dtype=np.float32)
    flat = feature.reshape(feature.shape[0], feature.shape[1], -1)
    return np.take_along_axis(flat, spatial[:, np.newaxis, :], axis=2)


def to_image(boxes: np.ndarray, centers: np.ndarray, scales: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """`ctdet_post_process`'s `transform_preds` on both corners, for the whole batch: boxes
    (N, K, 4) in output-grid units -> image pixels (float64 arithmetic, float32 result)."""
    matrices = np.stack([affine_transform(c, s, output_size, inverse=True) for c, s in zip(centers, scales)])  # (N, 2, 3)
    corners = boxes.reshape(boxes.shape[0], -1, 2).astype(np.float64)  # (N, 2K, 2)
    mapped = corners @ matrices[:, :, :2].transpose(0, 2, 1) + matrices[:, np.newaxis, :, 2]
    return mapped.reshape(boxes.shape).astype(np.float32)


def keep_top(scores: np.ndarray, max_per_image: int) -> np.ndarray:
    """`merge_outputs`' cut for one image: a mask of the scores >= the max_per_image-th best."""
    if len(scores) <= max_per_image:
        return np.ones(len(scores), dtype=bool)
    kth = len(scores) - max_per_image
    return scores >= np.partition(scores, kth)[kth]
