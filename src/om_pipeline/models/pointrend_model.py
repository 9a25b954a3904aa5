"""PointRend semantic segmentation (SemanticFPN + PointRend, R-101 FPN, Cityscapes) as plain
PyTorch: our own model of detectron2's, so the export needs neither detectron2 nor its compiled
`_C`, nor torchvision.

What it stands for (facebookresearch/detectron2 at 861b50a, projects/PointRend/configs/
SemanticSegmentation/pointrend_semantic_R_101_FPN_1x_cityscapes.yaml over configs/Base-RCNN-FPN.yaml
and detectron2/config/defaults.py), at inference:

    backbone  ResNet-101, MSRA style (STRIDE_IN_1X1: the stride sits in the first 1x1 conv),
              FrozenBN everywhere, res2..res5 (modeling/backbone/resnet.py); FPN 256 channels,
              no norm, sum fusion, nearest x2 top-down (modeling/backbone/fpn.py). The p6 max
              pool of LastLevelMaxPool has no weights and the heads never read it: left out.
    coarse    SemSegFPNHead on p2..p5: per level max(1, log2(stride / 4)) x (3x3 conv 128, GN 32,
              ReLU, bilinear x2 unless at stride 4), summed, 1x1 conv -> 19 classes at stride 4
              (modeling/meta_arch/semantic_seg.py)
    refine    PointRendSemSegHead, SUBDIVISION_STEPS 2 times: bilinear x2 (align_corners False);
              uncertainty = 2nd best - best logit; the SUBDIVISION_NUM_POINTS (8192) most
              uncertain cells of the grid; p2 and the *coarse* (stride 4) logits sampled there;
              StandardPointHead (3 x Conv1d 256 + ReLU, class-specific Conv1d predictor,
              COARSE_PRED_EACH_LAYER False); the point logits scattered into the upsampled map
              (projects/PointRend/point_rend/{semantic_seg,point_features,point_head}.py)

Input: N x 3 x H x W float32, BGR minus PIXEL_MEAN (PIXEL_STD is 1), H and W multiples of 32.
Output: N x 19 x H x W logits (after two steps the stride is 1).

Module and parameter names are detectron2's own (`backbone.bottom_up.res2.0.conv1.norm.weight`,
`backbone.fpn_lateral2.weight`, `sem_seg_head.coarse_sem_seg_head.p3.0.norm.bias`,
`sem_seg_head.point_head.fc1.weight`, ...), so a model-zoo checkpoint loads strictly without
renaming; `load_weights` only drops the pixel_mean / pixel_std buffers older checkpoints carry.

Point sampling has two spellings that give the same numbers: "grid_sample" (F.grid_sample, ONNX
GridSample from opset 16, for ONNX Runtime) and "gather" (one pixel zero border, floor corners,
flat gather, four-weight blend: opset 11 ops only, for ATC, which has no GridSample). The index
arithmetic follows the Ascend guide's patch: int32 for Mod and Div, coordinates stacked instead
of slice-assigned (no ScatterND), Expand shapes computed from constants only.

Shapes: the exported graph is for one H x W (as ATC's --input_shape is); the batch axis stays
free. Spatial sizes are read as Python ints (`_dims`), so TopK's k, Mod's divisor and every
reshape are constants in the graph instead of Shape arithmetic.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .pointrend_upstream import PIXEL_MEAN_BGR

NUM_CLASSES = 19
PIXEL_MEAN = PIXEL_MEAN_BGR  # MODEL.PIXEL_MEAN; PIXEL_STD is 1
RES_BLOCKS = (3, 4, 23, 3)  # ResNet-101
FPN_CHANNELS = 256
CONVS_DIM = 128
COMMON_STRIDE = 4
GN_GROUPS = 32
FC_DIM = 256
NUM_FC = 3
LEVELS = ("p2", "p3", "p4", "p5")  # SEM_SEG_HEAD.IN_FEATURES; the point head reads p2 only
SAMPLING = ("gather", "grid_sample")
RESIDUAL_SCALE = 0.5  # random_weights: scale of the last norm of each residual branch


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    """x.shape as Python ints, also under the TorchScript tracer (where sizes are traced
    tensors): the graph then holds constants for them, which is what we want (see above)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return tuple(int(d) for d in x.shape)


