"""A tiny COCO-format detection set, generated: `val2017/*.jpg` and
`annotations/instances_val2017.json` as COCO lays them out, for tests and offline smoke runs.

Each image is seeded noise with a few filled rectangles; each rectangle is a ground-truth box of
one of the 80 COCO categories. No package ships COCO-format annotations, and tests must not
need the 1 GB val2017 download.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..metrics.coco_bbox import COCO80_CATEGORY_IDS

DEFAULT_SIZES = ((96, 128), (128, 80), (72, 72), (120, 160))  # (height, width), cycled


def write_tiny_coco(root: Path, images: int = 4, seed: int = 0, sizes=DEFAULT_SIZES, boxes_per_image: int = 3,
                    first_id: int = 1) -> Path:
    """Write `images` images under root/val2017 and their annotations; returns root."""
    root = Path(root)
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image_records, annotations = [], []
    for index in range(images):
        image_id = first_id + index
        height, width = sizes[index % len(sizes)]
        picture = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        for _ in range(boxes_per_image):
            box_w = int(rng.integers(max(4, width // 8), max(5, width // 2)))
            box_h = int(rng.integers(max(4, height // 8), max(5, height // 2)))
            x = int(rng.integers(0, width - box_w))
            y = int(rng.integers(0, height - box_h))
            colour = tuple(int(c) for c in rng.integers(120, 256, 3))
            cv2.rectangle(picture, (x, y), (x + box_w - 1, y + box_h - 1), colour, thickness=-1)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(COCO80_CATEGORY_IDS[int(rng.integers(0, len(COCO80_CATEGORY_IDS)))]),
                "bbox": [float(x), float(y), float(box_w), float(box_h)],
                "area": float(box_w * box_h),
                "iscrowd": 0,
            })
        file_name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(root / "val2017" / file_name), picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
        image_records.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    dataset = {
        "info": {"description": "ompipe tiny COCO-format set (generated)"},
        "images": image_records,
        "annotations": annotations,
        "categories": [{"id": i, "name": f"category_{i}", "supercategory": "none"} for i in COCO80_CATEGORY_IDS],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(dataset))
    return root
