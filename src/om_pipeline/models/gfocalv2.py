"""GFocalV2 (implus/GFocalV2, GFocal R-50 FPN 1x) on COCO val2017, as the Ascend ModelZoo guide
runs it (ACL_PyTorch/contrib/cv/detection/GFocalV2).

Samples are the images of the annotation file (sorted by file name; id = file stem, e.g.
`000000397133`). Preprocessing is the guide's `gfocal_preprocess.py`, which is not mmdet's test
pipeline: cv2 read (BGR, EXIF applied), scale = min(1216 / w, 800 / h), sizes floor(w * scale),
floor(h * scale), cv2 INTER_LINEAR, mmcv's imnormalize (float32, BGR -> RGB, cv2.subtract(mean),
cv2.multiply(1 / std)), zeros padded right and bottom to 800 x 1216, CHW float32.

Two export paths (the recipe's `export.paths`):

    native    our pure-PyTorch model (gfocalv2_model), loading the mmdet checkpoint strictly by
              key renaming; runs on the project's own stack (torch 2.x, legacy exporter, opset 11)
    upstream  the guide's own way, all of it recipe data (`env:` and `command:`): the patched
              upstream checkout installed into an environment of the guide's stack (torch 1.8,
              mmcv-full 1.2.4, mmdet 2.6 from the checkout; Python 3.7) that ompipe builds in
              its cache, then `tools/pytorch2onnx.py <config> <checkpoint> --output-file ...
              --input-img demo/demo.jpg --shape 800 1216 --show`; this plugin only supplies
              `random_checkpoint` for --weights random

Export targets: `ascend` ends in BatchMultiClassNMS (dets 100 x 5, labels 100), `onnxruntime`
stops before NMS (boxes K x 4, scores K x 81; K = 3267 at 800 x 1216). The evaluator takes
either: it tells them apart by shape and dtype (`gfocalv2_postprocess.identify_outputs`) and
does mmdet's NMS itself for the second.

Metrics (fractions): `ap` ... as COCOeval bbox summarises them, over the images the guide
evaluates (those with annotations, 4952 of val2017: the guide's AP 0.406), and the same with
suffix `_all_images` over every image run (5000: upstream's tools/test.py way).
"""
from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..metrics import coco_bbox
from ..plugin import ExportContext, Sample, chosen_export_path, decode_array, encode_array, per_sample_entries
from . import gfocalv2_postprocess as post

LAYOUT_HINT = "COCO layout: <data>/annotations/instances_val2017.json and <data>/val2017/<file_name>.jpg"
EXPORT_PATHS = ("native",)


@dataclass(frozen=True)
class Settings:
    input_size: tuple[int, int] = (800, 1216)  # (height, width) of the network input
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, as the config's img_norm_cfg
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    annotation: str = "annotations/instances_val2017.json"  # relative to --data
    images: str = "val2017"  # relative to --data
    # test_cfg of configs/gfocal/gfocal_r50_fpn_1x.py (the Ascend graph bakes in the same values)
    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_threshold: float = 0.6
    max_per_img: int = 100

    def __post_init__(self) -> None:
        for name, length in (("input_size", 2), ("mean", 3), ("std", 3)):
            if len(getattr(self, name)) != length:
                raise UserError(f"params.{name} = {list(getattr(self, name))} is not valid for GFocalV2: expected {length} values")

    @property
    def test_cfg(self):
        from .gfocalv2_model import TestConfig

        return TestConfig(self.nms_pre, self.score_thr, self.iou_threshold, self.max_per_img)


# ---------------------------------------------------------------- samples and preprocessing


def list_samples(data: Path, settings: Settings) -> list[Sample]:
    dataset = _load_annotations(data / settings.annotation)
    images_dir = data / settings.images
    samples, missing = [], []
    for image in sorted(dataset["images"], key=lambda img: img["file_name"]):
        path = images_dir / image["file_name"]
        if not path.is_file():
            missing.append(image["file_name"])
            continue
        try:
            samples.append(Sample(id=Path(image["file_name"]).stem, path=path, meta={"image_id": int(image["id"])}))
        except ValueError as exc:
            raise UserError(f"image {image['file_name']} gives an unusable sample id: {exc}") from exc
    if missing:
        raise UserError(f"{len(missing)} image(s) of {settings.annotation} are not in {images_dir}, e.g. {', '.join(missing[:3])}",
                        hint=LAYOUT_HINT)
    if not samples:
        raise UserError(f"{settings.annotation} lists no images", hint=LAYOUT_HINT)
    return samples


