"""SuperPoint (eric-yyjau/pytorch-superpoint, SuperPointNet_gauss2) on HPatches.

Samples are single images (`<sequence>_<n>`, n = 1..6); the evaluator pairs image 1 with images
2..6 of each sequence, as upstream's `datasets/patches_dataset.py` does, and reports:

    nn_map              nearest-neighbour mAP. This is the Ascend guide's "80.6%" (Ascend310P3,
                        every batch size): its postprocess only runs this branch of
                        `evaluation.py`. Upstream README: 0.78.
    repeatability       3 px, top 1000 points. Upstream README: 0.63. (Not the guide's number.)
    localization_error  px, over repeated points. Upstream README: 1.07.
    matching_score      Upstream README: 0.42.
    homography_accuracy_<eps>  corner error <= eps px, eps 1/3/5 (README: 0.46 / 0.75 / 0.81),
                        and 10/20/50.
    pairs               number of image pairs evaluated.

The README row is `superpoint_coco_heat2_0_170k_hpatches_sub` (the committed 170k checkpoint).
The two references are not the same measurement: upstream's `export.py:export_descriptor` never
calls eval(), so the README's numbers come from BatchNorm in training mode (each image's own
statistics), while the guide's ONNX, like ours, is exported in eval mode (running statistics).
All metrics are fractions (the guide's 80.6% is nn_map = 0.806).

`params` (recipe `params:` merged with the stage's), upstream defaults from
`configs/magicpoint_repeatability_heatmap.yaml` and `evaluation.py`: see `Settings`.
"""
from __future__ import annotations

import importlib
import pickle
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..metrics.hpatches import PairMetrics, PairPrediction, evaluate_pair, summarize
from ..plugin import ExportContext, Sample, imported_from, numpy_forward, tuple_outputs
from ..state import git_blob_id
from .superpoint_postprocess import Keypoints, extract_keypoints

IMAGES_PER_SEQUENCE = 6
# --stream scores in worker processes (stream.evaluation_workers): its keypoints, matching and RANSAC
# cost ~0.2 s per image on one core, ~500x the 310P's time for it at the guide's 2500 fps.
EVALUATE_IN_WORKERS = True
HPATCHES_FILES = [f"{n}.ppm" for n in range(1, IMAGES_PER_SEQUENCE + 1)] + [f"H_1_{n}" for n in range(2, IMAGES_PER_SEQUENCE + 1)]
LAYOUT_HINT = "HPatches layout: <data>/<sequence>/1.ppm ... 6.ppm and H_1_2 ... H_1_6 (e.g. i_ajuntament/1.ppm)"
MODEL_CLASS = "SuperPointNet_gauss2"
# logs/superpoint_coco_heat2_0/checkpoints/superPointNet_170000_checkpoint.pth.tar at the pinned commit
UPSTREAM_CHECKPOINT_BLOB = "a6de43741db7fe038aed600e64b3554b02f7572d"


@dataclass(frozen=True)
class Settings:
    resize: tuple[int, int] = (240, 320)  # (height, width) of the network input
    detection_threshold: float = 0.015
    nms_radius: int = 4
    border: int = 4
    subpixel_patch_size: int = 5
    top_k: int = 1000  # points per image kept for repeatability
    repeatability_distance: float = 3.0
    nn_threshold: float = 1.2
    homography_thresholds: tuple[float, ...] = (1, 3, 5, 10, 20, 50)


# ---------------------------------------------------------------- samples and preprocessing

def list_samples(data: Path, settings: Settings) -> list[Sample]:
    """Every image of every sequence: sequences by name, images 1..6."""
    sequences = _sequence_folders(data)
    samples = []
    for sequence in sequences:
        missing = [name for name in HPATCHES_FILES if not (sequence / name).is_file()]
        if missing:
            raise UserError(
                f"{sequence / missing[0]} is missing (looked in {sequence})",
                hint=LAYOUT_HINT,
                details=[f"also missing: {', '.join(missing[1:])}"] if missing[1:] else None,
            )
        for n in range(1, IMAGES_PER_SEQUENCE + 1):
            sample_id = f"{sequence.name}_{n}"
            try:
                samples.append(Sample(id=sample_id, path=sequence / f"{n}.ppm", meta={"seq": sequence.name, "n": n}))
            except ValueError as exc:
                raise UserError(f"sequence folder {sequence} gives an unusable sample id: {exc}", hint="rename it: letters, digits, _ and -") from exc
    return samples