# ---------------------------------------------------------------- layers


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all buffers (detectron2's
    FrozenBN): eval-mode F.batch_norm, eps 1e-5. Initialised to identity. (Upstream takes this
    branch under torch.no_grad only; with autograd on it computes x * scale + shift instead,
    which differs in the last bits.)"""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps)


class Conv2d(nn.Conv2d):
    """A conv with an optional norm and activation after it, as detectron2's wrapper: the norm
    is a child module, hence the `conv1.norm.weight` names."""

    def __init__(self, *args, norm: nn.Module | None = None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.activation is None else self.activation(x)


# ---------------------------------------------------------------- backbone


class BasicStem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False, norm=FrozenBatchNorm2d(64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bottleneck: int, stride: int):
        super().__init__()
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                                   norm=FrozenBatchNorm2d(out_channels))
        # STRIDE_IN_1X1 (MSRA weights): the stride is in conv1, not in the 3x3 conv2
        self.conv1 = Conv2d(in_channels, bottleneck, kernel_size=1, stride=stride, bias=False,
                            norm=FrozenBatchNorm2d(bottleneck))
        self.conv2 = Conv2d(bottleneck, bottleneck, kernel_size=3, padding=1, bias=False, norm=FrozenBatchNorm2d(bottleneck))
        self.conv3 = Conv2d(bottleneck, out_channels, kernel_size=1, bias=False, norm=FrozenBatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """stem, res2..res5 -> [res2, res3, res4, res5] (strides 4, 8, 16, 32)."""

    def __init__(self, blocks: tuple[int, ...] = RES_BLOCKS):
        super().__init__()
        self.stem = BasicStem()
        in_channels, out_channels, bottleneck = 64, 256, 64
        self.stage_names = []
        for index, count in enumerate(blocks):
            stride = 1 if index == 0 else 2
            stage = [BottleneckBlock(in_channels, out_channels, bottleneck, stride)]
            stage += [BottleneckBlock(out_channels, out_channels, bottleneck, 1) for _ in range(count - 1)]
            name = f"res{index + 2}"
            self.add_module(name, nn.Sequential(*stage))
            self.stage_names.append(name)
            in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs


class FPN(nn.Module):
    """`bottom_up` plus fpn_lateral{2..5} (1x1) and fpn_output{2..5} (3x3), with biases (no
    norm) -> [p2, p3, p4, p5]."""

    def __init__(self, bottom_up: ResNet, channels: int = FPN_CHANNELS):
        super().__init__()
        for stage, in_channels in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
            self.add_module(f"fpn_lateral{stage}", Conv2d(in_channels, channels, kernel_size=1))
            self.add_module(f"fpn_output{stage}", Conv2d(channels, channels, kernel_size=3, padding=1))
        self.bottom_up = bottom_up

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.bottom_up(x)
        previous = self.fpn_lateral5(features[3])
        results = [self.fpn_output5(previous)]
        for stage in (4, 3, 2):
            top_down = F.interpolate(previous, scale_factor=2.0, mode="nearest")
            previous = getattr(self, f"fpn_lateral{stage}")(features[stage - 2]) + top_down
            results.insert(0, getattr(self, f"fpn_output{stage}")(previous))
        return results


# ---------------------------------------------------------------- heads


class SemSegFPNHead(nn.Module):
    """The coarse head; submodules named after their input level (`p2`..`p5`), as upstream's
    add_module(in_feature, ...): the convs sit at even indices of each Sequential after the
    first level, the nn.Upsample modules (no weights) between them."""

    def __init__(self, num_classes: int = NUM_CLASSES, channels: int = FPN_CHANNELS, conv_dims: int = CONVS_DIM):
        super().__init__()
        for level in LEVELS:
            stride = 2 ** int(level[1:])
            ops: list[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(COMMON_STRIDE)))):
                ops.append(Conv2d(channels if k == 0 else conv_dims, conv_dims, kernel_size=3, padding=1, bias=False,
                                  norm=nn.GroupNorm(GN_GROUPS, conv_dims), activation=F.relu))
                if stride != COMMON_STRIDE:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(level, nn.Sequential(*ops))
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[p2..p5] -> N x classes x H/4 x W/4 logits (upstream's `layers`, not its forward,
        which would also upsample x4)."""
        x = None
        for level, feature in zip(LEVELS, features):
            y = getattr(self, level)(feature)
            x = y if x is None else x + y
        return self.predictor(x)


