"""PointRend semantic (detectron2 @ 861b50a, projects/PointRend) built from upstream's own code,
for the export environment (detectron2 importable there); the plugin imports this lazily.

The model is built as the guide's PointRend_pth2onnx.py builds it (get_cfg, add_pointrend_config,
merge_from_file, MODEL.DEVICE cpu, build_model), with two differences:
- no meta-arch patch: `Segmenter` wraps `model.backbone` and `model.sem_seg_head`, tensor in
  (N x 3 x H x W float32, BGR minus PIXEL_MEAN, std 1; H and W multiples of 32), logits out
  (N x 19 x H x W), which is what the patched meta-arch forward of the guide returns;
- weights through DetectionCheckpointer.load, never resume_or_load (which would pick a stale
  ./output/last_checkpoint instead of the given file).

Our patch (patches/pointrend) adds a switch to point_rend.point_features: POINT_SAMPLING
"grid_sample" (upstream, exports GridSample, opset >= 16) or "gather" (opset 11 ops only, for
ATC). `export` picks "gather" for the ascend target and "grid_sample" for onnxruntime.

Also a command, run inside the environment:
    python -m om_pipeline.models.pointrend_upstream parity --source S --height 256 --width 512 --out report.json
    python -m om_pipeline.models.pointrend_upstream export --source S --target ascend --out m.onnx

Top-level imports are stdlib and numpy only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np

DEFAULT_CONFIG = "projects/PointRend/configs/SemanticSegmentation/pointrend_semantic_R_101_FPN_1x_cityscapes.yaml"
DEFAULT_INPUT_SIZE = (1024, 2048)
PIXEL_MEAN_BGR = (103.530, 116.280, 123.675)
SAMPLING_MODES = ("grid_sample", "gather")
TARGETS = {"ascend": "gather", "onnxruntime": "grid_sample"}
GRID_SAMPLE_OPSET = 16  # ONNX GridSample


def target_opset(target: str, opset: int) -> int:
    """The opset a target's graph is written at: `opset` (the guide's 11) with gathers, at least
    16 with GridSample. The native export path uses the same rule."""
    return opset if TARGETS[target] == "gather" else max(opset, GRID_SAMPLE_OPSET)


def point_rend_module(source: Path):
    """Upstream's point_rend package: through detectron2's `detectron2.projects` finder (an
    in-place install of `source`), else imported by path from `<source>/projects/PointRend`."""
    source = Path(source).resolve()
    try:
        from detectron2.projects import point_rend
    except ImportError:
        path = str(source / "projects" / "PointRend")
        if not (Path(path) / "point_rend" / "__init__.py").is_file():
            raise FileNotFoundError(f"{source} is not a detectron2 checkout (no projects/PointRend/point_rend)")
        if path not in sys.path:
            sys.path.insert(0, path)
        import point_rend
    where = Path(point_rend.__file__).resolve()
    if source not in where.parents:
        raise RuntimeError(f"point_rend is imported from {where}, not from {source}: this environment's "
                           f"detectron2 is installed from another checkout (pip install --no-build-isolation -e {source})")
    return point_rend


def _point_features_modules() -> list:
    return [m for name, m in list(sys.modules.items())
            if m is not None and name.endswith("point_rend.point_features")]


@contextlib.contextmanager
def sampling(mode: str) -> Iterator[None]:
    """Set our patch's point_features.POINT_SAMPLING to `mode` ("gather" or "grid_sample") for
    the duration, in the point_rend package already imported (build the model first)."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, not {mode!r}")
    modules = _point_features_modules()
    if not modules:
        raise RuntimeError("point_rend is not imported yet: build the model first")
    for module in modules:
        if not hasattr(module, "POINT_SAMPLING"):
            raise RuntimeError(f"{module.__file__} lacks POINT_SAMPLING: the checkout is not patched "
                               "with patches/pointrend")
    before = [module.POINT_SAMPLING for module in modules]
    try:
        for module in modules:
            module.POINT_SAMPLING = mode
        yield
    finally:
        for module, value in zip(modules, before):
            module.POINT_SAMPLING = value


def _segmenter_class():
    from torch import nn

    class Segmenter(nn.Module):
        """Tensor in, logits out: the meta-arch's inference without normalisation, ImageList
        padding or sem_seg_postprocess (identity for inputs that are multiples of 32)."""

        def __init__(self, model):
            super().__init__()
            self.backbone = model.backbone
            self.sem_seg_head = model.sem_seg_head

        def forward(self, images):
            results, _ = self.sem_seg_head(self.backbone(images), None)
            return results

    return Segmenter