def _load_annotations(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"annotation file {path} does not exist", hint=LAYOUT_HINT)
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read annotation file {path}: {exc}") from exc
    for key in ("images", "categories"):
        if key not in dataset:
            raise UserError(f"{path} has no {key!r}: not a COCO instances file", hint=LAYOUT_HINT)
    return dataset


def preprocess(sample: Sample, settings: Settings) -> list[np.ndarray]:
    """The guide's gfocal_preprocess.py -> [float32 3 x H x W]."""
    return [preprocess_image(read_image(sample.path), settings)]


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # mmcv.imread(backend='cv2'): BGR, EXIF applied
    if image is None:
        raise UserError(f"cannot read image {path}", hint=LAYOUT_HINT)
    return image


def resized_size(width: int, height: int, input_hw: tuple[int, int]) -> tuple[int, int]:
    """(new_w, new_h) = floor(w * s), floor(h * s), s = min(W / w, H / h) in float64."""
    scale = post.resize_scale(width, height, input_hw)
    return int(math.floor(width * scale)), int(math.floor(height * scale))


def imnormalize(image: np.ndarray, mean, std) -> np.ndarray:
    """mmcv 1.2.4 `imnormalize(img, mean, std, to_rgb=True)` with the guide's float32 mean/std
    arrays: float32 copy, BGR -> RGB, cv2.subtract(mean), cv2.multiply(1 / std) with the mean
    and reciprocal as float64 (1, 3) arrays, in place."""
    image = image.copy().astype(np.float32)
    mean64 = np.float64(np.asarray(mean, dtype=np.float32).reshape(1, -1))
    stdinv = 1 / np.float64(np.asarray(std, dtype=np.float32).reshape(1, -1))
    cv2.cvtColor(image, cv2.COLOR_BGR2RGB, image)
    cv2.subtract(image, mean64, image)
    cv2.multiply(image, stdinv, image)
    return image


def preprocess_image(image: np.ndarray, settings: Settings) -> np.ndarray:
    height, width = settings.input_size
    new_w, new_h = resized_size(image.shape[1], image.shape[0], settings.input_size)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)  # mmcv.imresize, backend cv2
    normalized = imnormalize(resized, settings.mean, settings.std)
    canvas = np.zeros((height, width, 3), dtype=np.float32)  # mmcv.impad(shape=..., pad_val=0): top-left
    canvas[:new_h, :new_w] = normalized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1))


# ---------------------------------------------------------------- export


def export(ctx: ExportContext) -> None:
    chosen_export_path(ctx, EXPORT_PATHS)  # upstream is the recipe's command, not ours
    export_native(ctx)


def export_native(ctx: ExportContext) -> None:
    import torch  # slow to import; only export pays for it

    from . import gfocalv2_model as gm

    settings = ctx.settings
    model = native_model(ctx.weights, ctx.seed)
    exported = gm.Exported(model, ctx.target, settings.input_size, ctx.bs, settings.test_cfg).eval()
    dummy = torch.zeros(ctx.bs, 3, *settings.input_size)
    with torch.no_grad():
        torch.onnx.export(
            exported,
            (dummy,),
            str(ctx.out),
            dynamo=False,  # the TorchScript exporter: true opset 11, custom-op symbolics
            opset_version=ctx.opset,
            input_names=list(ctx.input_names),
            output_names=list(ctx.output_names),
        )


def native_model(weights: Path | None, seed: int):
    from . import gfocalv2_model as gm

    if weights is None:
        return gm.random_model(seed)
    model = gm.GFocalV2()
    try:
        gm.load_mmdet_checkpoint(model, load_checkpoint(weights))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise UserError(f"{weights} does not fit GFocalV2 R-50 FPN", details=str(exc).splitlines()[:6],
                        hint="give the mmdet checkpoint gfocal_r50_fpn_1x.pth (its state_dict is renamed key by key)") from exc
    return model.eval()


