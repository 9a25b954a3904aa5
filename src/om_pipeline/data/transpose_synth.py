"""A tiny COCO-format keypoint set (val2017 layout) for offline runs and tests.

    python -m om_pipeline.data.transpose_synth DIR [--images N] [--seed S]

writes DIR/images/val2017/<12-digit id>.jpg and DIR/annotations/person_keypoints_val2017.json:
random textured images with 1-3 well separated people each (boxes with 17 keypoints inside
them, some unlabelled), plus the annotations upstream's loader must skip: a crowd region, a
person without keypoints, a dog, and a box reaching past the image border (kept,
clipped). No package ships COCO annotations, so the tests write their own (DESIGN.md section 5).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

KEYPOINT_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]
SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
            [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
FIRST_IMAGE_ID = 139  # COCO-like ids, written as 000000000139.jpg


def synthesize(root: Path, images: int = 4, seed: int = 0, image_set: str = "val2017") -> Path:
    """Write the set under `root` and return `root`."""
    import cv2

    root = Path(root)
    (root / "images" / image_set).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco = {"info": {"description": "ompipe synthetic COCO keypoints"}, "licenses": [],
            "images": [], "annotations": [],
            "categories": [{"supercategory": "person", "id": 1, "name": "person", "keypoints": KEYPOINT_NAMES,
                            "skeleton": SKELETON},
                           {"supercategory": "animal", "id": 18, "name": "dog"}]}
    annotation_id = 1000
    for index in range(images):
        image_id = FIRST_IMAGE_ID + 7 * index
        height, width = int(rng.integers(180, 320)), int(rng.integers(200, 360))
        picture = _texture(rng, height, width)
        file_name = f"{image_id:012d}.jpg"
        people = 1 + index % 3
        slot = width / people
        for person in range(people):
            box_w = float(rng.uniform(0.45, 0.8) * slot)
            box_h = float(min(height * 0.9, box_w * rng.uniform(1.2, 2.2)))
            x = float(person * slot + rng.uniform(0, slot - box_w))
            y = float(rng.uniform(0, height - box_h))
            keypoints = []
            for joint in range(17):
                visible = 0 if rng.random() < 0.15 and joint > 0 else int(rng.integers(1, 3))
                kx = x + box_w * rng.uniform(0.1, 0.9)
                ky = y + box_h * rng.uniform(0.05, 0.95)
                keypoints += [round(kx, 2), round(ky, 2), visible] if visible else [0, 0, 0]
                if visible:
                    cv2.circle(picture, (int(kx), int(ky)), 3, (255, 255, 255), -1)
            coco["annotations"].append(_annotation(annotation_id, image_id, [x, y, box_w, box_h], keypoints))
            annotation_id += 1
        if index == 0:  # what the loader skips: a crowd, a person without keypoints, a non-person
            coco["annotations"].append(_annotation(annotation_id, image_id, [1, 1, 30, 40], [0] * 51, iscrowd=1))
            coco["annotations"].append(_annotation(annotation_id + 1, image_id, [5, 5, 20, 30], [0] * 51))
            coco["annotations"].append({**_annotation(annotation_id + 2, image_id, [10, 10, 25, 25], [0] * 51), "category_id": 18})
            annotation_id += 3
        if index == 1:  # a box past the right and bottom borders: clipped, kept
            keypoints = [0, 0, 0] * 16 + [width - 3.0, height - 3.0, 2]
            coco["annotations"].append(_annotation(annotation_id, image_id, [width - 40.0, height - 50.0, 80.0, 90.0], keypoints))
            annotation_id += 1
        cv2.imwrite(str(root / "images" / image_set / file_name), picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
        coco["images"].append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    (root / "annotations" / f"person_keypoints_{image_set}.json").write_text(json.dumps(coco))
    return root


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    import cv2

    noise = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC))


def _annotation(annotation_id: int, image_id: int, box: list[float], keypoints: list, iscrowd: int = 0) -> dict:
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd,
            "bbox": [round(float(v), 2) for v in box], "area": round(float(box[2] * box[3]) * 0.6, 2),
            "keypoints": keypoints, "num_keypoints": int(sum(1 for v in keypoints[2::3] if v > 0)),
            "segmentation": [] if not iscrowd else {"counts": [0], "size": [1, 1]}}


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m om_pipeline.data.transpose_synth", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(synthesize(args.root, args.images, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