def _settle_random_weights(model, seed: int, input_size: tuple[int, int]) -> None:
    """Random weights as detectron2 initialises them are degenerate here (measured at 256 x 512,
    seed 0): every FrozenBatchNorm2d is the identity (mean 0, var 1, weight 1, bias 0), so
    ResNet-101's activations grow block after block to p2-p5 std ~2e6 and the refined logits to
    std ~2.5e4 (beyond float16); and the point head's predictor is N(0, 0.001), so the refined
    points' logits are ~50x smaller than the coarse ones around them. Normalising alone is not
    enough: a random ResNet-101 at unit gain is chaotic, float32 rounding (ONNX Runtime vs
    PyTorch) grows to ~1e-4 relative by res5, which moves PointRend's top-8192 point choice and
    whole refined pixels with it (argmax agreement 0.9993-0.9998, max abs up to 34).

    Seeded fixes, all from `seed`: each FrozenBN takes per-channel mean and variance (plus 0.1 x
    the layer's mean variance, so near-dead channels are not blown up) of what it receives in one
    forward pass over a seeded image, a scale U(0.5, 1.5) and a shift N(0, 0.1); the last norm of
    each bottleneck (conv3.norm) is scaled by 0.1, so residual branches are small next to the
    identity as in trained ResNets (cf. zero-init residual); the point head's predictor is
    redrawn N(0, 0.05). Then p2-p5 std ~2-6, logits std ~5-6 on coarse and refined points alike,
    13-16 classes predicted, and exports match eager to ~5e-5."""
    import torch
    from detectron2.layers import FrozenBatchNorm2d

    generator = torch.Generator().manual_seed(seed + 1)
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    residual_ends = {id(m) for name, m in model.backbone.named_modules() if name.endswith("conv3.norm")}

    def calibrate(module, inputs):
        x = inputs[0]
        channels = x.shape[1]
        var = x.var(dim=(0, 2, 3))
        gain = 0.1 if id(module) in residual_ends else 1.0
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(var + 0.1 * var.mean())
        module.weight.copy_(gain * (0.5 + torch.rand(channels, generator=generator)))
        module.bias.copy_(0.1 * torch.randn(channels, generator=generator))

    hooks = [m.register_forward_pre_hook(calibrate) for m in norms]
    try:
        with torch.no_grad():
            model.backbone(sample_images(1, input_size, seed + 2, torch_tensor=True))
    finally:
        for hook in hooks:
            hook.remove()
    predictor = model.sem_seg_head.point_head.predictor
    with torch.no_grad():
        predictor.weight.copy_(0.05 * torch.randn(predictor.weight.shape, generator=generator))


def build_model(source: Path, config: str = DEFAULT_CONFIG, weights: Path | None = None, seed: int = 0,
                input_size: tuple[int, int] = (256, 512)):
    """The PointRend semantic model in eval mode on CPU, wrapped: forward(images N x 3 x H x W,
    BGR minus mean, std 1) -> logits N x 19 x H x W. `weights` None = random weights seeded
    with `seed` (`input_size` is the size of the seeded image the random FrozenBN statistics
    are taken from)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model as d2_build_model

    source = Path(source)
    point_rend = point_rend_module(source)
    cfg = get_cfg()
    point_rend.add_pointrend_config(cfg)
    cfg.merge_from_file(str(source / config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    torch.manual_seed(seed)
    model = d2_build_model(cfg)
    if weights is not None:
        DetectionCheckpointer(model).load(str(weights))
    else:
        _settle_random_weights(model, seed, input_size)
    return _segmenter_class()(model).eval()


def sample_images(bs: int, input_size: tuple[int, int], seed: int, torch_tensor: bool = False):
    """Seeded street-scene-like inputs: smooth blobs plus pixel noise, uint8 range, BGR minus mean."""
    height, width = input_size
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (bs, 3, max(height // 32, 1), max(width // 32, 1)))
    ys = np.minimum((np.arange(height) * coarse.shape[2]) // height, coarse.shape[2] - 1)
    xs = np.minimum((np.arange(width) * coarse.shape[3]) // width, coarse.shape[3] - 1)
    image = coarse[:, :, ys][:, :, :, xs] + rng.normal(0, 20, (bs, 3, height, width))
    image = np.clip(np.round(image), 0, 255) - np.asarray(PIXEL_MEAN_BGR).reshape(1, 3, 1, 1)
    image = image.astype(np.float32)
    if torch_tensor:
        import torch
        return torch.from_numpy(image)
    return image


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def export_model(model, target: str, bs: int, input_size: tuple[int, int], out: Path, opset: int = 11,
                 input_names=("images",), output_names=("results",)) -> int:
    """Export `model` for `target`, static batch `bs`; returns the opset written (checked).
    Sampling by target (ascend: gather, onnxruntime: grid_sample); the opset: `opset` with
    gathers, max(opset, 16) with GridSample."""
    import torch

    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, not {target!r}")
    mode = TARGETS[target]
    height, width = input_size
    if height % 32 or width % 32:
        raise ValueError(f"input_size {height}x{width}: both must be multiples of 32 (the FPN's size divisibility)")
    opset = target_opset(target, opset)
    dummy = torch.zeros(bs, 3, height, width)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with sampling(mode), torch.no_grad():
        torch.onnx.export(model, (dummy,), str(out), input_names=list(input_names), output_names=list(output_names),
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    from ..onnx_info import describe  # onnx and ompipe's errors only: importable in the export environment

    written = describe(out, check=False)["opset"]
    if written != opset:
        raise RuntimeError(f"{out} has opset {written}, not the {opset} asked for")
    if target == "ascend" and "GridSample" in op_counts(out):
        raise RuntimeError(f"{out} holds GridSample, which ATC cannot convert")
    return written


def export(ctx, weights: Path | None) -> None:
    """The plugin's export (ctx: om_pipeline.plugin.ExportContext) in the export environment:
    `weights` a detectron2 checkpoint (the plugin writes seeded random ones as a .pkl), the
    target's sampling and opset."""
    input_size = tuple(int(v) for v in ctx.settings.input_size)  # ctx.settings: pointrend.Settings
    model = build_model(ctx.source, ctx.settings.config, weights, ctx.seed, input_size)
    export_model(model, ctx.target, ctx.bs, input_size, ctx.out, ctx.opset, ctx.input_names, ctx.output_names)