def load_checkpoint(weights: Path) -> dict:
    import torch

    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        # mmcv's checkpoints hold tensors, dicts, strings and numbers: the weights-only loader
        # reads them. Anything else would run code from the file when unpickled.
        raise UserError(f"{weights} cannot be loaded as plain weights: {str(exc).splitlines()[0]}",
                        hint="save just the tensors: torch.save({'state_dict': model.state_dict()}, path)") from exc
    if not isinstance(checkpoint, dict):
        raise UserError(f"{weights} holds no state dict")
    return checkpoint


# ------------------------------------------- upstream path: the guide's script in the guide's stack
# The recipe says it all (export.paths.upstream: its env and its command, the guide's
# tools/pytorch2onnx.py); the plugin only hands over its random weights for --weights random.


def random_checkpoint(ctx: ExportContext) -> Path:
    """The native model's seeded random weights as an mmdet checkpoint beside ctx.out, for the
    upstream command: both export paths then export the same network."""
    path = ctx.out.with_suffix(".random-weights.pth")
    write_mmdet_checkpoint(native_model(None, ctx.seed), path)
    return path


def write_mmdet_checkpoint(model, path: Path) -> None:
    """Our model's weights under mmdet's names, as mmcv saves a checkpoint ({'state_dict': ...})."""
    import torch

    from .gfocalv2_model import mmdet_to_native

    native = model.state_dict()
    mmdet_names = mmdet_key_names()
    by_native = {mmdet_to_native(name): name for name in mmdet_names}
    if set(by_native) != set(native):
        raise RuntimeError("the native model and the mmdet key list disagree")  # a bug in gfocalv2_model
    torch.save({"state_dict": {by_native[k]: v for k, v in native.items()}}, path)


