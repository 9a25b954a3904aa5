"""Tiny COCO val2017-format detection sets, generated: `val2017/<id:012d>.jpg` and
`annotations/instances_val2017.json`, for tests, benchmarks and offline smoke runs (no package
ships COCO-format annotations, and tests must not need the 1 GB val2017 download).

Each image is seeded noise with a few filled rectangles; each rectangle is a ground-truth box of
one of the 80 COCO categories (their real ids; names as given).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..metrics.coco_bbox import COCO80_CATEGORY_IDS


def write_tiny_coco(root: Path, *, images: int, seed: int, sizes: Sequence[tuple[int, int]], boxes_per_image: int = 3,
                    first_id: int = 1, id_step: int = 1, empty_every: int = 0, min_box_divisor: int = 8,
                    category_names: Sequence[str] | None = None) -> Path:
    """`images` images of the (height, width) `sizes`, cycled; image ids first_id + k * id_step;
    every `empty_every`-th image without annotations (0: none empty); boxes at least
    1/`min_box_divisor` of the side. Returns root."""
    root = Path(root)
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records, annotations = [], []
    for index in range(images):
        image_id = first_id + id_step * index
        height, width = sizes[index % len(sizes)]
        picture = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        empty = empty_every and index % empty_every == empty_every - 1
        for _ in range(0 if empty else boxes_per_image):
            box_w = int(rng.integers(max(4, width // min_box_divisor), max(5, width // 2)))
            box_h = int(rng.integers(max(4, height // min_box_divisor), max(5, height // 2)))
            x, y = int(rng.integers(0, width - box_w)), int(rng.integers(0, height - box_h))
            colour = tuple(int(c) for c in rng.integers(120, 256, 3))
            cv2.rectangle(picture, (x, y), (x + box_w - 1, y + box_h - 1), colour, thickness=-1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(COCO80_CATEGORY_IDS[int(rng.integers(0, len(COCO80_CATEGORY_IDS)))]),
                                "bbox": [float(x), float(y), float(box_w), float(box_h)],
                                "area": float(box_w * box_h), "iscrowd": 0})
        file_name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(root / "val2017" / file_name), picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
        records.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    names = category_names or [f"category_{i}" for i in COCO80_CATEGORY_IDS]
    dataset = {"info": {"description": "ompipe tiny COCO val2017-format set (generated)"}, "images": records,
               "annotations": annotations,
               "categories": [{"id": i, "name": name, "supercategory": "none"} for i, name in zip(COCO80_CATEGORY_IDS, names)]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(dataset))
    return root
