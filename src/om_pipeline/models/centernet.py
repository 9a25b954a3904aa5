"""CenterNet ctdet, DLA-34 with DCNv2 (xingyizhou/CenterNet, `ctdet_coco_dla_2x.pth`) on COCO val2017.

Samples are the images of `annotations/instances_val2017.json`, in its order (upstream's
`coco.getImgIds()`), read from `val2017/`. A sample's id is its file name without the suffix
(`000000000139`) when that is file-name safe, else `image_<image id>`; its meta carries the COCO
image id, so results are matched to the ground truth by id, never by position.

Preprocessing is upstream's `BaseDetector.pre_process` at scale 1 without `--keep_res` (the
Ascend guide's CenterNet_preprocess.py does the same): BGR as cv2 reads it, an affine warp of
the square of side max(H, W) centred on the image onto 512 x 512 (bilinear, black border),
(x / 255 - mean) / std with upstream's BGR-ordered constants, CHW float32.

The network's three outputs (the guide's output1, output2, output3) are hm (80 class heatmap
logits), wh (box size) and reg (centre offset), at 1/4 of the input size. The evaluator decodes
them as upstream (`centernet_postprocess`), maps the boxes back to the image, writes COCO
results (80 category ids, two-decimal rounding) and scores them with pycocotools:

    ap        COCO bbox AP@[.5:.95], the guide's accuracy: 36.4 on Ascend310P3 (0.364 here), 36.6
              for the PyTorch model without keep_res, 37.4 with it (upstream's MODEL_ZOO).
    ap50, ap75, ap_small, ap_medium, ap_large, ar1, ar10, ar100, ar_small, ar_medium, ar_large
              the rest of COCOeval's summary;
    images    images scored. With --limit only the images that ran are scored.

`params` (recipe `params:` merged with the stage's), upstream defaults: see `Settings`.

Export (`ExportContext.target`):
- `onnxruntime`: opset `onnxruntime_opset` (19), each DCN an ONNX `DeformConv`;
- `ascend`: the recipe's opset (the guide's 11), each DCN the Ascend `DeformableConv2D` op with
  the guide's offset layout (`centernet_dcn`). Not runnable by ONNX Runtime.
With `--weights random` the network starts from upstream's seeded initialisation, which makes a
poor test subject: activations shrink layer after layer (the heads' outputs end up constant to
six digits) and the 16 DCN offset/mask convolutions start at zero (every offset 0, every mask
0.5: ordinary convolutions, the offset layout untested). So the offset/mask convolutions get
seeded random weights (fractional offsets, masks spread around 0.5), and the BatchNorm
statistics are measured on seeded random images of the input size, which keeps every
activation of order 1 and the network well-conditioned (float32 and float64 agree).
"""
from __future__ import annotations

import importlib
import json
import pickle
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..metrics import coco_bbox
from ..plugin import (SAMPLE_ID, ExportContext, JsonText, Sample, decode_array, encode_array, imported_from, numpy_forward,
                      per_sample_entries, tuple_outputs)
from . import centernet_postprocess as post

IMAGES_DIR = "val2017"
ANNOTATIONS = "annotations/instances_val2017.json"
LAYOUT_HINT = "COCO layout: <data>/val2017/*.jpg and <data>/annotations/instances_val2017.json"
NETWORK_MODULE = "models.networks.pose_dla_dcn"
DCN_MODULE = "models.networks.DCNv2.dcn_v2"
HEADS = {"hm": 80, "wh": 2, "reg": 2}  # upstream's opts.update_dataset_info_and_set_heads for ctdet/coco, in this order
# --weights random: DCN offset/mask conv weights ~ N(0, gain^2 / fan_in) (offsets of a few tenths of
# a pixel on noise, a few pixels on images), and BatchNorm statistics from random images at the
# network's input size, as many as make this many pixels (deep layers need enough positions for
# their statistics). A larger gain, or statistics from smaller images, leaves a network so
# ill-conditioned at 512x512 that float32 and float64 PyTorch disagree (cosine 0.8 on an image).
OFFSET_GAIN = 0.3
CALIBRATION_PIXELS = 512 * 512