class StandardPointHead(nn.Module):
    """Per point: cat(p2 features, coarse logits) -> NUM_FC x (Conv1d k=1, ReLU) -> Conv1d to
    the classes (class-specific: CLS_AGNOSTIC_MASK False)."""

    def __init__(self, in_channels: int = FPN_CHANNELS, num_classes: int = NUM_CLASSES, fc_dim: int = FC_DIM,
                 num_fc: int = NUM_FC, coarse_pred_each_layer: bool = False):
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.num_fc = num_fc
        dim_in = in_channels + num_classes
        for k in range(num_fc):
            self.add_module(f"fc{k + 1}", nn.Conv1d(dim_in, fc_dim, kernel_size=1))
            dim_in = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(dim_in, num_classes, kernel_size=1)

    def forward(self, fine_grained: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = torch.cat((fine_grained, coarse), dim=1)
        for k in range(self.num_fc):
            x = F.relu(getattr(self, f"fc{k + 1}")(x))
            if self.coarse_pred_each_layer:
                x = torch.cat((x, coarse), dim=1)
        return self.predictor(x)


# ---------------------------------------------------------------- point selection and sampling


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x 1 x H x W: second best minus best logit (<= 0; the most uncertain
    cell has the highest value), as upstream's calculate_uncertainty."""
    top2 = torch.topk(logits, k=2, dim=1)[0]
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def uncertain_points_on_grid(uncertainty: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `num_points` most uncertain cells of an N x 1 x H x W map: flat indices N x P (int64)
    and cell centres N x P x 2 as (x, y) in [0, 1] (upstream's get_uncertain_point_coords_on_grid,
    the same values). int32 for % and // (Ascend has no int64 Mod / Div); torch.stack instead of
    assigning into a zeros tensor (no ScatterND)."""
    _, _, h, w = _dims(uncertainty)
    h_step, w_step = 1.0 / float(h), 1.0 / float(w)
    k = min(h * w, num_points)
    indices = torch.topk(uncertainty.reshape(-1, h * w), k=k, dim=1)[1]
    flat = indices.to(torch.int32)
    x = w_step / 2.0 + (flat % w).to(torch.float) * w_step
    y = h_step / 2.0 + torch.div(flat, w, rounding_mode="floor").to(torch.float) * h_step
    return indices, torch.stack([x, y], dim=2)


def point_sample_grid(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """N x C x H x W features at N x P x 2 points in [0, 1] -> N x C x P: upstream's
    point_sample (F.grid_sample, bilinear, zeros padding, align_corners False)."""
    return F.grid_sample(features, (2.0 * coords - 1.0).unsqueeze(2), mode="bilinear", padding_mode="zeros",
                         align_corners=False).squeeze(3)


def point_sample_gather(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """point_sample_grid without GridSample: the map padded by one pixel of zeros, the four
    neighbours of each point gathered from the flattened map, blended with the bilinear
    weights. A neighbour outside the map lands on the zero border (or, clamped, beyond it),
    which is grid_sample's padding_mode="zeros". The arithmetic is grid_sample's own
    (unnormalise ((g + 1) * size - 1) / 2, weights against floor and floor + 1)."""
    _, c, h, w = _dims(features)
    p = _dims(coords)[1]
    grid = 2.0 * coords - 1.0
    x = ((grid[..., 0] + 1.0) * w - 1.0) / 2.0 + 1.0  # + 1: into the padded map
    y = ((grid[..., 1] + 1.0) * h - 1.0) / 2.0 + 1.0
    x0, y0 = torch.floor(x), torch.floor(y)
    x1, y1 = x0 + 1.0, y0 + 1.0
    west, east = (x1 - x).unsqueeze(1), (x - x0).unsqueeze(1)  # weights of the x0 and x1 columns
    north, south = (y1 - y).unsqueeze(1), (y - y0).unsqueeze(1)
    cols = [v.clamp(0, w + 1).to(torch.int64) for v in (x0, x1)]
    rows = [v.clamp(0, h + 1).to(torch.int64) for v in (y0, y1)]
    padded = F.pad(features, (1, 1, 1, 1)).reshape(-1, c, (h + 2) * (w + 2))

    def corner(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        # -1: the batch axis is kept (Expand broadcasts it), C and P are constants
        index = (row * (w + 2) + col).unsqueeze(1).expand(-1, c, p)
        return torch.gather(padded, 2, index)

    return (corner(rows[0], cols[0]) * (north * west) + corner(rows[0], cols[1]) * (north * east)
            + corner(rows[1], cols[0]) * (south * west) + corner(rows[1], cols[1]) * (south * east))


class PointRendSemSegHead(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, sampling: str = "grid_sample", subdivision_steps: int = 2,
                 subdivision_num_points: int = 8192):
        super().__init__()
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, not {sampling!r}")
        self.sampling = sampling
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        self.coarse_sem_seg_head = SemSegFPNHead(num_classes)
        self.point_head = StandardPointHead(FPN_CHANNELS, num_classes)

    def sample(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return (point_sample_gather if self.sampling == "gather" else point_sample_grid)(features, coords)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        coarse = self.coarse_sem_seg_head(features)
        logits = coarse
        for _ in range(self.subdivision_steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            indices, coords = uncertain_points_on_grid(calculate_uncertainty(logits), self.subdivision_num_points)
            # fine-grained features from p2 (POINT_HEAD.IN_FEATURES), coarse ones from the stride-4
            # prediction, not from the upsampled map being refined
            point_logits = self.point_head(self.sample(features[0], coords), self.sample(coarse, coords))
            _, c, h, w = _dims(logits)
            index = indices.unsqueeze(1).expand(-1, c, _dims(indices)[1])
            logits = logits.reshape(-1, c, h * w).scatter(2, index, point_logits).reshape(-1, c, h, w)
        return logits


class PointRendSemSeg(nn.Module):
    """detectron2's SemanticSegmentor minus its input handling: normalised images in, the
    head's logits out (upstream's sem_seg_postprocess is the identity at the input size)."""

    def __init__(self, num_classes: int = NUM_CLASSES, sampling: str = "grid_sample", subdivision_steps: int = 2,
                 subdivision_num_points: int = 8192):
        super().__init__()
        self.backbone = FPN(ResNet())
        self.sem_seg_head = PointRendSemSegHead(num_classes, sampling, subdivision_steps, subdivision_num_points)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, _, h, w = _dims(images)
        if h % 32 or w % 32:  # FPN's x2 top-down steps must meet the lateral maps exactly
            raise ValueError(f"input {h} x {w}: height and width must be multiples of 32 (pad as ImageList does)")
        return self.sem_seg_head(self.backbone(images))


def build_pointrend(num_classes: int = NUM_CLASSES, sampling: str = "grid_sample", subdivision_steps: int = 2,
                    subdivision_num_points: int = 8192) -> PointRendSemSeg:
    """The model in eval mode, weights as PyTorch initialises them: load a checkpoint
    (`load_weights`) or call `random_weights`."""
    return PointRendSemSeg(num_classes, sampling, subdivision_steps, subdivision_num_points).eval()


def random_weights(model: PointRendSemSeg, seed: int, calibrate: bool = True) -> PointRendSemSeg:
    """Seeded random weights (the same seed gives the same model). detectron2's own
    initialisation: c2_msra_fill (Kaiming normal, fan_out, ReLU; zero bias) for the ResNet convs,
    the coarse head and the point head's fc layers, c2_xavier_fill (Kaiming uniform, a=1; zero
    bias) for the FPN convs, normal std 0.001 for the point predictor, GroupNorm 1 / 0, FrozenBN
    identity.

    With identity FrozenBN the 33 residual blocks compound: p2 reaches ~1e7 and the logits ~1e5
    at 256 x 512, far past float16's 65504, so ATC's default force_fp16 would turn a random
    model's .om into inf / NaN. `calibrate` (the default) therefore sets each FrozenBN's
    running mean and variance from its input on one seeded noise image (what a trained BN holds),
    which keeps every activation of order 10 at most, and scales the last norm of each residual
    branch (conv3.norm) to 0.5: at 1 the random ResNet-101 is chaotic (float32 PyTorch and ONNX
    Runtime both end 2e-4 relative away from float64 at p2, so PointRend's top-k picks different
    points), at 0.5 they agree to 2e-6 (the trained model's last-BN scales are small too).
    `calibrate=False` leaves detectron2's identity FrozenBN."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Conv1d, nn.Conv2d)):
                continue
            if name == "sem_seg_head.point_head.predictor":
                module.weight.normal_(0.0, 0.001, generator=generator)
            elif name.startswith("backbone.fpn_"):
                bound = math.sqrt(3.0 / module.weight[0].numel())  # kaiming_uniform_(a=1): gain 1, fan_in
                module.weight.uniform_(-bound, bound, generator=generator)
            else:
                fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=generator)
            if module.bias is not None:
                module.bias.zero_()
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if calibrate:
            _calibrate_frozen_bn(model.backbone.bottom_up, torch.randn(1, 3, 128, 256, generator=generator) * 50.0)
    return model


