"""A tiny Cityscapes-format set (val split) for offline runs and tests.

    python -m om_pipeline.data.pointrend_synth DIR [--images N] [--size H W] [--seed S]

writes DIR/leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png (8-bit RGB) and
DIR/gtFine/val/<city>/<id>_gtFine_labelIds.png (label ids): rectangles of evaluated classes,
void (0), classes cityscapesScripts ignores (parking 9, guard rail 14, caravan 29) and
unlabelled border pixels, over two cities. Cityscapes needs a login, so tests write their own.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CITIES = ("frankfurt", "lindau")
EVALUATED = (7, 8, 11, 13, 17, 21, 23, 24, 26, 33)  # road, sidewalk, building, fence, pole, vegetation, sky, person, car, bicycle
IGNORED = (0, 9, 14, 29)


def synthesize(root: Path, images: int = 3, size: tuple[int, int] = (1024, 2048), seed: int = 0) -> Path:
    """Write the set under `root`; return `root`."""
    import cv2

    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for index in range(images):
        city = CITIES[index % len(CITIES)]
        sample_id = f"{city}_{index // len(CITIES):06d}_{19 + 7 * index:06d}"
        labels = np.full((height, width), 7, dtype=np.uint8)  # road
        for _ in range(12):
            label = int(rng.choice(EVALUATED + IGNORED))
            y0, x0 = int(rng.integers(0, height - 2)), int(rng.integers(0, width - 2))
            y1 = int(min(height, y0 + rng.integers(2, max(3, height // 2))))
            x1 = int(min(width, x0 + rng.integers(2, max(3, width // 2))))
            labels[y0:y1, x0:x1] = label
        labels[:, : max(1, width // 64)] = 0  # an unlabelled strip, as the ego-vehicle border is
        palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
        picture = palette[labels] + rng.integers(0, 24, size=(height, width, 3), dtype=np.uint8)
        for kind, name, array in (("leftImg8bit", "leftImg8bit", picture), ("gtFine", "gtFine_labelIds", labels)):
            directory = root / kind / "val" / city
            directory.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(directory / f"{sample_id}_{name}.png"), array):
                raise OSError(f"cannot write {directory / f'{sample_id}_{name}.png'}")
    return root


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m om_pipeline.data.pointrend_synth", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(synthesize(args.root, args.images, tuple(args.size), args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
