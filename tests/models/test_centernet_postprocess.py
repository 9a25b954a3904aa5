"""CenterNet decoding without upstream (DESIGN.md section 4, link 3): the vectorised NumPy
decoder against plain loops that follow the description in models.md section 3.3 step by
step (per-class top K then overall top K, as upstream does), the affine transform against its
closed form, and batching against one image at a time. Parity with upstream's own code is in
test_centernet_upstream.py."""
from __future__ import annotations

import numpy as np
import pytest

from om_pipeline.models import centernet_postprocess as post


def random_outputs(seed: int, batch: int = 3, classes: int = 80, size: tuple[int, int] = (32, 40)):
    rng = np.random.default_rng(seed)
    height, width = size
    hm = rng.normal(-3.0, 2.0, (batch, classes, height, width)).astype(np.float32)
    wh = rng.uniform(0.5, 30.0, (batch, 2, height, width)).astype(np.float32)
    reg = rng.uniform(0.0, 1.0, (batch, 2, height, width)).astype(np.float32)
    return hm, wh, reg


def looped_decode(hm, wh, reg, k):
    """One image, written as loops: sigmoid; a pixel is kept when no 3x3 neighbour is larger;
    the k best kept pixels of each class; the k best of those; box from wh and reg at the peak."""
    scores = 1 / (1 + np.exp(-hm.astype(np.float64)))
    classes, height, width = scores.shape
    candidates = []
    for c in range(classes):
        kept = []
        for y in range(height):
            for x in range(width):
                window = scores[c, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
                value = scores[c, y, x] if scores[c, y, x] >= window.max() else 0.0
                kept.append((value, y, x))
        kept.sort(key=lambda item: -item[0])
        candidates += [(value, c, y, x) for value, y, x in kept[:k]]
    candidates.sort(key=lambda item: -item[0])
    rows = []
    for value, c, y, x in candidates[:k]:
        cx, cy = x + float(reg[0, y, x]), y + float(reg[1, y, x])
        w, h = float(wh[0, y, x]), float(wh[1, y, x])
        rows.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, value, c))
    return np.array(rows)


@pytest.mark.parametrize("seed", [0, 1])
def test_decoder_equals_the_loops(seed):
    hm, wh, reg = random_outputs(seed, classes=6, size=(24, 20))
    detections = post.ctdet_decode(hm, wh, reg, k=100)
    for i in range(hm.shape[0]):
        want = looped_decode(hm[i], wh[i], reg[i], 100)
        np.testing.assert_array_equal(detections.classes[i], want[:, 5].astype(int))
        np.testing.assert_allclose(detections.scores[i], want[:, 4], rtol=1e-6)
        np.testing.assert_allclose(detections.boxes[i], want[:, :4], rtol=0, atol=1e-5)


def test_a_batch_decodes_as_its_images_alone():
    hm, wh, reg = random_outputs(2, batch=4)
    together = post.ctdet_decode(hm, wh, reg, k=100)
    for i in range(4):
        alone = post.ctdet_decode(hm[i:i + 1], wh[i:i + 1], reg[i:i + 1], k=100)
        for field in ("boxes", "scores", "classes"):
            np.testing.assert_array_equal(getattr(together, field)[i], getattr(alone, field)[0])


def test_best_first_and_peaks_only():
    hm, wh, reg = random_outputs(3)
    detections = post.ctdet_decode(hm, wh, reg, k=100)
    assert np.all(np.diff(detections.scores, axis=1) <= 0)
    scores = post.sigmoid(hm)
    height, width = hm.shape[2:]
    for i, (classes, scores_i) in enumerate(zip(detections.classes, detections.scores)):
        for c, s in zip(classes[:10], scores_i[:10]):
            (y,), (x,) = np.nonzero(scores[i, c] == s)
            assert s == scores[i, c, max(0, y - 1):y + 2, max(0, x - 1):x + 2].max()


def test_peaks_are_the_3x3_maxima():
    rng = np.random.default_rng(4)
    scores = rng.random((2, 3, 9, 11)).astype(np.float32)
    scores[0, 0, 4, 4] = scores[0, 0, 4, 5] = 2.0  # equal neighbours: both kept (max_pool equality)
    got = post.peaks(scores)
    padded = np.pad(scores, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3)).max(axis=(-1, -2))
    np.testing.assert_array_equal(got, np.where(scores == windows, scores, 0))
    assert got[0, 0, 4, 4] == got[0, 0, 4, 5] == 2.0


def test_fewer_peaks_than_k():
    hm = np.full((1, 2, 4, 4), -5.0, dtype=np.float32)
    hm[0, 1, 2, 3] = 3.0
    wh = np.ones((1, 2, 4, 4), dtype=np.float32)
    reg = np.zeros((1, 2, 4, 4), dtype=np.float32)
    detections = post.ctdet_decode(hm, wh, reg, k=100)
    assert detections.scores.shape == (1, 32)  # every position of every class, the peak first
    assert detections.classes[0, 0] == 1
    np.testing.assert_array_equal(detections.boxes[0, 0], [2.5, 1.5, 3.5, 2.5])


def test_without_reg_centres_sit_mid_pixel():
    hm, wh, _ = random_outputs(5, batch=1)
    with_zero_reg = post.ctdet_decode(hm, wh, np.full_like(wh, 0.5), k=20)
    without = post.ctdet_decode(hm, wh, None, k=20)
    np.testing.assert_array_equal(with_zero_reg.boxes, without.boxes)


@pytest.mark.parametrize("height, width", [(480, 640), (640, 427), (333, 500), (612, 612)])
def test_affine_transform_is_the_letterbox(height, width):
    center, scale = post.center_and_scale(height, width)
    assert scale == max(height, width) and tuple(center) == (width / 2, height / 2)
    center = center.astype(np.float64)
    forward = post.affine_transform(center, scale, (512, 512))
    # x' = (x - c_x) 512 / s + 256, y' likewise: no (size - 1) terms.
    np.testing.assert_allclose(forward, [[512 / scale, 0, 256 - center[0] * 512 / scale],
                                         [0, 512 / scale, 256 - center[1] * 512 / scale]], rtol=0, atol=1e-9)
    inverse = post.affine_transform(center, scale, (128, 128), inverse=True)
    np.testing.assert_allclose(inverse, [[scale / 128, 0, center[0] - 64 * scale / 128],
                                         [0, scale / 128, center[1] - 64 * scale / 128]], rtol=0, atol=1e-9)


def test_boxes_map_back_to_the_image():
    boxes = np.array([[[64, 64, 96, 80], [0, 0, 128, 128]]], dtype=np.float32)
    mapped = post.to_image(boxes, np.array([[320.0, 240.0]], dtype=np.float32), np.array([640.0]), (128, 128))
    np.testing.assert_allclose(mapped[0], [[320, 240, 480, 320], [0, -80, 640, 560]], atol=1e-4)
    assert mapped.dtype == np.float32


def test_keep_top_is_a_no_op_at_upstreams_defaults_and_cuts_otherwise():
    scores = np.linspace(1, 0, 120, dtype=np.float32)
    assert post.keep_top(scores[:100], 100).all()
    keep = post.keep_top(scores, 100)
    assert keep.sum() == 100 and keep[:100].all()
