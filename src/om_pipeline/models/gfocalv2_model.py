"""GFocalV2 R-50 FPN 1x as plain PyTorch: our own model of implus/GFocalV2's detector (an mmdet
2.6 fork), so the export needs neither mmcv-full nor mmdet.

What it stands for (implus/GFocalV2 at b7b3556, `configs/gfocal/gfocal_r50_fpn_1x.py`):

    backbone  ResNet-50, style pytorch (stride in the 3x3 conv), BatchNorm in eval mode,
              stages C2..C5 (mmdet/models/backbones/resnet.py; torchvision's layout and names)
    neck      FPN 256 channels from C3..C5, nearest top-down upsampling to the lower level's
              size, 3x3 output convs, P6 = 3x3/s2 conv on P5's output, P7 = 3x3/s2 on P6, no
              ReLU between (mmdet/models/necks/fpn.py, add_extra_convs='on_output')
    head      GFocalHead: two towers of 4 x (3x3 conv without bias, GroupNorm 32, ReLU), gfl_cls
              3x3 -> 81 (see below), gfl_reg 3x3 -> 4 x 17 scaled per level by a learnable scalar; DGQP:
              softmax over the 17 bins, top-4 probabilities and their mean per side -> 20
              channels -> 1x1 conv 64 -> ReLU -> 1x1 conv 1 -> sigmoid = quality;
              score = sigmoid(gfl_cls) * quality (mmdet/models/dense_heads/gfocal_head.py)
    decode    per level: Integral (softmax . [0..16]) x stride; the 1000 locations with the
              highest class score when a level has more; boxes = anchor centre (x*s, y*s,
              centre offset 0) -/+ distances, clamped to the network input (_get_bboxes_single)

81 score channels, not 80: the config's loss_cls says `use_sigmoid=False`, so mmdet's AnchorHead
makes `cls_out_channels = num_classes + 1`. The 81st channel (trained towards 0 by QFL) counts in
the top-1000 per level (max over all 81), and multiclass_nms sees it as class 80 (after it the
zero background column makes 82): its boxes take part in the top 100 and are dropped afterwards
by bbox2result. We keep all of that, so the checkpoint loads strictly and the numbers match.

Two deliberate changes, both numerically identical (the Ascend guide's patch makes the same two
for ATC): DGQP takes its top-k on the last axis (Ascend TopK works on the last axis only) and the
Integral projection is a (17, 1) matrix product instead of `F.linear` with a 1-D weight.

Module names are ours; `mmdet_to_native` renames an mmdet checkpoint's keys one to one and
`load_mmdet_checkpoint` loads them strictly (every key used, none missing).

The `ascend` export ends the graph as the guide's does: boxes and scores (with the zero
background column) cast to float16, one `BatchMultiClassNMS` node (score 0.05, IoU 0.6, 100 per
class, 100 in total), outputs cast back: dets (100, 5) float32 and labels (100,) int64. The
`onnxruntime` export stops before NMS (boxes, scores) and `gfocalv2_postprocess` does the NMS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 80
CLS_OUT_CHANNELS = NUM_CLASSES + 1  # use_sigmoid=False in the config's loss_cls
REG_MAX = 16  # distances are distributions over 0..16 bins (times the stride)
REG_TOPK = 4
REG_CHANNELS = 64
STRIDES = (8, 16, 32, 64, 128)
FPN_CHANNELS = 256
GROUPS = 32


@dataclass(frozen=True)
class TestConfig:
    """`test_cfg` of gfocal_r50_fpn_1x.py (min_bbox_size 0 filters nothing)."""

    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_threshold: float = 0.6
    max_per_img: int = 100


TEST_CFG = TestConfig()


# ---------------------------------------------------------------- backbone


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)  # style pytorch
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """Returns C3, C4, C5 (C2 is computed but the FPN starts at level 1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1):
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
            layers = [Bottleneck(inplanes, planes, stride, downsample)]
            layers += [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layers))
            inplanes = planes * 4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


# ---------------------------------------------------------------- neck


class FPN(nn.Module):
    def __init__(self, in_channels: Iterable[int] = (512, 1024, 2048), channels: int = FPN_CHANNELS):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.extra = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(2))

    def forward(self, features: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(self.output, laterals)]
        for conv in self.extra:  # on_output: P6 from P5's output, P7 from P6, no ReLU in between
            outs.append(conv(outs[-1]))
        return outs


# ---------------------------------------------------------------- head


class ConvNormReLU(nn.Module):
    def __init__(self, channels: int = FPN_CHANNELS):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)  # mmcv ConvModule: no bias before a norm
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.conv(x)))