def _calibrate_frozen_bn(backbone: ResNet, image: torch.Tensor) -> None:
    """One forward pass in which each FrozenBN, just before it runs, takes the per-channel mean
    and variance of its input as its statistics (layers run in order, so each one sees the
    already calibrated layers before it); residual branches end at RESIDUAL_SCALE."""

    def set_statistics(module: FrozenBatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(inputs[0].var(dim=(0, 2, 3), unbiased=False))

    handles = [m.register_forward_pre_hook(set_statistics) for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    for name, module in backbone.named_modules():
        if name.endswith("conv3.norm"):
            module.weight.fill_(RESIDUAL_SCALE)  # before the pass: later layers see the scaled branches
    try:
        backbone(image)
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------- checkpoints


# What a Detectron2 model-zoo .pkl may reference: numpy arrays (pickled by _reconstruct or, from
# protocol 5, _frombuffer), their dtypes, numpy scalars, OrderedDict, and bytes in protocol 2
# pickles (_codecs.encode, __builtin__.bytes). Anything else (os.system, builtins.eval, ...) is
# refused before it is looked up.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"), ("_codecs", "encode"), ("builtins", "bytes"), ("__builtin__", "bytes"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name}")
        if module == "__builtin__":  # Python 2's name, as the default find_class maps it
            module = "builtins"
        if module.startswith("numpy.core.") and importlib.util.find_spec("numpy._core") is not None:
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 moved it (the old path warns)
        return getattr(importlib.import_module(module), name)


def _read_pkl(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _ArraysOnlyUnpickler(f, encoding="latin1").load()  # latin1: detectron2's own choice
    except pickle.UnpicklingError as error:
        raise UserError(f"{path} is not a plain Detectron2 checkpoint: it references {error}, and only numpy "
                        "arrays may be unpickled", hint="use the model-zoo .pkl or a torch state dict (.pth)") from None
    if not (isinstance(data, dict) and isinstance(data.get("model"), dict) and "__author__" in data):
        raise UserError(f"{path} is not in Detectron2 model-zoo format ({{'model': {{name: array}}, '__author__': ...}})",
                        hint="Caffe2 / Detectron1 .pkl files need detectron2's name heuristics, which we do not apply")
    return data["model"]


def load_detectron2_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The `model` dict of a Detectron2 model-zoo .pkl (read by an unpickler that builds numpy
    arrays and nothing else), or of a torch checkpoint (torch.load weights_only; a `model` entry
    or a plain state dict). Values as numpy arrays."""
    path = Path(path)
    if path.suffix == ".pkl":
        state = _read_pkl(path)
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:  # weights_only refuses anything but tensors and containers
            raise UserError(f"{path} is not a plain torch state dict", details=str(error).splitlines()[:3]) from None
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise UserError(f"{path} holds no state dict")
    arrays = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            raise UserError(f"{path}: {key!r} is a {type(value).__name__}, not an array")
        arrays[key] = value
    return arrays


def _listed(keys: list[str], limit: int = 5) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state(model: PointRendSemSeg, state: dict[str, np.ndarray | torch.Tensor], origin: str = "the checkpoint") -> None:
    """Strict: every checkpoint tensor has its place and shape in the model, every model tensor
    is given. Two allowances, both detectron2's: pixel_mean / pixel_std (buffers of
    SemanticSegmentor in older checkpoints) are dropped once they are the values the
    preprocessing bakes in, and FrozenBN running statistics absent from the file are filled
    with 0 / 1, as FrozenBatchNorm2d._load_from_state_dict does for a state without version."""
    state = {key: torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
             for key, value in state.items()}
    for key, want in (("pixel_mean", PIXEL_MEAN), ("pixel_std", (1.0, 1.0, 1.0))):
        if key in state:
            got = state.pop(key).double().reshape(-1)
            if got.numel() != 3 or not torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-3):
                raise UserError(f"{origin}: {key} is {got.tolist()}, the preprocessing uses {list(want)}")
    for name, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d):
            state.setdefault(f"{name}.running_mean", torch.zeros_like(module.running_mean))
            state.setdefault(f"{name}.running_var", torch.ones_like(module.running_var))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"missing from {origin} ({len(missing)}): {_listed(missing)}")
        if unexpected:
            details.append(f"not in the model ({len(unexpected)}): {_listed(unexpected)}")
        raise UserError(f"{origin} does not fit the PointRend R-101 FPN model", details=details,
                        hint="expected detectron2's pointrend_semantic_R_101_FPN_1x_cityscapes (model_final_cf6ac1.pkl)")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise UserError(f"{origin}: {len(wrong)} tensors have the wrong shape (checkpoint vs model)",
                        details=[_listed(wrong)])
    model.load_state_dict(state, strict=True)


def load_weights(model: PointRendSemSeg, path: str | Path) -> PointRendSemSeg:
    load_state(model, load_detectron2_weights(path), origin=str(path))
    return model
