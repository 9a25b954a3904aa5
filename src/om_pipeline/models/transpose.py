"""TransPose-R-A3 (yangsenius/TransPose @ dab9007) on COCO val2017 keypoints.

One sample per person box, as upstream's COCODataset: by default the ground-truth boxes of
`annotations/person_keypoints_val2017.json` (the README's 73.8 is "AP (coco val gt bbox)",
`TEST.USE_GT_BBOX: true` in the experiment YAML, and the Ascend guide's 73.7 uses the same
loader); `params.boxes: detections` reads a person detection file instead (README: 71.7 with
COCO_val2017_detections_AP_H_56_person.json).

Two views, as the guide's two ais_infer runs: `normal` and `flip` (the W-flipped input). The
evaluator averages the normal heatmaps with the flipped-back ones, decodes them with DARK
(blur kernel 11), maps them back to the image, rescores, runs OKS-NMS per image and scores the
result with pycocotools. Metrics (fractions): ap (stats[0], the guide's 73.7% = 0.737), ap50,
ap75, ap_medium, ap_large, ar, ar50, ar75, ar_medium, ar_large; `instances` and `images` count
what was evaluated. With `--limit`, only the images of the evaluated samples are scored.

Sample ids: `<image id, 12 digits>_<annotation id>` (GT boxes) or `<image id>_det<index in the
detection file>`; the evaluator matches outputs by these ids.

`params` (recipe `params:` merged with the stage's), defaults from the experiment YAML
(experiments/coco/transpose_r/TP_R_256x192_d256_h1024_enc3_mh8.yaml): see `Settings`.
"""
from __future__ import annotations

import functools
import importlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..metrics import coco_bbox, coco_keypoints
from ..plugin import (ExportContext, Sample, decode_array, encode_array, imported_from, numpy_forward,
                      per_sample_entries)
from .transpose_postprocess import PIXEL_STD, average_flip, crop_transform, final_preds

VIEWS = ("normal", "flip")
# --stream scores in this process, not in evaluation workers (stream.evaluation_workers): decoding
# costs ~1.3 ms a person, and shipping both views' heatmaps (416 kB) to a worker cost more: with the
# paced NPU at the guide's 512 fps, 2049 persons kept it 66 % busy through workers, 78 % here.
EVALUATE_IN_WORKERS = False
EXPERIMENT = "experiments/coco/transpose_r/TP_R_256x192_d256_h1024_enc3_mh8.yaml"
DETECTION_FILE = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
LAYOUT_HINT = ("COCO layout: <data>/images/val2017/000000000139.jpg ... and "
               "<data>/annotations/person_keypoints_val2017.json")


@dataclass(frozen=True)
class Settings:
    image_set: str = "val2017"
    boxes: str = "gt"  # "gt" (the 73.8 / 73.7) or "detections" (71.7)
    detection_file: str = DETECTION_FILE  # relative to the dataset root, or absolute
    image_threshold: float = 0.0  # TEST.IMAGE_THRE: detections below are dropped
    image_size: tuple[int, int] = (192, 256)  # (width, height) of the network input, MODEL.IMAGE_SIZE
    heatmap_size: tuple[int, int] = (48, 64)  # MODEL.HEATMAP_SIZE
    box_padding: float = 1.25  # _xywh2cs: scale * 1.25
    color_rgb: bool = True  # DATASET.COLOR_RGB
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, tools/test.py Normalize
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    flip_test: bool = True  # TEST.FLIP_TEST: average with the flip view's heatmaps
    blur_kernel: int = 11  # TEST.BLUR_KERNEL (lib/config/default.py says 3; the YAML says 11)
    in_vis_threshold: float = 0.2  # TEST.IN_VIS_THRE
    oks_threshold: float = 0.9  # TEST.OKS_THRE
    decode_chunk: int = 64  # samples decoded at once by the evaluator
    experiment: str = EXPERIMENT  # the experiment YAML in the checkout that the model is built from

    def __post_init__(self) -> None:
        if self.boxes not in ("gt", "detections"):
            raise UserError(f"params.boxes = {self.boxes!r}: use gt (ground-truth boxes) or detections")
        if self.blur_kernel < 3 or self.blur_kernel % 2 == 0:
            raise UserError(f"params.blur_kernel = {self.blur_kernel}: an odd kernel size >= 3")

    @property
    def aspect_ratio(self) -> float:
        return self.image_size[0] * 1.0 / self.image_size[1]