class GFocalHead(nn.Module):
    def __init__(self, num_classes: int = CLS_OUT_CHANNELS, channels: int = FPN_CHANNELS, stacked_convs: int = 4):
        super().__init__()
        self.cls_tower = nn.ModuleList(ConvNormReLU(channels) for _ in range(stacked_convs))
        self.reg_tower = nn.ModuleList(ConvNormReLU(channels) for _ in range(stacked_convs))
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box_distribution = nn.Conv2d(channels, 4 * (REG_MAX + 1), 3, padding=1)
        self.scales = nn.ParameterList(nn.Parameter(torch.tensor(1.0)) for _ in STRIDES)
        self.quality = nn.Sequential(
            nn.Conv2d(4 * (REG_TOPK + 1), REG_CHANNELS, 1), nn.ReLU(inplace=True), nn.Conv2d(REG_CHANNELS, 1, 1), nn.Sigmoid())
        self.register_buffer("project", torch.linspace(0, REG_MAX, REG_MAX + 1))

    def forward_level(self, x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls_score N x 81 x H x W, bbox_pred N x 68 x H x W), as upstream's forward_single."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_tower:
            cls_feat = conv(cls_feat)
        for conv in self.reg_tower:
            reg_feat = conv(reg_feat)
        bbox_pred = self.box_distribution(reg_feat) * self.scales[level]
        n, _, h, w = bbox_pred.shape
        # Softmax over the 17 bins and top-k on the last axis (Ascend TopK works on the last
        # axis): N x 4 x H x W x 17 instead of upstream's N x 4 x 17 x H x W, same numbers.
        prob = F.softmax(bbox_pred.reshape(n, 4, REG_MAX + 1, h, w).permute(0, 1, 3, 4, 2), dim=-1)
        top, _ = prob.topk(REG_TOPK, dim=-1)
        stat = torch.cat([top, top.mean(dim=-1, keepdim=True)], dim=-1)  # N x 4 x H x W x 5
        stat = stat.permute(0, 1, 4, 2, 3).reshape(n, 4 * (REG_TOPK + 1), h, w)  # side-major, as upstream
        quality = self.quality(stat)
        cls_score = self.cls_logits(cls_feat).sigmoid() * quality
        return cls_score, bbox_pred


class GFocalV2(nn.Module):
    """The detector without postprocessing: per level (cls_score, bbox_pred), as upstream's
    `model.bbox_head(model.neck(model.backbone(img)))`."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet50()
        self.neck = FPN()
        self.head = GFocalHead()

    def forward(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = self.neck(self.backbone(image))
        return [self.head.forward_level(x, level) for level, x in enumerate(features)]


# ---------------------------------------------------------------- decode (the pre-NMS part of _get_bboxes_single)


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(H, W) of P3..P7 for an input of height x width: every stride-2 step (stem conv, max
    pool, layer2..4 3x3 convs, P6, P7 convs; all with padding) gives ceil(n / 2)."""
    sizes, h, w = [], height, width
    for step in range(7):  # stem conv, max pool, layer2, layer3, layer4, P6, P7
        h, w = (h + 1) // 2, (w + 1) // 2
        if step >= 2:
            sizes.append((h, w))
    return sizes


