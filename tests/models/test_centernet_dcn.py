"""CenterNet's deformable convolution (DESIGN.md section 4, links 2 and 3), without upstream.

- The pure-PyTorch modulated deformable convolution equals a reference written from the
  papers' definition (DCNv1 eq. 1-3, DCNv2 eq. 3): y(p0) = sum_k w_k m_k x(p0 + p_k + dp_k),
  with x(p) = sum_q max(0, 1 - |q_y - p_y|) max(0, 1 - |q_x - p_x|) x(q) over the image's pixels
  q (so nothing outside the image contributes): random tensors, with and without mask, stride
  1 and 2, dilation, deformable and convolution groups, samples on and past the border.
- Exported for target `onnxruntime`, ONNX Runtime's DeformConv gives the same numbers.
- Exported for target `ascend`, the graph holds the guide's DeformableConv2D (inputs, attributes,
  the de-interleaved offset), and rewritten back to DeformConv it gives the same numbers again.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from om_pipeline.models import centernet_dcn as dcn
from om_pipeline.testing.atc_gate import gate_failures


def reference(x, offset, mask, weight, bias, stride, padding, dilation, deformable_groups):
    """The definition, literally, in float64: one output pixel, one tap, one channel at a time."""
    x, offset, weight = (np.asarray(a, np.float64) for a in (x, offset, weight))
    batch, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    groups = channels // group_channels
    taps = kh * kw
    out_h, out_w = offset.shape[2:]
    rows, cols = np.arange(height), np.arange(width)
    out = np.zeros((batch, out_channels, out_h, out_w))
    for n in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for k in range(taps):
                    a, b = divmod(k, kw)
                    for g in range(deformable_groups):
                        dy = offset[n, g * 2 * taps + 2 * k, i, j]
                        dx = offset[n, g * 2 * taps + 2 * k + 1, i, j]
                        py = i * stride[0] - padding[0] + a * dilation[0] + dy
                        px = j * stride[1] - padding[1] + b * dilation[1] + dx
                        kernel = np.maximum(0, 1 - np.abs(rows - py))[:, None] * np.maximum(0, 1 - np.abs(cols - px))[None, :]
                        modulation = 1.0 if mask is None else float(mask[n, g * taps + k, i, j])
                        per_group = channels // deformable_groups
                        for c in range(g * per_group, (g + 1) * per_group):
                            value = modulation * float((kernel * x[n, c]).sum())
                            conv_group = c // group_channels
                            for o in range(conv_group * out_channels // groups, (conv_group + 1) * out_channels // groups):
                                out[n, o, i, j] += weight[o, c - conv_group * group_channels, a, b] * value
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def random_case(seed, *, stride=1, padding=1, dilation=1, deformable_groups=1, groups=1, with_mask=True,
                size=(7, 6), channels=4, out_channels=6, offset_scale=2.5, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    x = torch.randn(2, channels, height, width, generator=generator, dtype=dtype)
    weight = torch.randn(out_channels, channels // groups, 3, 3, generator=generator, dtype=dtype)
    bias = torch.randn(out_channels, generator=generator, dtype=dtype)
    out_h = (height + 2 * padding - dilation * 2 - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * 2 - 1) // stride + 1
    offset = torch.randn(2, 2 * deformable_groups * 9, out_h, out_w, generator=generator, dtype=dtype) * offset_scale
    mask = torch.rand(2, deformable_groups * 9, out_h, out_w, generator=generator, dtype=dtype) if with_mask else None
    return x, offset, mask, weight, bias, dict(stride=stride, padding=padding, dilation=dilation, deformable_groups=deformable_groups)


CASES = {
    "stride1-mask": dict(stride=1),
    "stride1-no-mask": dict(stride=1, with_mask=False),
    "stride2-mask": dict(stride=2),
    "stride2-no-mask": dict(stride=2, with_mask=False),
    "dilation2": dict(dilation=2, padding=2),
    "deformable-groups2": dict(deformable_groups=2),
    "conv-groups2": dict(groups=2),
    "no-padding": dict(padding=0, size=(6, 8)),
    "one-row": dict(size=(1, 5)),
    "far-offsets": dict(offset_scale=8.0),
}


@pytest.mark.parametrize("case", CASES)
def test_pure_dcn_equals_the_definition(case):
    x, offset, mask, weight, bias, conf = random_case(sum(map(ord, case)), **CASES[case])
    got = dcn.modulated_deform_conv2d(x, offset, mask, weight, bias, **conf).numpy()
    want = reference(x, offset, None if mask is None else mask.numpy(), weight, bias.numpy(),
                     (conf["stride"],) * 2, (conf["padding"],) * 2, (conf["dilation"],) * 2, conf["deformable_groups"])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_samples_on_and_beyond_the_border():
    """Integer offsets put samples exactly on the last row/column, just outside (-1, H), and
    half a pixel outside: the definition gives full, zero and half weight."""
    x = torch.arange(1, 1 + 2 * 3 * 4, dtype=torch.float64).reshape(1, 2, 3, 4)
    weight = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    weight[0, :, 1, 1] = 1.0  # only the centre tap: y = x sampled at p0 + dp_centre
    for dy, dx in [(2.0, 3.0), (-1.0, 0.0), (0.0, -1.0), (3.0, 0.0), (-0.5, 0.0), (0.0, 3.5), (-1.5, -1.5)]:
        offset = torch.zeros(1, 18, 3, 4, dtype=torch.float64)
        offset[:, 8], offset[:, 9] = dy, dx  # tap 4 (the centre): channels 8 (dy) and 9 (dx)
        got = dcn.modulated_deform_conv2d(x, offset, None, weight, None, 1, 1, 1, 1).numpy()
        want = reference(x, offset, None, weight, None, (1, 1), (1, 1), (1, 1), 1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"offset ({dy}, {dx})")


def test_zero_offsets_and_unit_mask_are_an_ordinary_convolution():
    x, offset, mask, weight, bias, conf = random_case(3, stride=2)
    got = dcn.modulated_deform_conv2d(x, torch.zeros_like(offset), torch.ones_like(mask), weight, bias, **conf)
    want = torch.nn.functional.conv2d(x, weight, bias, stride=2, padding=1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_custom_op_is_the_same_function_and_one_traced_node():
    x, offset, mask, weight, bias, conf = random_case(4, stride=2, dtype=torch.float32)
    direct = dcn.modulated_deform_conv2d(x, offset, mask, weight, bias, **conf)
    through_op = dcn.modulated_deform_conv2d_op(x, offset, mask, weight, bias, **conf)
    assert torch.equal(direct, through_op)
    traced = torch.jit.trace(lambda *a: dcn.modulated_deform_conv2d_op(*a, **conf), (x, offset, mask, weight, bias))
    kinds = [node.kind() for node in traced.graph.nodes()]
    assert kinds.count(dcn.QUALIFIED_OP) == 1 and "aten::grid_sampler" not in kinds


class OneDCN(torch.nn.Module):
    """A DCN layer as CenterNet's: offsets and mask from a 3x3 conv, chunked, mask sigmoid."""

    def __init__(self, channels=4, out_channels=5, stride=1, deformable_groups=1):
        super().__init__()
        generator = torch.Generator().manual_seed(11)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, channels, 3, 3, generator=generator) * 0.3)
        self.bias = torch.nn.Parameter(torch.randn(out_channels, generator=generator))
        self.offsets = torch.nn.Conv2d(channels, deformable_groups * 27, 3, stride=stride, padding=1)
        torch.nn.init.normal_(self.offsets.weight, std=0.4, generator=generator)
        self.stride, self.deformable_groups = stride, deformable_groups

    def forward(self, x):
        dy_dx_1, dy_dx_2, mask = torch.chunk(self.offsets(x), 3, dim=1)
        offset, mask = torch.cat((dy_dx_1, dy_dx_2), dim=1), torch.sigmoid(mask)
        return dcn.modulated_deform_conv2d_op(x, offset, mask, self.weight, self.bias, self.stride, 1, 1, self.deformable_groups)

    def reference(self, x):
        with torch.no_grad():
            dy_dx_1, dy_dx_2, mask = torch.chunk(self.offsets(x), 3, dim=1)
            offset, mask = torch.cat((dy_dx_1, dy_dx_2), dim=1), torch.sigmoid(mask)
        return reference(x, offset, mask.numpy(), self.weight.detach(), self.bias.detach().numpy(),
                         (self.stride,) * 2, (1, 1), (1, 1), self.deformable_groups)


