"""PointRend semantic segmentation (detectron2 projects/PointRend, SemanticFPN + PointRend,
R-101 FPN, Cityscapes fine) on Cityscapes val, as the Ascend ModelZoo guide runs it
(ACL_PyTorch/contrib/cv/segmentation/PointRend; ../shared/docs/models.md, PointRend).

Samples: `<data>/leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png`, cities sorted,
files sorted (the guide's order); the id is `<city>_<seq>_<frame>`, and the ground truth is found
by that name, `<data>/gtFine/val/<city>/<id>_gtFine_labelIds.png` (never by list position, as
the guide's postprocess pairs them).

Preprocessing (the guide's PointRend_preprocess.py): the image as BGR uint8 (detectron2's
read_image(format="BGR")), CHW float32 minus cfg.MODEL.PIXEL_MEAN [103.53, 116.28, 123.675]
(B, G, R), std 1, no resize (ResizeShortestEdge(1024, 2048) is the identity on Cityscapes'
1024 x 2048 frames) and no padding (both sides divide by 32). Not RGB, whatever the guide's
README table says: the patch moved the model's own normalisation here.

Postprocessing: the logits (19 x H x W) -> argmax -> train ids, kept as uint8 (`reduce_outputs`:
2 MiB instead of 152 MiB per image); mIoU from a 19-class confusion matrix with the ground
truth's label ids mapped to train ids and 255 ignored, equal to cityscapesScripts'
averageScoreClasses (metrics/cityscapes.py).

Export paths (`export_path`):
    upstream  the guide's: detectron2 at the pinned commit with our patch, in an export
              environment ompipe builds once (torch + torchvision with matching binaries,
              Pillow < 10, the checkout installed with --no-build-isolation); the model is built
              from the config as PointRend_pth2onnx.py builds it, and exported through a wrapper
              around its backbone and semantic head (pointrend_upstream.py)
    native    our pure-PyTorch model of the same network (pointrend_model.py), loading the
              detectron2 checkpoint by its own parameter names, on ompipe's own stack
Targets: `ascend` samples points with gathers (opset 11 ops, as the guide's patch); `onnxruntime`
keeps GridSample (opset 16). With `--weights random` both paths export the same seeded weights
(the native model's, written as a detectron2 .pkl for the upstream path), so the golden
comparison's PyTorch rung (the native model) is the same network.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from ..metrics import cityscapes
from ..plugin import ExportContext, Sample, chosen_export_path, numpy_forward
from . import pointrend_upstream  # stdlib and NumPy only at import; detectron2 inside its functions

LAYOUT_HINT = ("Cityscapes layout: <data>/leftImg8bit/val/<city>/<id>_leftImg8bit.png and "
               "<data>/gtFine/val/<city>/<id>_gtFine_labelIds.png")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
EXPORT_PATHS = ("upstream", "native")


@dataclass(frozen=True)
class Settings:
    images: str = "leftImg8bit/val"  # relative to --data
    labels: str = "gtFine/val"
    input_size: tuple = pointrend_upstream.DEFAULT_INPUT_SIZE  # (height, width): Cityscapes frames, no resize
    mean: tuple = pointrend_upstream.PIXEL_MEAN_BGR  # cfg.MODEL.PIXEL_MEAN; PIXEL_STD is 1
    config: str = pointrend_upstream.DEFAULT_CONFIG
    subdivision_steps: int = 2  # cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS
    subdivision_num_points: int = 8192  # cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS


# ---------------------------------------------------------------- samples and preprocessing


def list_samples(data: Path, s: Settings) -> list[Sample]:
    images_dir, labels_dir = data / s.images, data / s.labels
    if not images_dir.is_dir():
        raise UserError(f"no image directory {images_dir}", hint=LAYOUT_HINT)
    samples, missing = [], []
    for city in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        for image in sorted(city.glob(f"*{IMAGE_SUFFIX}")):
            sample_id = image.name[: -len(IMAGE_SUFFIX)]
            label = labels_dir / city.name / f"{sample_id}{LABEL_SUFFIX}"
            if not label.is_file():
                missing.append(str(label.relative_to(data)))
                continue
            try:
                samples.append(Sample(id=sample_id, path=image, meta={"label": str(label)}))
            except ValueError as exc:
                raise UserError(f"image {image} gives an unusable sample id: {exc}") from exc
    if missing:
        raise UserError(f"{len(missing)} image(s) have no ground truth, e.g. {', '.join(missing[:3])}", hint=LAYOUT_HINT)
    if not samples:
        raise UserError(f"no *{IMAGE_SUFFIX} under {images_dir}/<city>/", hint=LAYOUT_HINT)
    return samples


def preprocess(sample: Sample, settings: Settings) -> list[np.ndarray]:
    return [preprocess_image(read_bgr(sample.path), settings, sample.path)]


def read_bgr(path: Path) -> np.ndarray:
    """BGR uint8 H x W x 3, what detectron2's read_image(path, format="BGR") gives for
    Cityscapes' 8-bit RGB PNGs (tests/models/test_pointrend_plugin.py compares the two)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read image {path}", hint=LAYOUT_HINT)
    return image


