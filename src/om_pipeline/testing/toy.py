"""Builds the `toy` fixture: a tiny "upstream" git repository with a bug our patch fixes, the
patch, a committed checkpoint, a generated image set and a recipe that ties them together.

    python -m om_pipeline.testing.toy DIR      # prints the paths it wrote

Used by the end-to-end tests and by `scripts/demo` until a real model recipe ships.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_PY = '''\
import torch
from torch import nn


class ToyNet(nn.Module):
    """Conv -> ReLU -> global average pool -> linear, 4 classes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = x.cuda()  # upstream assumes a GPU, as the real ones do
        x = torch.relu(self.conv(x))
        return self.head(x.mean(dim=(2, 3)))
'''

RECIPE = """\
schema_version: 1
name: toy
title: Toy classifier (test fixture)
guide: om_pipeline.testing.toy (a fixture, not a ModelZoo guide)
plugin: om_pipeline.testing.toy_plugin
model:
  inputs:
    - {{name: image, shape: [3, 16, 16], dtype: float32}}
  outputs:
    - {{name: logits, shape: [4], dtype: float32}}
batch_sizes: [1, 4, 8]
default_bs: 4
stages:
  clone:
    repo: {repo}
    commit: {commit}
  patch:
    files: [toy/0001-cpu-only.patch]
    strip: 1
  weights:
    file: toy.pt
    in_source: weights/toy.pt
    git_blob: {blob}
    sha256: {sha256}
  dataset:
    name: toyset
    required: [labels.json, "images/*.png"]
    instructions: python -m om_pipeline.testing.toy DIR writes one
  preprocess: {{}}
  export:
    opset: 13
  simplify:
    tool: onnxsim
  atc:
    args:
      - --framework=5
      - --model={{onnx}}
      - --output={{om_stem}}
      - --input_format=NCHW
      - --input_shape={{input_shape}}
      - --soc_version={{soc_version}}
      - --log=error
  compare:
    samples: 5
    tolerance: {{cosine: 0.999}}
  infer:
    args: ["--model={{om}}", "--input={{inputs}}", "--output={{output}}", "--outfmt=BIN", "--batchsize={{bs}}"]
  eval: {{}}
  perf:
    args: ["--model={{om}}", "--loop=20", "--batchsize={{bs}}"]
    loop: 5
reference:
  accuracy:
    - {{metric: top1, value: 0.25, source: chance level of 4 classes}}
  fps:
    Ascend310P3: {{1: 1000, 4: 3000, 8: 4000}}
  fps_source: made up for the fixture
"""


@dataclass(frozen=True)
class Toy:
    root: Path
    upstream: Path
    commit: str
    recipes: Path
    data: Path
    weights: Path


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "toy", "GIT_AUTHOR_EMAIL": "toy@example.invalid", "GIT_COMMITTER_NAME": "toy",
           "GIT_COMMITTER_EMAIL": "toy@example.invalid", "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def make_upstream(root: Path) -> tuple[Path, str]:
    import torch

    repo = root / "upstream"
    (repo / "toynet").mkdir(parents=True)
    (repo / "weights").mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "toynet" / "__init__.py").write_text("")
    (repo / "toynet" / "model.py").write_text(MODEL_PY)
    (repo / "README.md").write_text("ToyNet: a pretend upstream for ompipe's tests.\n")
    namespace: dict = {}
    exec(compile(MODEL_PY, "model.py", "exec"), namespace)  # our own fixture source, not upstream code
    torch.manual_seed(1234)
    torch.save(namespace["ToyNet"]().state_dict(), repo / "weights" / "toy.pt")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "ToyNet")
    return repo, _git(repo, "rev-parse", "HEAD")


def make_patch(upstream: Path, destination: Path) -> Path:
    fixed = MODEL_PY.replace("        x = x.cuda()  # upstream assumes a GPU, as the real ones do\n", "")
    (upstream / "toynet" / "model.py").write_text(fixed)
    diff = _git(upstream, "diff")
    _git(upstream, "checkout", "-q", "--", ".")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text("Subject: run on the CPU (the export path must not need a GPU)\n\n" + diff + "\n")
    return destination


def make_dataset(root: Path, count: int = 12, seed: int = 0) -> Path:
    import cv2

    data = root / "toyset"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    labels = {}
    for index in range(count):
        name = f"img_{index:03d}"
        image = rng.integers(0, 256, size=(24 + index, 20 + 2 * index, 3), dtype=np.uint8)
        cv2.imwrite(str(data / "images" / f"{name}.png"), image)
        labels[name] = int(rng.integers(0, 4))
    (data / "labels.json").write_text(json.dumps(labels, indent=1))
    return data


def make_toy(root: Path) -> Toy:
    """Everything the toy recipe needs, under `root`."""
    root = root.resolve()
    upstream, commit = make_upstream(root)
    recipes = root / "recipes"
    make_patch(upstream, recipes / "patches" / "toy" / "0001-cpu-only.patch")
    weights = upstream / "weights" / "toy.pt"
    blob = _git(upstream, "rev-parse", "HEAD:weights/toy.pt")
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    (recipes / "toy.yaml").write_text(RECIPE.format(repo=upstream.as_uri(), commit=commit, blob=blob, sha256=sha256))
    return Toy(root, upstream, commit, recipes, make_dataset(root), weights)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m om_pipeline.testing.toy DIR", file=sys.stderr)
        return 2
    toy = make_toy(Path(argv[0]))
    print(textwrap.dedent(f"""\
        upstream: {toy.upstream} @ {toy.commit}
        recipes:  {toy.recipes}
        data:     {toy.data}"""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