def export(module, x, target, path, opset):
    with dcn.onnx_symbolic(target, opset), torch.no_grad():
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"], output_names=["y"])
    return onnx.load(str(path))


def run(model, x):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})[0]


LAYERS = {"stride1": dict(), "stride2": dict(stride=2), "deformable-groups2": dict(deformable_groups=2)}


@pytest.mark.parametrize("layer", LAYERS)
def test_onnxruntime_target_runs_deformconv_with_the_same_numbers(layer, tmp_path):
    module = OneDCN(**LAYERS[layer])
    x = torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(5))
    model = export(module, x, "onnxruntime", tmp_path / "dcn.onnx", 19)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node].count("DeformConv") == 1
    node = next(n for n in model.graph.node if n.op_type == "DeformConv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    stride = LAYERS[layer].get("stride", 1)
    assert attrs == {"strides": [stride, stride], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1,
                     "offset_group": LAYERS[layer].get("deformable_groups", 1), "kernel_shape": [3, 3]}
    np.testing.assert_allclose(run(model, x), module.reference(x), rtol=0, atol=2e-5)


@pytest.mark.parametrize("layer", LAYERS)
def test_ascend_target_is_the_guides_deformableconv2d(layer, tmp_path):
    module = OneDCN(**LAYERS[layer])
    x = torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(6))
    model = export(module, x, "ascend", tmp_path / "dcn.onnx", 11)
    assert model.opset_import[0].version == 11
    producers = {out: node for node in model.graph.node for out in node.output}
    (node,) = [n for n in model.graph.node if n.op_type == "DeformableConv2D"]
    assert node.domain == ""  # the guide's g.op("DeformableConv2D"): the default domain, as atc's parser looks it up
    assert gate_failures(model, "centernet", with_flags=False) == []  # its plugin parses it (2-int pads, 4 inputs)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    stride = LAYERS[layer].get("stride", 1)
    dg = LAYERS[layer].get("deformable_groups", 1)
    assert attrs == {"strides": [stride, stride], "pads": [1, 1], "dilations": [1, 1], "groups": 1, "deformable_groups": dg}
    x_name, weight, offset_mask, bias = node.input
    assert x_name == "x" and "weight" in weight and "bias" in bias
    concat = producers[offset_mask]
    assert concat.op_type == "Concat" and onnx.helper.get_attribute_value(concat.attribute[0]) == 1
    gather, sigmoid = (producers[name] for name in concat.input)
    assert gather.op_type == "Gather" and sigmoid.op_type == "Sigmoid"
    order = onnx.numpy_helper.to_array(producers[gather.input[1]].attribute[0].t)
    # The guide: offset.reshape(N, -1, 2, H, W)[:, :, 1] (every dx), then [:, :, 0] (every dy).
    interleaved = torch.arange(2 * dg * 9).reshape(1, -1, 2)
    assert order.tolist() == torch.cat((interleaved[:, :, 1], interleaved[:, :, 0]), dim=1)[0].tolist()
    # Rewritten to the standard op, it computes the layer.
    np.testing.assert_allclose(run(dcn.ascend_to_standard(model), x), module.reference(x), rtol=0, atol=2e-5)


def test_symbolic_registration_is_scoped_and_checked(tmp_path):
    with pytest.raises(ValueError, match="opset 19"):
        with dcn.onnx_symbolic("onnxruntime", 17):
            pass
    with pytest.raises(ValueError, match="unknown export target"):
        with dcn.onnx_symbolic("tensorrt", 19):
            pass
    from torch.onnx._internal.torchscript_exporter.registration import registry

    with dcn.onnx_symbolic("ascend", 11):
        assert registry.is_registered_op(dcn.QUALIFIED_OP, 11)
    assert not registry.is_registered_op(dcn.QUALIFIED_OP, 11)
    module, x = OneDCN(), torch.randn(1, 4, 5, 5)
    # No symbolic for the op any more: the exporter gives up on it. Torch 2.13 says so as
    # UnsupportedOperatorError when none was ever registered in this process, and as a
    # ValueError from the emptied symbolic group after one was unregistered.
    with pytest.raises((torch.onnx.errors.UnsupportedOperatorError, ValueError),
                       match="ompipe_centernet::modulated_deform_conv2d|min\\(\\) arg is an empty sequence"):
        torch.onnx.export(module, (x,), str(tmp_path / "dcn.onnx"), dynamo=False, opset_version=11)
