"""Modulated deformable convolution (DCNv2) in plain PyTorch, as one custom op that exports to
ONNX for either target.

CenterNet's DLA-34 holds 16 DCNv2 layers. Upstream's implementation is a CUDA-only PyTorch 0.4
extension; our patch replaces it with a pure-PyTorch module (same parameter names, so the
checkpoint loads strictly), and at export time the plugin routes that module's deformable
convolution through the op defined here, `ompipe_centernet::modulated_deform_conv2d`, so the
traced graph holds one node per layer instead of hundreds of gathers. That node becomes:

- target `onnxruntime`: the standard ONNX `DeformConv` (opset 19; ONNX Runtime CPU runs it from
  1.25 on), inputs (X, W, offset, B, mask), offsets as upstream lays them out;
- target `ascend`: the Ascend custom op `DeformableConv2D` as the Ascend ModelZoo guide emits it
  (ACL_PyTorch/contrib/cv/detection/CenterNet/dcn_v2.py): inputs (X, W, offset27, B), with
  offset27 = concat(all dx, all dy, mask) and attributes strides, pads, dilations (pairs),
  groups=1, deformable_groups. ONNX Runtime cannot run it; `ascend_to_standard` rewrites such a
  graph back to `DeformConv` so it can be checked numerically.

Conventions (upstream's CUDA kernel, torchvision and ONNX agree): the offset tensor has
2 * deformable_groups * kh * kw channels; for deformable group g and kernel tap k = i * kw + j,
channel g*2*K + 2k is the row (y) offset and g*2*K + 2k + 1 the column (x) offset; the mask has
deformable_groups * K channels (channel g*K + k); a sample at a fractional position is bilinear
in its four neighbours, a neighbour outside the image counting as 0.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

OP_NAMESPACE = "ompipe_centernet"
OP_NAME = "modulated_deform_conv2d"
QUALIFIED_OP = f"{OP_NAMESPACE}::{OP_NAME}"
ASCEND_OP = "DeformableConv2D"
ONNX_OP = "DeformConv"
MIN_DEFORMCONV_OPSET = 19  # DeformConv entered the ONNX standard in opset 19
TARGETS = ("onnxruntime", "ascend")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def modulated_deform_conv2d(
    x: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    deformable_groups: int = 1,
) -> Tensor:
    """y[n, o, p] = b[o] + sum_{c, k} W[o, c, k] * m[n, k, p] * x[n, c](p0 + p_k + dp_k), with
    x(.) bilinear and zero outside the image; `mask=None` is DCNv1 (m = 1). Convolution groups
    come from weight.shape[1] (= in_channels / groups)."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    batch, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    taps = kh * kw
    dg = int(deformable_groups)
    if channels % dg or channels % group_channels:
        raise ValueError(f"{channels} input channels do not split into {dg} deformable groups and weight {tuple(weight.shape)}")
    out_h, out_w = offset.shape[-2:]
    if offset.shape[1] != 2 * dg * taps or (mask is not None and mask.shape[1] != dg * taps):
        raise ValueError(f"offset {tuple(offset.shape)} / mask {None if mask is None else tuple(mask.shape)} do not fit "
                         f"{dg} deformable group(s) of a {kh}x{kw} kernel")
    dtype, device = x.dtype, x.device

    # Sampling positions, in input pixels: (batch, dg, taps, out_h, out_w).
    rows = torch.arange(out_h, dtype=dtype, device=device) * sh - ph
    cols = torch.arange(out_w, dtype=dtype, device=device) * sw - pw
    tap_rows = (torch.arange(kh, dtype=dtype, device=device) * dh).repeat_interleave(kw)
    tap_cols = (torch.arange(kw, dtype=dtype, device=device) * dw).repeat(kh)
    pairs = offset.reshape(batch, dg, taps, 2, out_h, out_w)
    y = rows.view(1, 1, 1, out_h, 1) + tap_rows.view(1, 1, taps, 1, 1) + pairs[:, :, :, 0]
    x_pos = cols.view(1, 1, 1, 1, out_w) + tap_cols.view(1, 1, taps, 1, 1) + pairs[:, :, :, 1]

    # One ring of zeros around the image, then grid_sample with align_corners=True on the padded
    # image: pixel centres map exactly, a corner outside the padded image reads 0, and a 1-pixel
    # image still has a well-defined normalisation.
    padded = F.pad(x, (1, 1, 1, 1)).reshape(batch * dg, channels // dg, height + 2, width + 2)
    grid = torch.stack([(x_pos + 1) * (2.0 / (width + 1)) - 1, (y + 1) * (2.0 / (height + 1)) - 1], dim=-1)
    grid = grid.reshape(batch * dg, taps * out_h, out_w, 2)
    sampled = F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.reshape(batch, dg, channels // dg, taps, out_h, out_w)
    if mask is not None:
        sampled = sampled * mask.reshape(batch, dg, 1, taps, out_h, out_w)

    # The convolution itself: columns (channel-major, then tap) times the flattened weight.
    groups = channels // group_channels
    columns = sampled.reshape(batch, groups, group_channels * taps, out_h * out_w)
    kernel = weight.reshape(groups, out_channels // groups, group_channels * taps)
    out = torch.matmul(kernel.unsqueeze(0), columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, out_channels, 1, 1)
    return out


# ---------------------------------------------------------------- the custom op


@torch.library.custom_op(QUALIFIED_OP, mutates_args=())
def _op(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    deformable_groups: int,
) -> Tensor:
    return modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation, deformable_groups)


@_op.register_fake
def _op_shape(x, offset, mask, weight, bias, stride, padding, dilation, deformable_groups):
    return x.new_empty(x.shape[0], weight.shape[0], offset.shape[-2], offset.shape[-1])


def modulated_deform_conv2d_op(x, offset, mask, weight, bias, stride=1, padding=0, dilation=1, deformable_groups=1) -> Tensor:
    """Same call as `modulated_deform_conv2d`, through the custom op (one node when traced)."""
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    if mask is None:
        mask = offset.new_ones(offset.shape[0], offset.shape[1] // 2, *offset.shape[-2:])
    return torch.ops.ompipe_centernet.modulated_deform_conv2d(
        x, offset, mask, weight, bias, list(_pair(stride)), list(_pair(padding)), list(_pair(dilation)), int(deformable_groups))


# ---------------------------------------------------------------- ONNX symbolics


def _constants(stride, padding, dilation, deformable_groups):
    from torch.onnx import symbolic_helper

    return (
        symbolic_helper._get_const(stride, "is", "stride"),
        symbolic_helper._get_const(padding, "is", "padding"),
        symbolic_helper._get_const(dilation, "is", "dilation"),
        symbolic_helper._get_const(deformable_groups, "i", "deformable_groups"),
    )


def _weight_shape(weight) -> list[int]:
    from torch.onnx import symbolic_helper

    sizes = symbolic_helper._get_tensor_sizes(weight)
    if not sizes or any(s is None for s in sizes):
        raise RuntimeError("DeformConv export needs the weight's static shape")
    return [int(s) for s in sizes]


def _input_channels(x) -> int:
    from torch.onnx import symbolic_helper

    sizes = symbolic_helper._get_tensor_sizes(x)
    if not sizes or sizes[1] is None:
        raise RuntimeError("DeformConv export needs the input's static channel count")
    return int(sizes[1])


def _onnx_deformconv(g, x, offset, mask, weight, bias, stride, padding, dilation, deformable_groups):
    """ONNX DeformConv-19: the offset layout is upstream's, so offset and mask pass unchanged."""
    strides, pads, dilations, offset_group = _constants(stride, padding, dilation, deformable_groups)
    out_channels, group_channels, kh, kw = _weight_shape(weight)
    return g.op(
        ONNX_OP, x, weight, offset, bias, mask,
        strides_i=list(strides), pads_i=[pads[0], pads[1], pads[0], pads[1]], dilations_i=list(dilations),
        group_i=_input_channels(x) // group_channels, offset_group_i=offset_group, kernel_shape_i=[kh, kw],
    )


def ascend_offset_order(channels: int) -> list[int]:
    """Where each channel of the guide's de-interleaved offset comes from in upstream's
    interleaved one: the guide reshapes (N, -1, 2, H, W) and takes [:, :, 1] (all dx) then
    [:, :, 0] (all dy)."""
    return list(range(1, channels, 2)) + list(range(0, channels, 2))


def _ascend_deformableconv2d(g, x, offset, mask, weight, bias, stride, padding, dilation, deformable_groups):
    """The guide's DeformableConv2D(X, W, concat(dx, dy, mask), B); its attributes as pairs,
    groups=1 as the guide writes it (DCNv2 has no convolution groups; the input's channel count
    is not known here once an earlier DeformableConv2D, which no shape inference knows, feeds it)."""
    strides, pads, dilations, dg = _constants(stride, padding, dilation, deformable_groups)
    _, _, kh, kw = _weight_shape(weight)
    order = g.op("Constant", value_t=torch.tensor(ascend_offset_order(2 * dg * kh * kw), dtype=torch.int64))
    deinterleaved = g.op("Gather", offset, order, axis_i=1)
    offset_mask = g.op("Concat", deinterleaved, mask, axis_i=1)
    return g.op(
        ASCEND_OP, x, weight, offset_mask, bias,
        strides_i=list(strides), pads_i=list(pads), dilations_i=list(dilations), groups_i=1, deformable_groups_i=dg,
    )


SYMBOLICS = {"onnxruntime": _onnx_deformconv, "ascend": _ascend_deformableconv2d}


@contextmanager
def onnx_symbolic(target: str, opset: int) -> Iterator[None]:
    """Register the op's exporter for `target` during a TorchScript-exporter export
    (`torch.onnx.export(..., dynamo=False)`), and remove it afterwards."""
    if target not in SYMBOLICS:
        raise ValueError(f"unknown export target {target!r} (one of {', '.join(TARGETS)})")
    if target == "onnxruntime" and opset < MIN_DEFORMCONV_OPSET:
        raise ValueError(f"ONNX DeformConv needs opset {MIN_DEFORMCONV_OPSET} or later (asked for {opset})")
    torch.onnx.register_custom_op_symbolic(QUALIFIED_OP, SYMBOLICS[target], opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(QUALIFIED_OP, opset)


# ---------------------------------------------------------------- Ascend graph -> standard graph


def ascend_to_standard(model, opset: int = MIN_DEFORMCONV_OPSET):
    """A copy of an `ascend`-target graph that ONNX Runtime can run: each DeformableConv2D(X, W,
    concat(dx, dy, mask), B) becomes DeformConv(X, W, offset, B, mask) with the offset
    re-interleaved (two Gathers). Reads only the node, its attributes and W's shape, so it
    checks what atc would get. The default-domain opset is raised to `opset` (>= 19); that is
    only done for graphs made of operators whose meaning did not change from opset 11 to 19
    (what CenterNet's graph holds), and the result must pass the ONNX checker."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    unknown = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")} - STABLE_FROM_11_TO_19 - {ASCEND_OP})
    if unknown:
        raise ValueError(f"cannot raise the opset of a graph with {', '.join(unknown)} (not checked for opset 11 -> 19)")
    weight_shapes = _initializer_shapes(model)
    nodes = []
    for node in model.graph.node:
        if node.op_type != ASCEND_OP:
            nodes.append(node)
            continue
        x, weight, offset_mask, bias = node.input
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if weight not in weight_shapes:
            raise ValueError(f"{node.name}: the weight {weight} is not a constant of the graph")
        kh, kw = weight_shapes[weight][2:]
        dg = int(attrs.get("deformable_groups", 1))
        offset_channels = 2 * dg * kh * kw
        inverse = [0] * offset_channels
        for position, source in enumerate(ascend_offset_order(offset_channels)):
            inverse[source] = position
        prefix = f"{node.name or node.output[0]}_standard"
        order, offset, mask_order, mask = (f"{prefix}_{s}" for s in ("order", "offset", "mask_order", "mask"))
        model.graph.initializer.extend([
            numpy_helper.from_array(_int64(inverse), order),
            numpy_helper.from_array(_int64(range(offset_channels, offset_channels + dg * kh * kw)), mask_order),
        ])
        nodes.append(helper.make_node("Gather", [offset_mask, order], [offset], axis=1, name=f"{prefix}_gather_offset"))
        nodes.append(helper.make_node("Gather", [offset_mask, mask_order], [mask], axis=1, name=f"{prefix}_gather_mask"))
        strides, pads, dilations = (_pairs(attrs[k]) for k in ("strides", "pads", "dilations"))
        nodes.append(helper.make_node(
            ONNX_OP, [x, weight, offset, bias, mask], list(node.output), name=node.name or f"{prefix}_deformconv",
            strides=strides, pads=pads + pads if len(pads) == 2 else pads, dilations=dilations,
            group=int(attrs.get("groups", 1)), offset_group=dg, kernel_shape=[int(kh), int(kw)],
        ))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = max(entry.version, opset)
    onnx.checker.check_model(model)
    return model


# Operators whose definition is the same (for what a TorchScript export at opset 11 writes) in
# opsets 11 and 19, so an opset-11 graph of them means the same read as opset 19.
STABLE_FROM_11_TO_19 = frozenset({
    "Add", "BatchNormalization", "Concat", "Constant", "Conv", "ConvTranspose", "Div", "Gather", "Identity",
    "MaxPool", "Mul", "Relu", "Shape", "Sigmoid", "Slice", "Sub", "Transpose", "Cast",
})


def _initializer_shapes(model) -> dict[str, list[int]]:
    """Shapes of the graph's constants, also under the names Identity nodes give them (the
    exporter routes shared weights through Identity)."""
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    return shapes


def _pairs(values) -> list[int]:
    values = [int(v) for v in values]
    return values * 2 if len(values) == 1 else values


def _int64(values):
    import numpy as np

    return np.asarray(list(values), dtype=np.int64)
