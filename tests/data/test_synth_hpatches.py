"""The synthetic HPatches dataset: layout, determinism, and homographies that match the pixels."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from om_pipeline.data.synth_hpatches import SCENES, sequence_name, synthesize
from om_pipeline.errors import UserError
from om_pipeline.models import superpoint

pytest.importorskip("skimage", reason="the synthetic dataset is made from scikit-image's bundled photographs")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("synth") / "hpatches", sequences=2, seed=0)


def digest(folder: Path) -> str:
    hashes = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        hashes.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return hashes.hexdigest()


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_writes_the_hpatches_layout_the_plugin_reads(dataset):
    assert sorted(p.name for p in dataset.iterdir()) == ["i_coffee", "v_astronaut"]
    samples = superpoint.list_samples(dataset, superpoint.Settings())
    assert [s.id for s in samples[:6]] == [f"i_coffee_{n}" for n in range(1, 7)]
    assert len(samples) == 12
    for sample in samples:
        assert superpoint.preprocess(sample, superpoint.Settings())[0].shape == (1, 240, 320)
    assert np.loadtxt(dataset / "v_astronaut" / "H_1_6").shape == (3, 3)


def test_image_1_is_the_bundled_photograph(dataset):
    import skimage.data

    np.testing.assert_array_equal(read_rgb(dataset / "v_astronaut" / "1.ppm"), cv2.resize(skimage.data.astronaut(), (480, 480), interpolation=cv2.INTER_AREA))


def test_same_seed_same_bytes_other_seed_other_images(dataset, tmp_path):
    again = synthesize(tmp_path / "again", sequences=2, seed=0)
    assert digest(again) == digest(dataset)
    other = synthesize(tmp_path / "other", sequences=1, seed=1)
    assert digest(other / "v_astronaut") != digest(dataset / "v_astronaut")


def test_more_sequences_keep_the_first_ones(dataset, tmp_path):
    more = synthesize(tmp_path / "more", sequences=3, seed=0)
    assert digest(more / "v_astronaut") == digest(dataset / "v_astronaut")
    assert (more / sequence_name(2)).is_dir()


def test_viewpoint_images_are_image_1_warped_by_their_homography(dataset):
    first = cv2.cvtColor(read_rgb(dataset / "v_astronaut" / "1.ppm"), cv2.COLOR_RGB2GRAY).astype(np.float64)
    height, width = first.shape
    for k in range(2, 7):
        homography = np.loadtxt(dataset / "v_astronaut" / f"H_1_{k}")
        assert abs(np.linalg.det(homography)) > 0.1
        image_k = cv2.cvtColor(read_rgb(dataset / "v_astronaut" / f"{k}.ppm"), cv2.COLOR_RGB2GRAY).astype(np.float64)
        predicted = cv2.warpPerspective(first, homography, (width, height))
        seen = cv2.warpPerspective(np.ones_like(first), homography, (width, height)) > 0.99
        assert seen.mean() > 0.6  # most of image 1 stays in view
        with_h = np.corrcoef(predicted[seen], image_k[seen])[0, 1]
        with_inverse = np.corrcoef(cv2.warpPerspective(first, np.linalg.inv(homography), (width, height))[seen], image_k[seen])[0, 1]
        assert with_h > 0.9 and with_h > with_inverse + 0.1  # H_1_k maps image 1 onto image k, not back


def test_illumination_sequences_change_light_not_geometry(dataset):
    first = read_rgb(dataset / "i_coffee" / "1.ppm").astype(np.float64)
    for k in range(2, 7):
        np.testing.assert_array_equal(np.loadtxt(dataset / "i_coffee" / f"H_1_{k}"), np.eye(3))
        image_k = read_rgb(dataset / "i_coffee" / f"{k}.ppm").astype(np.float64)
        assert np.corrcoef(first.ravel(), image_k.ravel())[0, 1] > 0.8
        assert np.abs(image_k - first).mean() > 3


def test_sequence_names_are_unique_and_alternate_kinds():
    names = [sequence_name(i) for i in range(3 * len(SCENES))]
    assert len(set(names)) == len(names)
    assert names[:3] == ["v_astronaut", "i_coffee", "v_chelsea"]
    assert names[len(SCENES)] == f"i_{SCENES[0]}2"


def test_rejects_zero_sequences(tmp_path):
    with pytest.raises(UserError, match="at least 1"):
        synthesize(tmp_path, sequences=0)