def _sequence_folders(data: Path) -> list[Path]:
    if not data.is_dir():
        raise UserError(f"HPatches folder {data} does not exist", hint=LAYOUT_HINT)
    sequences = sorted((p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if not sequences:
        raise UserError(f"no sequence folders in {data}", hint=LAYOUT_HINT)
    return sequences


def preprocess(sample: Sample, settings: Settings) -> list[np.ndarray]:
    """`PatchesDataset.__getitem__._preprocess`, quirks included -> [float32 1 x H x W]."""
    height, width = settings.resize
    image = _read_image(sample.path)
    scale = _resize_scale(image.shape[:2], (height, width))
    # As upstream: cv2.imread gives BGR, converted with the RGB formula (B weighted 0.299).
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    # As upstream: a top-left crop to the target aspect ratio, not a centred one.
    gray = gray[: int(height / scale), : int(width / scale)]
    resized = cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)
    return [(resized.astype(np.float32) / 255.0)[np.newaxis]]


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise UserError(f"cannot read image {path}", hint=LAYOUT_HINT)
    return image


def _resize_scale(original: tuple[int, int], target: tuple[int, int]) -> float:
    """Upstream's s = max(target / original) over (height, width)."""
    return max(target[0] / original[0], target[1] / original[1])


def adapt_homography(homography: np.ndarray, original: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """`_adapt_homography_to_preprocessing`: diag(s, s, 1) H diag(1/s, 1/s, 1), with s of image 1
    (as upstream: the crop's int() truncation and image k's own size are ignored)."""
    s = _resize_scale(original, target)
    return homography * np.array([[1, 1, s], [1, 1, s], [1 / s, 1 / s, 1]])


# ---------------------------------------------------------------- export

def export(ctx: ExportContext) -> None:
    """ONNX of SuperPointNet_gauss2 from the patched checkout; one graph serves both targets
    (no Ascend-only operators in it)."""
    import torch  # slow to import; only export pays for it

    height, width = ctx.settings.resize
    model = build_model(ctx)
    dummy = torch.zeros(ctx.bs, 1, height, width)
    torch.onnx.export(
        model,
        (dummy,),
        str(ctx.out),
        dynamo=False,  # the TorchScript exporter: true opset 11, which atc needs
        opset_version=ctx.opset,
        input_names=list(ctx.input_names),
        output_names=list(ctx.output_names),
    )


def build_model(ctx: ExportContext):
    """SuperPointNet_gauss2 from the patched checkout, eval mode, returning (semi, desc)."""
    import torch

    with upstream_modules(ctx.source):
        network_class = getattr(importlib.import_module(f"models.{MODEL_CLASS}"), MODEL_CLASS)
        torch.manual_seed(ctx.seed)
        network = network_class()
    if ctx.weights is not None:
        try:
            network.load_state_dict(_state_dict(ctx.weights))  # strict: a mismatch is an error
        except RuntimeError as exc:
            raise UserError(f"{ctx.weights} does not fit {MODEL_CLASS}", details=str(exc).splitlines()[:6]) from exc
    # forward returns {"semi", "desc"}; the exporter wants a tuple, in that order
    return tuple_outputs(network, lambda outputs: (outputs["semi"], outputs["desc"])).eval()


def torch_forward(ctx: ExportContext):
    """The PyTorch rung of the golden comparison (the compare stage)."""
    return numpy_forward(build_model(ctx))


def upstream_modules(source: Path):
    """Upstream's modules (`models`, `utils`, `datasets`, ...) importable from the checkout."""
    return imported_from(source, f"models/{MODEL_CLASS}.py")


def _state_dict(weights: Path) -> dict:
    import torch

    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Full unpickling runs code from the file: only for upstream's own committed checkpoint,
        # recognised by content, whose pickle may hold objects the weights-only loader refuses.
        if git_blob_id(weights) != UPSTREAM_CHECKPOINT_BLOB:
            raise UserError(
                f"{weights} cannot be loaded as plain weights, and it is not upstream's checkpoint (git blob {UPSTREAM_CHECKPOINT_BLOB})",
                hint="save just the tensors: torch.save({'model_state_dict': model.state_dict()}, path)",
            ) from exc
        checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    # Upstream saves {'n_iter', 'model_state_dict', 'optimizer_state_dict', 'loss'}.
    state = checkpoint.get("model_state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{weights} holds no state dict", hint=f"expected an upstream checkpoint with 'model_state_dict' for {MODEL_CLASS}")
    return state


# ---------------------------------------------------------------- evaluation

def evaluator(data: Path, settings: Settings) -> "HPatchesEvaluator":
    return HPatchesEvaluator(data, settings)


class HPatchesEvaluator:
    """Postprocesses each image as it arrives and scores a pair (1, k) as soon as both are in,
    so memory holds keypoints of a few images, not of the whole dataset."""

    def __init__(self, data: Path, settings: Settings):
        self._data = data
        self._settings = settings
        self._first_images: dict[str, Keypoints] = {}
        self._waiting: dict[str, dict[int, Keypoints]] = defaultdict(dict)  # image k before image 1
        self._scored: dict[str, int] = defaultdict(int)
        self._original_shapes: dict[str, tuple[int, int]] = {}
        self.pair_metrics: dict[tuple[str, int], PairMetrics] = {}

    def add(self, sample: Sample, outputs: list[np.ndarray]) -> None:
        semi, descriptors = (_without_batch_axis(output) for output in outputs)
        s = self._settings
        keypoints = extract_keypoints(
            semi,
            descriptors,
            detection_threshold=s.detection_threshold,
            nms_radius=s.nms_radius,
            border=s.border,
            subpixel_patch_size=s.subpixel_patch_size,
        )
        sequence, n = sample.meta["seq"], sample.meta["n"]
        if n == 1:
            self._first_images[sequence] = keypoints
            for k, waiting in sorted(self._waiting.pop(sequence, {}).items()):
                self._score(sequence, k, waiting)
        elif sequence in self._first_images:
            self._score(sequence, n, keypoints)
        else:
            self._waiting[sequence][n] = keypoints

    def _score(self, sequence: str, n: int, warped: Keypoints) -> None:
        first = self._first_images[sequence]
        s = self._settings
        pair = PairPrediction(
            points=first.points,
            descriptors=first.descriptors,
            warped_points=warped.points,
            warped_descriptors=warped.descriptors,
            homography=self._homography(sequence, n),
            shape=s.resize,
        )
        self.pair_metrics[(sequence, n)] = evaluate_pair(
            pair,
            keep=s.top_k,
            distance=s.repeatability_distance,
            nn_threshold=s.nn_threshold,
            homography_thresholds=s.homography_thresholds,
        )
        self._scored[sequence] += 1
        if self._scored[sequence] == IMAGES_PER_SEQUENCE - 1:
            del self._first_images[sequence]  # all its pairs are scored

    def _homography(self, sequence: str, n: int) -> np.ndarray:
        folder = self._data / sequence
        if sequence not in self._original_shapes:
            self._original_shapes[sequence] = _read_image(folder / "1.ppm").shape[:2]
        return adapt_homography(np.loadtxt(folder / f"H_1_{n}"), self._original_shapes[sequence], self._settings.resize)

    def result(self) -> dict[str, float]:
        if not self.pair_metrics:
            raise UserError(
                "no image pair to evaluate: HPatches metrics compare image 1 of a sequence with images 2..6",
                hint="with --limit, keep at least the first two images of a sequence (--limit 2 or more)",
            )
        ordered = [self.pair_metrics[key] for key in sorted(self.pair_metrics)]
        return summarize(ordered, self._settings.homography_thresholds)

    def state(self) -> dict[str, Any]:
        """Each scored pair's figures (result() sorts pairs, so their order is free). Images
        still waiting for their pair are not kept: `shard_key` puts a sequence in one shard."""
        return {"pairs": {f"{sequence}/{n}": asdict(metrics) for (sequence, n), metrics in self.pair_metrics.items()}}

    def merge(self, states: Sequence[dict[str, Any]], order: Sequence[str]) -> None:
        for state in states:
            for key, figures in state["pairs"].items():
                sequence, n = key.rsplit("/", 1)
                if (sequence, int(n)) in self.pair_metrics:
                    raise ValueError(f"pair {key} is in two partial states")
                self.pair_metrics[(sequence, int(n))] = PairMetrics(**{**figures, "homography_correct": tuple(figures["homography_correct"])})


def shard_key(sample: Sample) -> str:
    """A sequence's six images go to one shard: its pairs (1, k) are scored there."""
    return str(sample.meta["seq"])


def _without_batch_axis(output: np.ndarray) -> np.ndarray:
    """Outputs arrive as C x H x W, or 1 x C x H x W straight from a batch-1 run."""
    output = np.asarray(output)
    return output[0] if output.ndim == 4 else output
