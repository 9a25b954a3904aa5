"""A small HPatches-format dataset from real photographs, for offline runs and demos.

Real HPatches is a 1.3 GB download; this writes the same layout from the images bundled inside
the scikit-image wheel (no network: every name below ships in `skimage/data/`, none is fetched):

    <out>/v_<scene>/1.ppm ... 6.ppm, H_1_2 ... H_1_6   viewpoint: random homographies, growing
                                                      with k, plus mild photometric change
    <out>/i_<scene>/...                               illumination: identity homography, strong
                                                      photometric change

Image k = image 1 warped by H_1_k (x_k ~ H_1_k x_1, HPatches' convention) with the photometric
change applied; sequence i depends only on (seed, i), so asking for more sequences keeps the
first ones unchanged.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError

# Textured natural images bundled with scikit-image (skimage.data.<name>() reads them locally).
SCENES = (
    "astronaut", "coffee", "chelsea", "camera", "rocket", "hubble_deep_field", "immunohistochemistry",
    "brick", "gravel", "grass", "coins", "moon", "retina", "clock", "cell",
)
IMAGES_PER_SEQUENCE = 6
LONGEST_SIDE = 480  # enough detail for a 320x240 network input, and small files
MAX_CORNER_SHIFT = 0.04  # per step of k, as a fraction of the image side: 4% at k=2 ... 20% at k=6


def synthesize(out: Path, sequences: int = 8, seed: int = 0) -> Path:
    """Write `sequences` HPatches sequences under `out` (created if needed); returns `out`.
    Existing sequence folders of the same name are overwritten with identical content."""
    if sequences < 1:
        raise UserError(f"--sequences must be at least 1, not {sequences}")
    out = Path(out)
    for index in range(sequences):
        _write_sequence(out, index, seed)
    return out


def sequence_name(index: int) -> str:
    """Scenes alternate viewpoint / illumination; after every scene is used, they come back with
    a number (and, as the scene count is odd, the other kind)."""
    scene, cycle = SCENES[index % len(SCENES)], index // len(SCENES)
    kind = "v" if index % 2 == 0 else "i"
    return f"{kind}_{scene}" if cycle == 0 else f"{kind}_{scene}{cycle + 1}"


def _write_sequence(out: Path, index: int, seed: int) -> None:
    rng = np.random.default_rng([seed, index])
    name = sequence_name(index)
    viewpoint = name.startswith("v_")
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    reference = _scene_image(SCENES[index % len(SCENES)])
    _write_ppm(folder / "1.ppm", reference)
    height, width = reference.shape[:2]
    for k in range(2, IMAGES_PER_SEQUENCE + 1):
        homography = random_homography(rng, (height, width), MAX_CORNER_SHIFT * (k - 1)) if viewpoint else np.eye(3)
        warped = cv2.warpPerspective(reference, homography, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        _write_ppm(folder / f"{k}.ppm", photometric_change(rng, warped, strong=not viewpoint))
        np.savetxt(folder / f"H_1_{k}", homography, fmt="%.10g")


def _scene_image(name: str) -> np.ndarray:
    """RGB uint8, longest side at most LONGEST_SIDE."""
    try:
        import skimage.data  # only this command needs scikit-image
    except ImportError as exc:
        raise UserError("synthetic HPatches needs scikit-image (its bundled photographs)", hint="pip install scikit-image") from exc

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    scale = LONGEST_SIDE / max(image.shape[:2])
    if scale < 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[..., :3])


def random_homography(rng: np.random.Generator, shape: tuple[int, int], max_shift: float) -> np.ndarray:
    """Moves each image corner by up to max_shift of the image size (a shift below a quarter
    keeps the quadrilateral convex, so H is invertible and most of the image stays in view)."""
    height, width = shape
    corners = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    shifts = rng.uniform(-max_shift, max_shift, size=(4, 2)) * np.float32([width, height])
    homography = cv2.getPerspectiveTransform(corners, (corners + shifts).astype(np.float32))
    return homography / homography[2, 2]


def photometric_change(rng: np.random.Generator, image: np.ndarray, strong: bool) -> np.ndarray:
    """Gamma, per-channel gain, brightness offset and sensor noise; `strong` for illumination
    sequences (HPatches' i_ sequences change light, not viewpoint)."""
    spread = 0.5 if strong else 0.1
    gamma = np.exp(rng.uniform(-spread, spread))
    gain = rng.uniform(1 - spread / 2, 1 + spread / 2) * rng.uniform(0.95, 1.05, size=3)
    offset = rng.uniform(-spread / 5, spread / 5)
    noise = rng.normal(0.0, 2.0 / 255, size=image.shape)
    changed = (image / 255.0) ** gamma * gain + offset + noise
    return np.clip(np.rint(changed * 255), 0, 255).astype(np.uint8)


def _write_ppm(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise UserError(f"cannot write {path}")