def mmdet_key_names() -> list[str]:
    """The state_dict keys of upstream's GFL detector built from gfocal_r50_fpn_1x.py (mmdet
    2.6 names: torchvision ResNet names, mmcv ConvModule's .conv / .gn, Scale's .scale)."""
    keys = []
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys += ["backbone.conv1.weight", *(f"backbone.bn1.{p}" for p in bn)]
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            prefix = f"backbone.layer{layer}.{block}"
            for i in (1, 2, 3):
                keys += [f"{prefix}.conv{i}.weight", *(f"{prefix}.bn{i}.{p}" for p in bn)]
            if block == 0:
                keys += [f"{prefix}.downsample.0.weight", *(f"{prefix}.downsample.1.{p}" for p in bn)]
    for i in range(3):
        keys += [f"neck.lateral_convs.{i}.conv.weight", f"neck.lateral_convs.{i}.conv.bias"]
    for i in range(5):
        keys += [f"neck.fpn_convs.{i}.conv.weight", f"neck.fpn_convs.{i}.conv.bias"]
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            keys += [f"bbox_head.{tower}.{i}.conv.weight", f"bbox_head.{tower}.{i}.gn.weight", f"bbox_head.{tower}.{i}.gn.bias"]
    keys += ["bbox_head.gfl_cls.weight", "bbox_head.gfl_cls.bias", "bbox_head.gfl_reg.weight", "bbox_head.gfl_reg.bias"]
    keys += [f"bbox_head.scales.{i}.scale" for i in range(5)]
    keys += [f"bbox_head.reg_conf.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    keys += ["bbox_head.integral.project"]
    return keys


# ---------------------------------------------------------------- the fake .om's BatchMultiClassNMS


def ascend_ops_on_host(outputs: Sequence[np.ndarray], params: dict[str, Any]) -> list[np.ndarray]:
    """What the `ascend` graph's tail (BatchMultiClassNMS) makes of the `onnxruntime` export's
    outputs, batch by row: the fake toolchain's `.om` runs the standard-op export and then this,
    so it yields the guide's dets (bs x 100 x 5) and labels (bs x 100) as a 310P's `.om` does,
    and the host postprocess is the 310P run's. The op's inputs are cast to float16 as in the
    graph (gfocalv2_model.ascend_nms); the NMS itself is mmdet's (post.multiclass_nms), not
    CANN's kernel; rows past the kept detections are zeros, as the op pads them."""
    from ..plugin import settings_from_params

    s = settings_from_params(Settings, params)
    boxes, scores = (np.asarray(a, dtype=np.float16).astype(np.float32) for a in outputs)
    dets = np.zeros((len(boxes), s.max_per_img, 5), dtype=np.float32)
    labels = np.zeros((len(boxes), s.max_per_img), dtype=np.int64)
    for row in range(len(boxes)):
        kept_dets, kept_labels = post.multiclass_nms(boxes[row], scores[row], s.score_thr, s.iou_threshold, s.max_per_img)
        dets[row, :len(kept_dets)], labels[row, :len(kept_labels)] = kept_dets, kept_labels
    return [dets, labels]


# ---------------------------------------------------------------- evaluation


def evaluator(data: Path, settings: Settings) -> "CocoDetectionEvaluator":
    return CocoDetectionEvaluator(data, settings)


class CocoDetectionEvaluator:
    """Keeps each image's detections (rescaled to the original image) as arrays; builds COCO
    records and runs COCOeval twice in `result`: over the annotated images (the guide's way)
    and over all images run (upstream's way)."""

    def __init__(self, data: Path, settings: Settings):
        self._settings = settings
        self._dataset = _load_annotations(data / settings.annotation)
        self._cat_ids = post.category_ids(self._dataset["categories"])
        evaluated = post.evaluated_category_ids(self._dataset["categories"])  # none of COCO's: a user error now, not after inference
        self._images: dict[int, post.Detections] = {}
        self._scales: dict[int, float] = {}
        self.forms: set[str] = set()
        # pycocotools' per-image evaluation as images arrive, with mmdet's settings (post.evaluate):
        # both image sets are then only accumulated at the end
        self._per_image = coco_bbox.PerImageEvaluation(self._dataset, cat_ids=evaluated, max_dets=post.MAX_DETS)
        self._image_of_sample: dict[str, int] = {}  # for state()

    def add(self, sample: Sample, outputs: list[np.ndarray]) -> None:
        s = self._settings
        try:
            detections = post.detections_from_outputs(outputs, s.score_thr, s.iou_threshold, s.max_per_img)
        except ValueError as exc:
            raise UserError(f"outputs of {sample.id}: {exc}") from exc
        height, width = read_image(sample.path).shape[:2]  # as the guide's .info: cv2's size, EXIF applied
        self._take(sample.id, int(sample.meta["image_id"]), detections, post.resize_scale(width, height, s.input_size))

    def _take(self, sample_id: str, image_id: int, detections: post.Detections, scale: float) -> None:
        self._images[image_id] = detections
        self._scales[image_id] = scale
        self.forms.add(detections.form)
        self._per_image.add(image_id, post.to_coco_records(image_id, detections, self._scales[image_id], self._cat_ids))
        self._image_of_sample[sample_id] = image_id

    def state(self) -> dict[str, Any]:
        return {"images": {sample_id: {"image_id": image_id, "dets": encode_array(self._images[image_id].dets),
                                       "labels": encode_array(self._images[image_id].labels),
                                       "form": self._images[image_id].form, "scale": self._scales[image_id]}
                           for sample_id, image_id in self._image_of_sample.items()}}

    def merge(self, states: Sequence[dict[str, Any]], order: Sequence[str]) -> None:
        """Images in the dataset's order: the COCO records list is then the one run's."""
        for sample_id, entry in per_sample_entries(states, "images", order):
            detections = post.Detections(decode_array(entry["dets"]), decode_array(entry["labels"]), entry["form"])
            self._take(sample_id, int(entry["image_id"]), detections, float(entry["scale"]))

    def records(self) -> list[dict[str, Any]]:
        records = []
        for image_id, detections in self._images.items():
            records += post.to_coco_records(image_id, detections, self._scales[image_id], self._cat_ids)
        return records

    def result(self) -> dict[str, float]:
        if not self._images:
            raise UserError("no image to evaluate")
        run = set(self._images)
        annotated = [i for i in post.annotated_image_ids(self._dataset) if i in run]
        everything = [i for i in post.all_image_ids(self._dataset) if i in run]
        # every image was evaluated as it came, from add or merge (equal to post.evaluate, tested)
        guide = self._per_image.finish(annotated, names=post.STAT_NAMES)
        # every image run annotated (val2017 has 48 of 5000 without): the same numbers, computed once
        standard = guide if everything == annotated else self._per_image.finish(everything, names=post.STAT_NAMES)
        metrics: dict[str, float] = dict(guide)
        metrics.update({f"{name}_all_images": value for name, value in standard.items()})
        metrics["images_annotated"] = float(len(annotated))
        metrics["images_all"] = float(len(everything))
        metrics["nms_in_graph"] = float(self.forms == {"ascend"})
        return metrics
