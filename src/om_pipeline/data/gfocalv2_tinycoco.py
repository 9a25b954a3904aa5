"""A tiny COCO val2017-format detection set for GFocalV2 tests and offline smoke runs:
`val2017/<id:012d>.jpg` and `annotations/instances_val2017.json` with COCO's 80 category names
and ids (mmdet maps labels to categories by name).

Images are seeded noise with filled rectangles, each a ground-truth box. Like val2017, some
images have no annotation (val2017 has 48 such of 5000: the guide's evaluation leaves them out)
and the sizes mix landscape and portrait, so both image sets (`annotated_image_ids`, all images)
and both caps of the 800 x 1216 resize are exercised. The default set is 8 images: 6 annotated,
2 empty.
"""
from __future__ import annotations

from pathlib import Path

from ..metrics.coco_bbox import COCO80_CATEGORY_IDS
from . import tiny_coco
from ..models.gfocalv2_postprocess import COCO_CLASSES

# COCO's ids of the 80 detection categories, in CLASSES order (1..90 without the 10 unused ids)
COCO_IDS = COCO80_CATEGORY_IDS
DEFAULT_SIZES = ((96, 144), (160, 120), (72, 72), (120, 200), (64, 96), (150, 100), (80, 120), (100, 100))  # (h, w)
EMPTY_EVERY = 4  # images 3, 7, 11, ... (0-based) get no annotation


def coco_categories() -> list[dict]:
    return [{"id": i, "name": name, "supercategory": "none"} for i, name in zip(COCO_IDS, COCO_CLASSES)]


def write_tiny_coco(root: Path, images: int = 8, seed: int = 0, sizes=DEFAULT_SIZES, boxes_per_image: int = 3) -> Path:
    """Write `images` images under root/val2017 and their annotations; returns root. Image ids
    are 1000 + 37 k, not 1..N: ids and positions must not be confused."""
    return tiny_coco.write_tiny_coco(root, images=images, seed=seed, sizes=sizes, boxes_per_image=boxes_per_image,
                                     first_id=1000, id_step=37, empty_every=EMPTY_EVERY, min_box_divisor=6,
                                     category_names=COCO_CLASSES)