# ---------------------------------------------------------------- samples

def annotation_file(data: Path, settings: Settings) -> Path:
    return Path(data) / "annotations" / f"person_keypoints_{settings.image_set}.json"


def list_samples(data: Path, settings: Settings) -> list[Sample]:
    """Person boxes in upstream's order: images as listed in the annotation file, then its
    annotations (GT) or the detection file's order (detections)."""
    coco = _read_json(annotation_file(data, settings))
    images = {image["id"]: image for image in coco.get("images", [])}
    if settings.boxes == "gt":
        return _ground_truth_samples(Path(data), coco, images, settings)
    return _detection_samples(Path(data), images, settings)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path} does not exist", hint=LAYOUT_HINT)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from exc


def _image_path(data: Path, image: dict | None, image_id: int, settings: Settings) -> Path:
    name = (image or {}).get("file_name") or f"{image_id:012d}.jpg"  # upstream: '%012d.jpg' % id
    return data / "images" / settings.image_set / name


def _ground_truth_samples(data: Path, coco: dict, images: dict, settings: Settings) -> list[Sample]:
    """COCODataset._load_coco_keypoint_annotation_kernal: non-crowd person annotations with at
    least one labelled keypoint and a box that is still non-empty once clipped to the image."""
    annotations: dict[int, list[dict]] = {image_id: [] for image_id in images}
    for annotation in coco.get("annotations", []):
        if annotation.get("image_id") in annotations:
            annotations[annotation["image_id"]].append(annotation)
    samples = []
    for image_id, image in images.items():
        width, height = image["width"], image["height"]
        for annotation in annotations[image_id]:
            if annotation.get("iscrowd", 0) or annotation.get("category_id") != coco_keypoints.PERSON:
                continue
            box = clean_box(annotation["bbox"], width, height)
            if annotation.get("area", 0) <= 0 or box is None or max(annotation.get("keypoints") or [0]) == 0:
                continue
            center, scale = box_to_center_scale(box, settings)
            samples.append(_sample(f"{image_id:012d}_{annotation['id']}", _image_path(data, image, image_id, settings),
                                   image_id, center, scale, 1.0))
    return samples


def _detection_samples(data: Path, images: dict, settings: Settings) -> list[Sample]:
    """COCODataset._load_coco_person_detection_results: category 1, score >= image_threshold,
    the boxes as the detector gave them."""
    path = Path(settings.detection_file)
    path = path if path.is_absolute() else data / path
    detections = _read_json(path)
    samples = []
    for index, detection in enumerate(detections):
        if detection.get("category_id") != coco_keypoints.PERSON or detection["score"] < settings.image_threshold:
            continue
        image_id = int(detection["image_id"])
        center, scale = box_to_center_scale(detection["bbox"], settings)
        samples.append(_sample(f"{image_id:012d}_det{index}", _image_path(data, images.get(image_id), image_id, settings),
                               image_id, center, scale, float(detection["score"])))
    return samples


def _sample(sample_id: str, path: Path, image_id: int, center: np.ndarray, scale: np.ndarray, score: float) -> Sample:
    # float32 values are exact as JSON floats, so samples.json round-trips them bit for bit
    return Sample(id=sample_id, path=path, meta={"image_id": int(image_id), "center": [float(v) for v in center],
                                                 "scale": [float(v) for v in scale], "score": score})


def clean_box(box, width: int, height: int) -> list[float] | None:
    """[x, y, w, h] clipped to the image as upstream's 'clean_bbox', None when empty."""
    x, y, w, h = box
    x1, y1 = max(0, x), max(0, y)
    x2 = min(width - 1, x1 + max(0, w - 1))
    y2 = min(height - 1, y1 + max(0, h - 1))
    if x2 >= x1 and y2 >= y1:
        return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
    return None


