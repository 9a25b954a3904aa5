"""A tiny COCO-format detection set, generated: `val2017/*.jpg` and
`annotations/instances_val2017.json` as COCO lays them out, for tests and offline smoke runs.

Each image is seeded noise with a few filled rectangles; each rectangle is a ground-truth box of
one of the 80 COCO categories. No package ships COCO-format annotations, and tests must not
need the 1 GB val2017 download.
"""
from __future__ import annotations

from pathlib import Path

from . import tiny_coco

DEFAULT_SIZES = ((96, 128), (128, 80), (72, 72), (120, 160))  # (height, width), cycled


def write_tiny_coco(root: Path, images: int = 4, seed: int = 0, sizes=DEFAULT_SIZES, boxes_per_image: int = 3,
                    first_id: int = 1) -> Path:
    """Write `images` images under root/val2017 and their annotations; returns root."""
    return tiny_coco.write_tiny_coco(root, images=images, seed=seed, sizes=sizes, boxes_per_image=boxes_per_image,
                                     first_id=first_id)