def compare(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    a = reference.astype(np.float64).ravel()
    b = other.astype(np.float64).ravel()
    return {
        "max_abs": float(np.max(np.abs(a - b))),
        "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
        "argmax_agreement": float(np.mean(reference.argmax(1) == other.argmax(1))),
    }


def sampling_parity(source: Path, seed: int) -> dict[str, float]:
    """Our gather point_sample vs F.grid_sample on random features and points (some outside
    [0, 1], and the exact borders), through the patched point_sample itself."""
    import torch

    point_features = point_rend_module(source).point_features
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 19, 64, 128, generator=generator)
    points = torch.rand(2, 8192, 2, generator=generator) * 1.2 - 0.1
    points[:, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    grid = torch.rand(2, 7, 9, 2, generator=generator) * 1.2 - 0.1
    result = {}
    for name, coords in (("points", points), ("grid", grid)):
        with sampling("grid_sample"):
            expected = point_features.point_sample(features, coords, align_corners=False)
        with sampling("gather"):
            got = point_features.point_sample(features, coords, align_corners=False)
        result[f"{name}_max_abs"] = float((expected - got).abs().max())
    return result


def parity(source: Path, input_size: tuple[int, int], seed: int, bs: int = 1, config: str = DEFAULT_CONFIG,
           workdir: Path | None = None) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    started = time.perf_counter()
    model = build_model(source, config, None, seed, input_size)
    images = sample_images(bs, input_size, seed)
    with torch.no_grad(), sampling("grid_sample"):
        reference = model(torch.from_numpy(images)).numpy()
    with torch.no_grad(), sampling("gather"):
        eager_gather = model(torch.from_numpy(images)).numpy()
    sorted_logits = np.sort(reference, axis=1)
    report: dict[str, Any] = {
        "input_size": list(input_size), "bs": bs, "seed": seed, "torch": torch.__version__, "onnxruntime": ort.__version__,
        "reference": {"shape": list(reference.shape), "std": float(reference.std()),
                      "abs_max": float(np.abs(reference).max()),
                      "top1_top2_gap_median": float(np.median(sorted_logits[:, -1] - sorted_logits[:, -2])),
                      "classes_predicted": int(len(np.unique(reference.argmax(1))))},
        "eager_gather_vs_grid_sample": compare(reference, eager_gather),
        "point_sample_gather_vs_grid_sample": sampling_parity(source, seed),
        "targets": {},
    }
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for target in TARGETS:
            path = Path(tmp) / f"pointrend_{target}.onnx"
            t0 = time.perf_counter()
            opset = export_model(model, target, bs, input_size, path)
            export_s = time.perf_counter() - t0
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            (output,) = session.run(["results"], {"images": images})
            report["targets"][target] = {
                "opset": opset, "export_s": round(export_s, 2), "onnx_bytes": path.stat().st_size,
                "sampling": TARGETS[target], **compare(reference, output), "ops": op_counts(path),
            }
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m om_pipeline.models.pointrend_upstream")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("parity", "export"):
        command = commands.add_parser(name)
        command.add_argument("--source", type=Path, required=True, help="the patched detectron2 checkout")
        command.add_argument("--config", default=DEFAULT_CONFIG)
        command.add_argument("--height", type=int, default=256)
        command.add_argument("--width", type=int, default=512)
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--bs", type=int, default=1)
        command.add_argument("--out", type=Path, required=True)
    commands.choices["export"].add_argument("--target", choices=sorted(TARGETS), default="ascend")
    commands.choices["export"].add_argument("--weights", type=Path, default=None)
    commands.choices["export"].add_argument("--opset", type=int, default=11)
    args = parser.parse_args(argv)
    input_size = (args.height, args.width)
    if args.command == "parity":
        report = parity(args.source, input_size, args.seed, args.bs, args.config)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return 0
    t0 = time.perf_counter()
    model = build_model(args.source, args.config, args.weights, args.seed, input_size)
    t1 = time.perf_counter()
    opset = export_model(model, args.target, args.bs, input_size, args.out, args.opset)
    t2 = time.perf_counter()
    print(json.dumps({"out": str(args.out), "opset": opset, "build_s": round(t1 - t0, 1), "export_s": round(t2 - t1, 1),
                      "onnx_bytes": args.out.stat().st_size, "ops": op_counts(args.out)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
