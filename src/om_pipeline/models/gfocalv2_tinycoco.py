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

import json
from pathlib import Path

import cv2
import numpy as np

from .gfocalv2_postprocess import COCO_CLASSES

# COCO's ids of the 80 detection categories, in CLASSES order (1..90 without the 10 unused ids)
COCO_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
DEFAULT_SIZES = ((96, 144), (160, 120), (72, 72), (120, 200), (64, 96), (150, 100), (80, 120), (100, 100))  # (h, w)
EMPTY_EVERY = 4  # images 3, 7, 11, ... (0-based) get no annotation


def coco_categories() -> list[dict]:
    return [{"id": i, "name": name, "supercategory": "none"} for i, name in zip(COCO_IDS, COCO_CLASSES)]


def write_tiny_coco(root: Path, images: int = 8, seed: int = 0, sizes=DEFAULT_SIZES, boxes_per_image: int = 3) -> Path:
    """Write `images` images under root/val2017 and their annotations; returns root."""
    root = Path(root)
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records, annotations = [], []
    for index in range(images):
        image_id = 1000 + 37 * index  # not 1..N: ids and positions must not be confused
        height, width = sizes[index % len(sizes)]
        picture = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        empty = index % EMPTY_EVERY == EMPTY_EVERY - 1
        for _ in range(0 if empty else boxes_per_image):
            box_w = int(rng.integers(max(4, width // 6), max(5, width // 2)))
            box_h = int(rng.integers(max(4, height // 6), max(5, height // 2)))
            x, y = int(rng.integers(0, width - box_w)), int(rng.integers(0, height - box_h))
            colour = tuple(int(c) for c in rng.integers(120, 256, 3))
            cv2.rectangle(picture, (x, y), (x + box_w - 1, y + box_h - 1), colour, thickness=-1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(COCO_IDS[int(rng.integers(0, len(COCO_IDS)))]),
                                "bbox": [float(x), float(y), float(box_w), float(box_h)],
                                "area": float(box_w * box_h), "iscrowd": 0})
        file_name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(root / "val2017" / file_name), picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
        records.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    dataset = {"info": {"description": "ompipe tiny COCO val2017-format set (generated)"}, "images": records,
               "annotations": annotations, "categories": coco_categories()}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(dataset))
    return root