def anchor_centers(h: int, w: int, stride: int) -> torch.Tensor:
    """(H*W, 2) x, y of the anchor centres of one level, row-major (y outer): mmdet's
    AnchorGenerator with center_offset 0 puts them at (x * stride, y * stride)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) * stride


def integral(bbox_pred: torch.Tensor, project: torch.Tensor, locations: int | None = None) -> torch.Tensor:
    """N x (4*17) x H x W logits -> N x (H*W) x 4 expected distances in bins (upstream's
    Integral: softmax over the 17 bins, dot [0, 1, ..., 16]). `locations` = H*W as a Python
    int keeps the exported reshapes constant."""
    if locations is None:
        locations = bbox_pred.shape[2] * bbox_pred.shape[3]
    logits = bbox_pred.permute(0, 2, 3, 1).reshape(-1, locations, 4, REG_MAX + 1)
    return torch.matmul(F.softmax(logits, dim=-1), project.reshape(REG_MAX + 1, 1)).reshape(-1, locations, 4)


def distance_to_box(centers: torch.Tensor, distances: torch.Tensor, max_hw: tuple[int, int]) -> torch.Tensor:
    """mmdet's distance2bbox: (cx - l, cy - t, cx + r, cy + b), each clamped to [0, W] or
    [0, H] of the network input (the traced img_shape, i.e. the padded canvas)."""
    height, width = max_hw
    x1 = (centers[..., 0] - distances[..., 0]).clamp(min=0, max=width)
    y1 = (centers[..., 1] - distances[..., 1]).clamp(min=0, max=height)
    x2 = (centers[..., 0] + distances[..., 2]).clamp(min=0, max=width)
    y2 = (centers[..., 1] + distances[..., 3]).clamp(min=0, max=height)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def _take(values: torch.Tensor, index: torch.Tensor, batch: int, length: int, channels: int) -> torch.Tensor:
    """values N x L x C, index N x K -> N x K x C, as one flat Gather (ATC-friendly)."""
    flat = (index + torch.arange(batch, dtype=index.dtype).reshape(batch, 1) * length).reshape(-1)
    return values.reshape(batch * length, channels).index_select(0, flat).reshape(batch, -1, channels)


def decode(levels: list[tuple[torch.Tensor, torch.Tensor]], project: torch.Tensor, input_hw: tuple[int, int],
           nms_pre: int = TEST_CFG.nms_pre, sizes: list[tuple[int, int]] | None = None,
           batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level (cls_score, bbox_pred) -> boxes N x K x 4 and scores N x K x 81 for every
    candidate NMS sees (K = 3267 at 800 x 1216), in upstream's order: level by level, the
    top-`nms_pre` locations of a level by their highest class score (descending), or all of a
    smaller level in row-major order.

    `sizes` (H, W per level) and `batch` as Python ints give the exported graph constant shapes
    (the export passes `feature_sizes(*input_hw)` and its batch size); eagerly they are read
    from the tensors."""
    n = batch if batch is not None else levels[0][0].shape[0]
    sizes = sizes if sizes is not None else [tuple(c.shape[-2:]) for c, _ in levels]
    classes = CLS_OUT_CHANNELS
    all_boxes, all_scores = [], []
    for (cls_score, bbox_pred), stride, (h, w) in zip(levels, STRIDES, sizes):
        scores = cls_score.permute(0, 2, 3, 1).reshape(n, h * w, classes)
        distances = integral(bbox_pred, project, h * w) * stride
        centers = anchor_centers(h, w, stride).expand(n, h * w, 2)
        if 0 < nms_pre < h * w:
            _, keep = scores.max(dim=-1).values.topk(nms_pre, dim=-1)
            scores, distances, centers = (_take(scores, keep, n, h * w, classes), _take(distances, keep, n, h * w, 4),
                                          _take(centers, keep, n, h * w, 2))
        all_boxes.append(distance_to_box(centers, distances, input_hw))
        all_scores.append(scores)
    return torch.cat(all_boxes, dim=1), torch.cat(all_scores, dim=1)


def candidate_count(height: int, width: int, nms_pre: int = TEST_CFG.nms_pre) -> int:
    return sum(min(h * w, nms_pre) if nms_pre > 0 else h * w for h, w in feature_sizes(height, width))


# ---------------------------------------------------------------- the Ascend NMS op


class BatchMultiClassNMS(torch.autograd.Function):
    """CANN's `BatchMultiClassNMS` (ONNX custom op, default domain): boxes N x K x q x 4 and
    scores N x K x C, float16 -> nmsed boxes N x T x 4, scores N x T, classes N x T, count N.
    Only the exported node matters: the forward is a stand-in with the right shapes (the op
    runs on the NPU, or in `gfocalv2_postprocess.multiclass_nms` for everything else)."""

    @staticmethod
    def forward(ctx, boxes, scores, score_threshold, iou_threshold, max_size_per_class, max_total_size):
        n = boxes.shape[0]
        return (boxes.new_zeros(n, max_total_size, 4), scores.new_zeros(n, max_total_size),
                scores.new_zeros(n, max_total_size), torch.full((n,), max_total_size, dtype=torch.int32))

    @staticmethod
    def symbolic(g, boxes, scores, score_threshold, iou_threshold, max_size_per_class, max_total_size):
        return g.op("BatchMultiClassNMS", boxes, scores, score_threshold_f=score_threshold, iou_threshold_f=iou_threshold,
                    max_size_per_class_i=max_size_per_class, max_total_size_i=max_total_size, outputs=4)


def ascend_nms(boxes: torch.Tensor, scores: torch.Tensor, cfg: TestConfig = TEST_CFG,
               batch: int | None = None, candidates: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The guide's graph tail: the zero background column appended (as upstream does before
    multiclass_nms: 82 columns), float16 inputs, one BatchMultiClassNMS, results cast back.
    Labels are 0..81; 80 (the head's 81st channel) and 81 (the zero column, never above the
    threshold) are no COCO class and dropped by the evaluation, as bbox2result does. With one image
    the outputs have no batch axis, as in the guide's graph: dets (100, 5), labels (100,)."""
    # Python ints when exporting (batch, candidates): constant shapes in the graph
    n = batch if batch is not None else boxes.shape[0]
    k = candidates if candidates is not None else boxes.shape[1]
    scores = torch.cat([scores, scores.new_zeros(n, k, 1)], dim=-1)
    nmsed_boxes, nmsed_scores, nmsed_classes, _ = BatchMultiClassNMS.apply(
        boxes.reshape(n, k, 1, 4).half(), scores.half(), cfg.score_thr, cfg.iou_threshold, cfg.max_per_img, cfg.max_per_img)
    total = cfg.max_per_img
    lead = (total,) if n == 1 else (n, total)
    dets = torch.cat([nmsed_boxes.float().reshape(*lead, 4), nmsed_scores.float().reshape(*lead, 1)], dim=-1)
    return dets, nmsed_classes.long().reshape(*lead)