@dataclass(frozen=True)
class Settings:
    """Upstream defaults (src/lib/opts.py, datasets/dataset/coco.py) for ctdet on COCO."""

    arch: str = "dla_34"
    head_conv: int = 256
    down_ratio: int = 4
    input_h: int = 512  # coco.default_resolution, fixed (no --keep_res)
    input_w: int = 512
    mean: tuple[float, ...] = (0.40789654, 0.44719302, 0.47026115)  # B, G, R
    std: tuple[float, ...] = (0.28863828, 0.27408164, 0.27809835)
    num_classes: int = 80
    K: int = 100  # opts --K: detections decoded per image
    max_per_image: int = 100  # BaseDetector.max_per_image
    onnxruntime_opset: int = 19  # DeformConv needs 19; the ascend target uses the recipe's opset
    decode_batch: int = 16  # images decoded at once by the evaluator (memory vs speed only)

    def __post_init__(self) -> None:
        if self.arch != "dla_34":
            raise UserError(f"params.arch = {self.arch!r}: this plugin builds the DLA-34 ctdet network only")
        if self.input_h % 32 or self.input_w % 32:
            raise UserError(f"input {self.input_h}x{self.input_w}: DLA-34 needs multiples of 32")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("params.mean and params.std take three values (B, G, R)")

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the heatmaps."""
        return self.input_w // self.down_ratio, self.input_h // self.down_ratio


# ---------------------------------------------------------------- samples and preprocessing


def list_samples(data: Path, settings: Settings) -> list[Sample]:
    """Every image of the annotation file, in its order (upstream's coco.getImgIds())."""
    dataset = _read_annotations(data)
    images = dataset.get("images")
    if not isinstance(images, list) or not images:
        raise UserError(f"{data / ANNOTATIONS} lists no images", hint=LAYOUT_HINT)
    samples, missing, taken = [], [], {}
    for image in images:
        try:
            image_id, file_name = int(image["id"]), str(image["file_name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{data / ANNOTATIONS}: an image entry without a usable id/file_name: {image!r}"[:300]) from exc
        path = data / IMAGES_DIR / file_name
        if not path.is_file():
            missing.append(file_name)
            continue
        sample_id = sample_id_for(image_id, file_name)
        if sample_id in taken:
            raise UserError(f"images {taken[sample_id]} and {image_id} both get the sample id {sample_id!r}",
                            hint="file names must differ in more than their suffix")
        taken[sample_id] = image_id
        meta = {"image_id": image_id, "file_name": file_name, "height": image.get("height"), "width": image.get("width")}
        samples.append(Sample(id=sample_id, path=path, meta=meta))
    if missing:
        raise UserError(
            f"{len(missing)} image(s) of {ANNOTATIONS} are missing from {data / IMAGES_DIR}, e.g. {missing[0]}",
            hint=LAYOUT_HINT,
        )
    return samples


def sample_id_for(image_id: int, file_name: str) -> str:
    """The file name without its suffix when file-name safe (COCO's `000000000139.jpg` ->
    `000000000139`), else `image_<id>`."""
    stem = Path(file_name).name.rsplit(".", 1)[0]
    return stem if SAMPLE_ID.match(stem) else f"image_{image_id}"


def _read_annotations(data: Path) -> dict:
    path = Path(data) / ANNOTATIONS
    if not path.is_file():
        raise UserError(f"{path} does not exist", hint=LAYOUT_HINT)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc


def preprocess(sample: Sample, settings: Settings) -> list[np.ndarray]:
    """`BaseDetector.pre_process(image, scale=1)` with fix_res -> [float32 3 x H x W]."""
    image = _read_image(sample)
    return [normalize(image, settings)]


def normalize(image: np.ndarray, settings: Settings) -> np.ndarray:
    height, width = image.shape[:2]
    center, scale = post.center_and_scale(height, width)
    matrix = post.affine_transform(center, scale, (settings.input_w, settings.input_h))
    warped = cv2.warpAffine(image, matrix, (settings.input_w, settings.input_h), flags=cv2.INTER_LINEAR)
    mean = np.array(settings.mean, dtype=np.float32).reshape(1, 1, 3)
    std = np.array(settings.std, dtype=np.float32).reshape(1, 1, 3)
    return ((warped / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1).copy()


def _read_image(sample: Sample) -> np.ndarray:
    image = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read image {sample.path}", hint=LAYOUT_HINT)
    expected = (sample.meta.get("height"), sample.meta.get("width"))
    if None not in expected and tuple(image.shape[:2]) != tuple(expected):
        # The evaluator maps boxes back with the annotation's size (it does not reread images).
        raise UserError(f"{sample.path} is {image.shape[1]}x{image.shape[0]}, its annotation says {expected[1]}x{expected[0]}")
    return image


# ---------------------------------------------------------------- network, checkpoint, export


def upstream_modules(source: Path):
    """Upstream's top-level modules (`models`, `utils`, `datasets`, ... under src/lib)
    importable from the checkout, and gone again afterwards."""
    return imported_from(Path(source) / "src" / "lib", "models/networks/pose_dla_dcn.py")


def build_network(settings: Settings, weights: Path | None, seed: int = 0):
    """The ctdet DLA-34 of the patched checkout (inside `upstream_modules`), in eval mode: the
    checkpoint's weights, or seeded random ones (see the module docstring)."""
    import torch

    try:
        networks = importlib.import_module(NETWORK_MODULE)
        dcn = importlib.import_module(DCN_MODULE)
    except ImportError as exc:
        raise UserError(f"cannot import CenterNet's DLA-34: {exc}", hint="the checkout needs the recipe's patch (pure-PyTorch DCNv2)") from exc
    if not callable(getattr(dcn, "modulated_deform_conv2d", None)):
        raise UserError("this CenterNet checkout still has the CUDA DCNv2", hint="apply patches/centernet/ (the patch stage does)")
    torch.manual_seed(seed)
    try:
        network = networks.get_pose_net(34, dict(HEADS), head_conv=settings.head_conv, down_ratio=settings.down_ratio, pretrained=False)
    except TypeError as exc:
        raise UserError(f"get_pose_net takes no pretrained argument: {exc}", hint="apply patches/centernet/ (no ImageNet download)") from exc
    if weights is None:
        randomize(network, dcn.DCN, seed, (settings.input_h, settings.input_w))
    else:
        load_checkpoint(network, weights)
    return network.eval()


def randomize(network, dcn_class, seed: int, size: tuple[int, int]) -> None:
    """Random weights that keep the network's signal alive (see the module docstring): DCN
    offset/mask convolutions drawn so offsets are fractions of a pixel and more, then BatchNorm
    statistics measured on seeded random images of `size`, so every normalised activation is of
    order 1."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, dcn_class):
                conv = module.conv_offset_mask
                fan_in = conv.weight[0].numel()
                conv.weight.normal_(0.0, OFFSET_GAIN / fan_in ** 0.5, generator=generator)
                conv.bias.zero_()
        norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average: after one batch, that batch's statistics
        network.train()
        images = -(-CALIBRATION_PIXELS // (size[0] * size[1]))
        network(torch.randn(images, 3, *size, generator=generator))
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
    network.eval()


def load_checkpoint(network, weights: Path) -> None:
    """Upstream's `load_model` without its leniency: `module.` prefixes (DataParallel) are
    stripped and the ImageNet classifier `base.fc.*` (added by the DLA's ImageNet pretraining,
    unused by ctdet) is dropped; every other key must match the network exactly."""
    state = checkpoint_state_dict(weights)
    state = {(key[7:] if key.startswith("module") and not key.startswith("module_list") else key): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith("base.fc.")}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{weights} does not fit CenterNet DLA-34 ctdet", details=str(exc).splitlines()[:6]) from exc


def checkpoint_state_dict(weights: Path) -> dict:
    import torch

    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{weights} cannot be loaded as plain weights (tensors and numbers)",
                        hint="save just the tensors: torch.save({'state_dict': model.state_dict()}, path)") from exc
    # Upstream saves {'epoch', 'state_dict'[, 'optimizer']} (models/model.py:save_model).
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise UserError(f"{weights} holds no state dict", hint="expected an upstream checkpoint with 'state_dict'")
    return state


def _with_tuple_outputs(network):
    """forward returns [{'hm', 'wh', 'reg'}]; the exporter wants a tuple, in that order."""
    return tuple_outputs(network, lambda stacks: (stacks[-1][name] for name in HEADS)).eval()


@contextmanager
def dcn_through_custom_op() -> Iterator[None]:
    """Route the patched DCN module's deformable convolution through `centernet_dcn`'s custom
    op (inside `upstream_modules`), so the traced graph holds one node per DCN layer."""
    from . import centernet_dcn

    module = importlib.import_module(DCN_MODULE)
    original = module.modulated_deform_conv2d
    module.modulated_deform_conv2d = centernet_dcn.modulated_deform_conv2d_op
    try:
        yield
    finally:
        module.modulated_deform_conv2d = original


def export_opset(ctx: ExportContext, settings: Settings) -> int:
    return settings.onnxruntime_opset if ctx.target == "onnxruntime" else ctx.opset


def export(ctx: ExportContext) -> None:
    """ONNX of the ctdet DLA-34 for ctx.target (see the module docstring)."""
    import torch

    from . import centernet_dcn

    settings = ctx.settings
    opset = export_opset(ctx, settings)
    if ctx.target == "onnxruntime" and opset < centernet_dcn.MIN_DEFORMCONV_OPSET:
        raise UserError(f"params.onnxruntime_opset = {opset}: ONNX DeformConv needs opset {centernet_dcn.MIN_DEFORMCONV_OPSET} or later")
    if ctx.target not in centernet_dcn.TARGETS:
        raise UserError(f"unknown export target {ctx.target!r}")
    with upstream_modules(ctx.source):
        model = _with_tuple_outputs(build_network(settings, ctx.weights, ctx.seed))
        dummy = torch.zeros(ctx.bs, 3, settings.input_h, settings.input_w)
        with dcn_through_custom_op(), centernet_dcn.onnx_symbolic(ctx.target, opset), torch.no_grad():
            torch.onnx.export(
                model,
                (dummy,),
                str(ctx.out),
                dynamo=False,  # the TorchScript exporter: true opset 11 for atc, custom symbolics
                opset_version=opset,
                input_names=list(ctx.input_names),
                output_names=list(ctx.output_names),
            )


def build_model(ctx: ExportContext):
    """The network of `ctx` (checkpoint or seeded random weights), eval mode, returning
    (hm, wh, reg); its DCN layers run upstream's patched pure-PyTorch code."""
    with upstream_modules(ctx.source):
        return _with_tuple_outputs(build_network(ctx.settings, ctx.weights, ctx.seed))


def torch_forward(ctx: ExportContext):
    """The PyTorch rung of the golden comparison (the compare stage)."""
    return numpy_forward(build_model(ctx))


# ---------------------------------------------------------------- evaluation


def evaluator(data: Path, settings: Settings) -> "CocoBboxEvaluator":
    return CocoBboxEvaluator(data, settings)


class CocoBboxEvaluator:
    """Decodes `decode_batch` images at a time (vectorised), keeps each image's detections as
    arrays (COCO records for 5000 images x 100 boxes would be half a million dicts), and scores
    them with pycocotools at the end."""

    def __init__(self, data: Path, settings: Settings, ground_truth: dict | None = None):
        self._settings = settings
        self._ground_truth = ground_truth if ground_truth is not None else _read_annotations(data)
        self._pending: list[tuple[Sample, list[np.ndarray]]] = []
        self.detections: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # image id, boxes, scores, classes
        # pycocotools' per-image evaluation as images are decoded: only accumulate is left at the end
        self._per_image = coco_bbox.PerImageEvaluation(self._ground_truth)
        self._sample_ids: list[str] = []  # of self.detections, for state()
        # each image's COCO records as JSON, made as it is evaluated: results.json (500k records for
        # val2017) then costs no time after the last batch
        self._result_texts: list[str] = []

    def add(self, sample: Sample, outputs: list[np.ndarray]) -> None:
        self._pending.append((sample, [_without_batch_axis(o) for o in outputs]))
        if len(self._pending) >= self._settings.decode_batch:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        samples = [sample for sample, _ in self._pending]
        hm, wh, reg = (np.stack([outputs[i] for _, outputs in self._pending]) for i in range(3))
        self._pending = []
        for sample, (boxes, scores, classes) in zip(samples, decode_batch(hm, wh, reg, samples, self._settings)):
            self._take(sample.id, int(sample.meta["image_id"]), boxes, scores, classes)

    def _take(self, sample_id: str, image_id: int, boxes, scores, classes) -> None:
        """One image's detections, kept and evaluated at once (decoded here, or from a shard)."""
        self.detections.append((image_id, boxes, scores, classes))
        serialised = json.dumps(coco_bbox.detections_to_results(image_id, boxes, scores, classes), sort_keys=True, separators=(",", ":"))
        self._per_image.add_json(image_id, serialised)
        if serialised != "[]":
            self._result_texts.append(serialised[1:-1])
        self._sample_ids.append(sample_id)

    def state(self) -> dict[str, Any]:
        """Each image's decoded detections, dtypes kept (widths are computed in float32)."""
        self._flush()
        return {"images": {sample_id: {"image_id": image_id, "boxes": encode_array(boxes), "scores": encode_array(scores),
                                       "classes": encode_array(classes)}
                           for sample_id, (image_id, boxes, scores, classes) in zip(self._sample_ids, self.detections)}}

    def merge(self, states: Sequence[dict[str, Any]], order: Sequence[str]) -> None:
        """Detections in the dataset's order: the COCO results list is then the one run's
        (pycocotools breaks ties between rounded scores by list order)."""
        self._flush()
        for sample_id, entry in per_sample_entries(states, "images", order):
            self._take(sample_id, int(entry["image_id"]), *(decode_array(entry[k]) for k in ("boxes", "scores", "classes")))

    @property
    def results(self) -> list[dict[str, Any]]:
        """The COCO result records, as upstream writes them to results.json."""
        self._flush()
        return [record for image_id, boxes, scores, classes in self.detections
                for record in coco_bbox.detections_to_results(image_id, boxes, scores, classes)]

    def artifacts(self) -> dict[str, Any]:
        self._flush()
        return {"coco_results": JsonText("[" + ",".join(self._result_texts) + "]")}  # self.results, serialised

    def result(self) -> dict[str, float]:
        """Every image was evaluated as it came (PerImageEvaluation equals pycocotools' evaluate,
        tested): only the accumulation is left."""
        self._flush()
        if not self.detections:
            raise UserError("no image to evaluate")
        return {**self._per_image.finish(), "images": float(len(self._per_image.images))}


def decode_batch(hm: np.ndarray, wh: np.ndarray, reg: np.ndarray, samples: list[Sample], settings: Settings):
    """Network outputs of a batch -> per image (boxes in image pixels, scores, classes), as
    upstream's ctdet_decode + ctdet_post_process + merge_outputs."""
    if hm.shape[1] != settings.num_classes:
        raise UserError(f"hm has {hm.shape[1]} classes; params.num_classes is {settings.num_classes}")
    detections = post.ctdet_decode(hm, wh, reg, k=settings.K)
    sizes = [_image_size(sample) for sample in samples]
    centers_scales = [post.center_and_scale(h, w) for h, w in sizes]
    centers = np.stack([c for c, _ in centers_scales])
    scales = np.array([s for _, s in centers_scales])
    boxes = post.to_image(detections.boxes, centers, scales, (hm.shape[3], hm.shape[2]))
    for i in range(len(samples)):
        keep = post.keep_top(detections.scores[i], settings.max_per_image)
        yield boxes[i][keep], detections.scores[i][keep], detections.classes[i][keep]


def _image_size(sample: Sample) -> tuple[int, int]:
    height, width = sample.meta.get("height"), sample.meta.get("width")
    if height is None or width is None:
        image = _read_image(sample)
        return image.shape[0], image.shape[1]
    return int(height), int(width)


def _without_batch_axis(output: np.ndarray) -> np.ndarray:
    """Outputs arrive as C x H x W, or 1 x C x H x W straight from a batch-1 run."""
    output = np.asarray(output, dtype=np.float32)
    return output[0] if output.ndim == 4 else output
