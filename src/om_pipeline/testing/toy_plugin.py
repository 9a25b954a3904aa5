"""Plugin of the `toy` fixture model: a tiny classifier on a generated image set.

Small enough to export, convert (fake atc) and evaluate in seconds, yet every part is real:
cv2 image decoding, an upstream module imported from the patched checkout, checkpoint loading,
batching, ONNX Runtime, a metric.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..plugin import ExportContext, Sample, imported_from, numpy_forward, per_sample_entries

SIZE = 16


@dataclass(frozen=True)
class Settings:
    """The recipe's `params:` (each key must be a field here; the framework checks and converts)."""

    labels: str = "labels.json"  # relative to --data: {sample id: class index}
    images: str = "images"  # relative to --data: <id>.png


def list_samples(data: Path, settings: Settings) -> list[Sample]:
    labels = json.loads((data / settings.labels).read_text())
    images = sorted((data / settings.images).glob("*.png"))
    return [Sample(p.stem, p, {"label": labels[p.stem]}) for p in images if p.stem in labels]


def preprocess(sample: Sample, settings: Settings) -> list[np.ndarray]:
    import cv2

    image = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read image {sample.path}")
    image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return [(image[:, :, ::-1].astype(np.float32) / 255.0).transpose(2, 0, 1).copy()]


def build_model(source: Path, weights: Path | None, seed: int):
    import torch

    with imported_from(source, "toynet/model.py"):
        from toynet.model import ToyNet

        torch.manual_seed(seed)
        model = ToyNet()
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def export(ctx: ExportContext) -> None:
    import torch

    model = build_model(ctx.source, ctx.weights, ctx.seed)
    dummy = torch.zeros(ctx.bs, 3, SIZE, SIZE)
    torch.onnx.export(model, dummy, str(ctx.out), input_names=list(ctx.input_names), output_names=list(ctx.output_names),
                      opset_version=ctx.opset, dynamo=False)


def torch_forward(ctx: ExportContext):
    """The PyTorch rung of the golden comparison."""
    return numpy_forward(build_model(ctx.source, ctx.weights, ctx.seed))


class Top1:
    def __init__(self) -> None:
        self.correct = 0
        self.count = 0
        self.score = 0.0
        self._per_sample: dict[str, list] = {}  # id -> [correct, confidence], for state()

    def add(self, sample: Sample, outputs: list[np.ndarray]) -> None:
        logits = outputs[0].astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        self._take(sample.id, int(np.argmax(logits) == sample.meta["label"]), float(probabilities.max()))

    def _take(self, sample_id: str, correct: int, confidence: float) -> None:
        self.correct += correct
        self.score += confidence  # a float sum: merge() replays samples in the dataset's order
        self.count += 1
        self._per_sample[sample_id] = [correct, confidence]

    def state(self) -> dict:
        return {"samples": dict(self._per_sample)}

    def merge(self, states, order) -> None:
        for sample_id, (correct, confidence) in per_sample_entries(states, "samples", order):
            self._take(sample_id, correct, confidence)

    def result(self) -> dict[str, float]:
        return {"top1": self.correct / self.count, "mean_confidence": self.score / self.count}


def evaluator(data: Path, settings: Settings) -> Top1:
    return Top1()