class Exported(nn.Module):
    """What the ONNX file holds: image -> (boxes, scores) for target `onnxruntime`, or ->
    (dets, labels) for target `ascend`."""

    def __init__(self, model: GFocalV2, target: str, input_hw: tuple[int, int], batch: int, cfg: TestConfig = TEST_CFG):
        super().__init__()
        if target not in ("ascend", "onnxruntime"):
            raise ValueError(f"unknown export target {target!r}")
        self.model, self.target, self.input_hw, self.batch, self.cfg = model, target, input_hw, batch, cfg

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = decode(self.model(image), self.model.head.project, self.input_hw, self.cfg.nms_pre,
                               sizes=feature_sizes(*self.input_hw), batch=self.batch)
        if self.target == "onnxruntime":
            return boxes, scores
        return ascend_nms(boxes, scores, self.cfg, batch=self.batch, candidates=candidate_count(*self.input_hw, self.cfg.nms_pre))


# ---------------------------------------------------------------- mmdet checkpoint keys


# (mmdet key pattern, our key template), tried in order; every key must match exactly one rule.
_RULES: tuple[tuple[str, str], ...] = (
    (r"backbone\.(.+)", r"backbone.\1"),  # mmdet's ResNet uses torchvision's names, as we do
    (r"neck\.lateral_convs\.(\d)\.conv\.(weight|bias)", r"neck.lateral.\1.\2"),
    (r"neck\.fpn_convs\.([0-2])\.conv\.(weight|bias)", r"neck.output.\1.\2"),
    (r"neck\.fpn_convs\.3\.conv\.(weight|bias)", r"neck.extra.0.\1"),
    (r"neck\.fpn_convs\.4\.conv\.(weight|bias)", r"neck.extra.1.\1"),
    (r"bbox_head\.cls_convs\.(\d)\.conv\.weight", r"head.cls_tower.\1.conv.weight"),
    (r"bbox_head\.cls_convs\.(\d)\.gn\.(weight|bias)", r"head.cls_tower.\1.norm.\2"),
    (r"bbox_head\.reg_convs\.(\d)\.conv\.weight", r"head.reg_tower.\1.conv.weight"),
    (r"bbox_head\.reg_convs\.(\d)\.gn\.(weight|bias)", r"head.reg_tower.\1.norm.\2"),
    (r"bbox_head\.gfl_cls\.(weight|bias)", r"head.cls_logits.\1"),
    (r"bbox_head\.gfl_reg\.(weight|bias)", r"head.box_distribution.\1"),
    (r"bbox_head\.scales\.(\d)\.scale", r"head.scales.\1"),
    (r"bbox_head\.reg_conf\.([02])\.(weight|bias)", r"head.quality.\1.\2"),
    (r"bbox_head\.integral\.project", r"head.project"),
)


def mmdet_to_native(key: str) -> str:
    for pattern, template in _RULES:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(template)
    raise KeyError(f"checkpoint key {key!r} has no counterpart in the native GFocalV2 model")


def native_state_dict(mmdet_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key; two keys landing on one name would be a bug in the rules."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in mmdet_state.items():
        new = mmdet_to_native(key)
        if new in renamed:
            raise KeyError(f"two checkpoint keys map to {new!r}")
        renamed[new] = value
    return renamed


def checkpoint_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """As mmcv's load_checkpoint: the `state_dict` entry when present, `module.` prefixes gone."""
    state = checkpoint.get("state_dict", checkpoint)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_mmdet_checkpoint(model: GFocalV2, checkpoint: dict) -> None:
    """Strict: a key of the checkpoint without a place in the model, or a model tensor the
    checkpoint does not give, is an error (mmcv's loader would only warn)."""
    state = native_state_dict(checkpoint_state(checkpoint))
    project = state.get("head.project")
    if project is not None and not torch.equal(project.float(), torch.linspace(0, REG_MAX, REG_MAX + 1)):
        raise ValueError("bbox_head.integral.project is not linspace(0, 16, 17): not a reg_max 16 GFocal checkpoint")
    model.load_state_dict(state, strict=True)


def random_model(seed: int) -> GFocalV2:
    """PyTorch's default initialisation under `seed` (the same seed gives the same model). Not
    upstream's init (head std 0.01, class prior 0.01), which scores everything below the 0.05
    threshold: default init gives scores on both sides of it, so smoke runs exercise the NMS."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GFocalV2()
    return model.eval()