def preprocess_image(image: np.ndarray, s: Settings, path: Path | None = None) -> np.ndarray:
    """BGR uint8 H x W x 3 -> float32 3 x H x W, minus the mean in float32 (as detectron2
    subtracts its float32 pixel_mean buffer)."""
    if tuple(image.shape[:2]) != tuple(s.input_size):
        raise UserError(f"image {path or ''} is {image.shape[1]}x{image.shape[0]}; the model takes "
                        f"{s.input_size[1]}x{s.input_size[0]} (Cityscapes frames, run without resizing)",
                        hint="PointRend runs Cityscapes at its full size; params.input_size must match the images")
    mean = np.asarray(s.mean, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray(image.transpose(2, 0, 1).astype(np.float32) - mean)


# ---------------------------------------------------------------- postprocessing and metric


def reduce_outputs(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """19 x H x W logits -> H x W uint8 train ids (argmax over classes, first maximum on ties,
    as torch.argmax in detectron2's CityscapesSemSegEvaluator)."""
    logits = np.asarray(outputs[0])
    if logits.ndim != 3 or logits.shape[0] != cityscapes.NUM_CLASSES:
        raise UserError(f"PointRend output has shape {list(logits.shape)}; expected {cityscapes.NUM_CLASSES} x H x W logits")
    return [np.argmax(logits, axis=0).astype(np.uint8)]


def evaluator(data: Path, settings: Settings) -> "CityscapesEvaluator":
    return CityscapesEvaluator()


def read_label_ids(path: Path) -> np.ndarray:
    import cv2

    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise UserError(f"cannot read {path} as a single-channel label-id PNG", hint=LAYOUT_HINT)
    return labels


class CityscapesEvaluator:
    """Accumulates one confusion matrix over the images run (cityscapesScripts' way: one
    matrix for the whole set, not a mean of per-image IoUs)."""

    def __init__(self) -> None:
        self.matrix = cityscapes.ConfusionMatrix()
        self.images = 0

    def add(self, sample: Sample, outputs: list[np.ndarray]) -> None:
        prediction = outputs[0]
        if prediction.ndim != 2:
            raise UserError(f"outputs of {sample.id} are not a train-id map ({list(prediction.shape)})")
        truth = cityscapes.train_ids(read_label_ids(Path(sample.meta["label"])))
        try:
            self.matrix.add(prediction, truth)
        except ValueError as exc:
            raise UserError(f"{sample.id}: {exc}", hint=LAYOUT_HINT) from exc
        self.images += 1

    def state(self) -> dict[str, Any]:
        return {"images": self.images, "counts": self.matrix.counts.tolist()}

    def merge(self, states: Sequence[dict[str, Any]], order: Sequence[str]) -> None:
        """Integer counts: summed in any order, exactly."""
        for state in states:
            self.matrix.counts += np.array(state["counts"], dtype=np.int64)
            self.images += int(state["images"])

    def result(self) -> dict[str, float]:
        if not self.images:
            raise UserError("no image to evaluate")
        iou = self.matrix.class_iou()
        return {"miou": self.matrix.mean_iou(), "pixel_accuracy": self.matrix.pixel_accuracy(),
                "classes_evaluated": float(np.isfinite(iou).sum())}

    def artifacts(self) -> dict[str, Any]:
        iou = self.matrix.class_iou()
        return {"class_iou": {name: (float(v) if np.isfinite(v) else None) for name, v in zip(cityscapes.CLASS_NAMES, iou)},
                "confusion_matrix": {"classes": list(cityscapes.CLASS_NAMES), "rows_ground_truth": self.matrix.counts.tolist()}}


# ---------------------------------------------------------------- export


def export(ctx: ExportContext) -> None:
    s = ctx.settings
    if chosen_export_path(ctx, EXPORT_PATHS) == "upstream":
        weights = ctx.weights or write_random_pkl(s, ctx.seed, ctx.out.with_suffix(".random-weights.pkl"))
        try:
            pointrend_upstream.export(ctx, weights)  # sampling and opset by target, as below
        finally:
            if ctx.weights is None:
                weights.unlink(missing_ok=True)
        return
    import torch

    # gathers for atc (GridSample needs opset 16, which the guide's CANN cannot take), GridSample,
    # upstream's own op, for ONNX Runtime: the upstream path's rule
    model = native_model(s, ctx.weights, ctx.seed, pointrend_upstream.TARGETS[ctx.target])
    dummy = torch.zeros(ctx.bs, 3, *s.input_size)
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), str(ctx.out), dynamo=False,  # the TorchScript exporter: true opset 11
                          opset_version=pointrend_upstream.target_opset(ctx.target, ctx.opset), input_names=list(ctx.input_names),
                          output_names=list(ctx.output_names), do_constant_folding=True)


def native_model(s: Settings, weights: Path | None, seed: int, sampling: str):
    from . import pointrend_model as pm

    model = pm.build_pointrend(sampling=sampling, subdivision_steps=s.subdivision_steps,
                               subdivision_num_points=s.subdivision_num_points)
    if weights is None:
        pm.random_weights(model, seed)
    else:
        try:
            pm.load_weights(model, weights)
        except (KeyError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
            raise UserError(f"{weights} does not fit PointRend R-101 FPN (semantic, 19 classes)",
                            details=str(exc).splitlines()[:6],
                            hint="give detectron2's model_final_cf6ac1.pkl (or a .pth of the same state dict)") from exc
    return model.eval()


def write_random_pkl(s: Settings, seed: int, path: Path) -> Path:
    """The native model's seeded random weights as a detectron2 model-zoo .pkl, which
    DetectionCheckpointer loads by exact names: the upstream path then exports the network
    the compare stage's PyTorch rung (the native model) computes."""
    model = native_model(s, None, seed, "grid_sample")
    state = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}
    with open(path, "wb") as handle:
        pickle.dump({"model": state, "__author__": f"ompipe random weights, seed {seed}"}, handle)
    return path


def torch_forward(ctx: ExportContext):
    """The golden comparison's PyTorch rung: the native model with upstream's GridSample
    sampling (tests/models/test_pointrend_model.py holds it equal to detectron2's)."""
    s = ctx.settings
    return numpy_forward(native_model(s, ctx.weights, ctx.seed, "grid_sample"))