def box_to_center_scale(box, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """_xywh2cs: the centre with (size - 1) / 2, the box grown to the input's aspect ratio,
    scale in units of 200 px, padded by 1.25; float32 like upstream."""
    x, y, w, h = (float(v) for v in box[:4])
    center = np.array([x + (w - 1) * 0.5, y + (h - 1) * 0.5], dtype=np.float32)
    ratio = settings.aspect_ratio
    if w > ratio * h:
        h = w * 1.0 / ratio
    elif w < ratio * h:
        w = h * ratio
    scale = np.array([w * 1.0 / PIXEL_STD, h * 1.0 / PIXEL_STD], dtype=np.float32)
    return center, scale * np.float32(settings.box_padding)


# ---------------------------------------------------------------- preprocessing

def preprocess(sample: Sample, settings: Settings) -> dict[str, list[np.ndarray]]:
    """JointsDataset.__getitem__ at test time + ToTensor + Normalize -> float32 3 x 256 x 192
    per view (the flip view is the W-flipped normalised tensor, as the guide writes it)."""
    crop = crop_image(read_image(str(sample.path), settings.color_rgb), sample.meta["center"], sample.meta["scale"], settings)
    tensor = normalise(crop, settings)
    return {"normal": [tensor], "flip": [np.ascontiguousarray(tensor[:, :, ::-1])]}


@functools.lru_cache(maxsize=4)  # consecutive samples are mostly persons of the same image
def read_image(path: str, color_rgb: bool = True) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise UserError(f"cannot read image {path}", hint=LAYOUT_HINT)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color_rgb else image
    image.setflags(write=False)
    return image


def crop_image(image: np.ndarray, center, scale, settings: Settings) -> np.ndarray:
    matrix = crop_transform(center, scale, settings.image_size)
    return cv2.warpAffine(image, matrix, tuple(int(v) for v in settings.image_size), flags=cv2.INTER_LINEAR)


def normalise(crop: np.ndarray, settings: Settings) -> np.ndarray:
    """ToTensor (HWC uint8 -> CHW float32 / 255) and Normalize, in float32 as torchvision does."""
    tensor = crop.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(settings.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(settings.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((tensor - mean) / std)


# ---------------------------------------------------------------- export

def export(ctx: ExportContext) -> None:
    """ONNX of upstream's TransPoseR (lib/models/transpose_r.py:get_pose_net) built from the
    experiment YAML in the checkout; one graph serves both targets (standard ops only)."""
    import torch  # slow to import; only export pays for it

    settings = ctx.settings
    network = build_model(ctx)
    width, height = settings.image_size
    dummy = torch.zeros(ctx.bs, 3, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        # nn.MultiheadAttention's shape arithmetic warns while traced; the shapes are fixed per bs
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            network,
            (dummy,),
            str(ctx.out),
            dynamo=False,  # the TorchScript exporter: true opset 11, as the guide's export and atc need
            opset_version=ctx.opset,
            input_names=list(ctx.input_names),
            output_names=list(ctx.output_names),
        )


def build_model(ctx: ExportContext):
    """The network the export writes: upstream's, eval mode, the checkpoint's weights or random
    ones drawn with ctx.seed."""
    settings = ctx.settings
    network = build_network(ctx.source, settings.experiment, ctx.seed)
    if ctx.weights is not None:
        try:
            network.load_state_dict(_state_dict(ctx.weights), strict=True)
        except RuntimeError as exc:
            raise UserError(f"{ctx.weights} does not fit TransPose-R ({settings.experiment})",
                            details=str(exc).splitlines()[:6]) from exc
    return network.eval()


def torch_forward(ctx: ExportContext):
    """The PyTorch rung of the golden comparison (the compare stage): arrays -> [heatmaps]."""
    return numpy_forward(build_model(ctx))


def build_network(source: Path, experiment: str = EXPERIMENT, seed: int = 0):
    """Upstream's model for the experiment, random weights drawn with `seed`."""
    import torch

    config = experiment_config(Path(source) / experiment)
    with upstream_modules(source), warnings.catch_warnings():
        # lib/models/__init__.py also imports transpose_h.py, whose `is '*'` warns when compiled
        warnings.simplefilter("ignore", SyntaxWarning)
        transpose_r = importlib.import_module("models.transpose_r")
        torch.manual_seed(seed)
        return transpose_r.get_pose_net(config, is_train=False)


class Config(dict):
    """The experiment YAML as attributes (cfg.MODEL.EXTRA.NUM_LAYERS), which is all that
    get_pose_net reads; upstream's yacs defaults (lib/config/default.py) only matter for keys
    the YAML leaves out, and the model reads none of those."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the experiment YAML has no {name}") from None


def experiment_config(path: Path) -> Config:
    import yaml

    if not path.is_file():
        raise UserError(f"{path} does not exist", hint="params.experiment names a YAML under experiments/ of the checkout")

    def wrap(value):
        return Config({k: wrap(v) for k, v in value.items()}) if isinstance(value, dict) else value

    return wrap(yaml.safe_load(path.read_text(encoding="utf-8")))


def _state_dict(weights: Path) -> dict:
    """A plain state dict (tools/test.py: load_state_dict(torch.load(f), strict=True)); the
    Ascend export script also accepts {'state_dict': ...} with 'module.' prefixes."""
    import pickle

    import torch

    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        raise UserError(f"{weights} cannot be loaded as plain weights: {str(exc).splitlines()[0]}",
                        hint="save just the tensors: torch.save(model.state_dict(), path)") from exc
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint["state_dict"].items()}
    if not isinstance(checkpoint, dict):
        raise UserError(f"{weights} holds no state dict")
    return checkpoint


def upstream_modules(source: Path):
    """Upstream's modules (`models`, `core`, `utils`, `nms`, `dataset`, `config`) importable from
    `<source>/lib`, as tools/_init_paths.py arranges; sys.path and sys.modules are restored
    afterwards (SuperPoint's checkout has `models` and `utils` too)."""
    return imported_from(Path(source) / "lib", "models/transpose_r.py")



# ---------------------------------------------------------------- evaluation

def evaluator(data: Path, settings: Settings) -> "KeypointEvaluator":
    return KeypointEvaluator(data, settings)


class KeypointEvaluator:
    """Collects each sample's heatmaps (both views) and decodes them `decode_chunk` at a time,
    vectorised, keeping only the 17 x 3 keypoints per person, so memory stays small on 6352
    samples. Samples come grouped by image (list_samples): once a sample of another image has
    come and an image's persons are decoded, they are rescored, OKS-NMS'd and evaluated by
    pycocotools' per-image evaluation (coco_bbox.PerImageEvaluation, keypoints), so result() only
    accumulates. An image whose persons come back later is evaluated again with all of them: the
    numbers are those of one COCOeval over every result (tests/models/test_transpose_plugin.py)."""

    def __init__(self, data: Path, settings: Settings):
        self._data = Path(data)
        self._settings = settings
        self._pending: list[tuple[Sample, np.ndarray]] = []
        self._parts: list[coco_keypoints.Instances] = []
        self._sample_ids: list[str] = []  # one per instance of self._parts, for state()
        self._of_image: dict[int, list[coco_keypoints.Instances]] = {}  # decoded persons by image
        self._latest: int | None = None  # the image of the last sample added
        self._complete: list[int] = []  # images no sample is expected for, not yet evaluated
        self._records: dict[int, list[dict[str, Any]]] = {}  # evaluated images' results, in order
        self._evaluation = coco_bbox.PerImageEvaluation(annotation_file(data, settings), iou_type="keypoints")
        self.summary = ""  # COCOeval's printed table, after result()
        self.detections: list[dict[str, Any]] = []  # the COCO results, after result()

    def add(self, sample: Sample, outputs) -> None:
        if not isinstance(outputs, dict) or set(outputs) != set(VIEWS):
            raise UserError(f"TransPose evaluates the views {VIEWS}; sample {sample.id} has "
                            f"{sorted(outputs) if isinstance(outputs, dict) else 'one'}")
        normal, flipped = outputs["normal"][0], outputs["flip"][0]
        heatmaps = average_flip(normal[None], flipped[None])[0] if self._settings.flip_test else np.asarray(normal, np.float32)
        self._arrived(int(sample.meta["image_id"]))
        self._pending.append((sample, heatmaps))
        if len(self._pending) >= self._settings.decode_chunk:
            self._decode()

    def _arrived(self, image_id: int) -> None:
        """A person of `image_id` comes: the image before it is complete; an image evaluated
        already is reopened."""
        if image_id == self._latest:
            return
        self._close_latest()
        if self._records.pop(image_id, None) is not None:
            self._evaluation.discard(image_id)
        if image_id in self._complete:
            self._complete.remove(image_id)
        self._latest = image_id

    def _close_latest(self) -> None:
        if self._latest is not None:
            self._complete.append(self._latest)
            self._latest = None

    def _decode(self) -> None:
        if self._pending:
            samples = [sample for sample, _ in self._pending]
            heatmaps = np.stack([h for _, h in self._pending])
            self._pending = []
            centers = np.array([s.meta["center"] for s in samples], dtype=np.float32)
            scales = np.array([s.meta["scale"] for s in samples], dtype=np.float32)
            coords, maxvals = final_preds(heatmaps, centers, scales, self._settings.blur_kernel)
            keypoints = np.concatenate([coords, maxvals], axis=2).astype(np.float32)  # upstream's float32 all_preds
            self._keep([s.id for s in samples], coco_keypoints.Instances(
                image_ids=np.array([s.meta["image_id"] for s in samples], dtype=np.int64),
                keypoints=keypoints,
                box_scores=np.array([s.meta["score"] for s in samples], dtype=np.float64),
                areas=np.prod(scales * np.float32(PIXEL_STD), axis=1).astype(np.float64),  # the padded box
                centers=centers.astype(np.float64),
                scales=scales.astype(np.float64),
            ))
        self._evaluate_complete()

    def _keep(self, sample_ids: list[str], instances: coco_keypoints.Instances) -> None:
        self._parts.append(instances)
        self._sample_ids += sample_ids
        for image_id in dict.fromkeys(instances.image_ids.tolist()):
            self._of_image.setdefault(image_id, []).append(instances.rows(instances.image_ids == image_id))

    def _evaluate_complete(self) -> None:
        """Rescoring, OKS-NMS and pycocotools' per-image evaluation of each complete image."""
        for image_id in self._complete:
            instances = coco_keypoints.Instances.concatenate(self._of_image[image_id])
            kept, scores = coco_keypoints.select(instances, self._settings.in_vis_threshold, self._settings.oks_threshold)
            self._records[image_id] = coco_keypoints.results(instances, kept, scores)
            self._evaluation.add(image_id, self._records[image_id])
        self._complete = []

    def instances(self) -> coco_keypoints.Instances:
        self._decode()
        if not self._parts:
            raise UserError("no samples to evaluate", hint="the dataset stage found no person boxes")
        return coco_keypoints.Instances.concatenate(self._parts)

    def state(self) -> dict[str, Any]:
        """Each sample's decoded person (keypoints, box score, area, centre, scale), dtypes kept."""
        self._decode()
        if not self._parts:
            return {"instances": {}}
        instances = coco_keypoints.Instances.concatenate(self._parts)
        return {"instances": {sample_id: {name: encode_array(getattr(instances, name)[i]) for name in coco_keypoints.Instances.FIELDS}
                              for i, sample_id in enumerate(self._sample_ids)}}

    def merge(self, states: Sequence[dict[str, Any]], order: Sequence[str]) -> None:
        """Instances in the dataset's order, as one run decodes them, each image evaluated once
        all of its persons are in."""
        self._decode()
        entries = per_sample_entries(states, "instances", order)
        if entries:
            instances = coco_keypoints.Instances(**{
                name: np.stack([decode_array(entry[name]) for _, entry in entries]) for name in coco_keypoints.Instances.FIELDS})
            for image_id in instances.image_ids.tolist():
                self._arrived(image_id)
            self._keep([sample_id for sample_id, _ in entries], instances)
            self._evaluate_complete()

    def result(self) -> dict[str, float]:
        instances = self.instances()
        self._close_latest()  # no more samples: the last image is complete too
        self._evaluate_complete()
        self.detections = [record for records in self._records.values() for record in records]
        metrics = self._evaluation.finish(instances.image_ids.tolist(), names=coco_keypoints.STAT_NAMES)
        self.summary = self._evaluation.summary
        return {**metrics, "instances": float(len(instances)), "images": float(len(set(instances.image_ids.tolist())))}

    def artifacts(self) -> dict[str, Any]:
        """The keypoint results upstream writes to results/keypoints_val2017_results_0.json."""
        return {"keypoint_results": self.detections}

