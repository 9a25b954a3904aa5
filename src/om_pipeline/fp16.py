"""ATC's precision modes, emulated on the CPU with ONNX Runtime (ascend-strictness.md §3).

Under ATC's default `--precision_mode=force_fp16` every float op of the .om takes fp16 inputs
and stores an fp16 output; inside the op the Cube unit accumulates in fp32. `emulate` rewrites an
ONNX graph to compute exactly that on the CPU: each float tensor an fp16 op produces goes
through `Cast(to=FLOAT16) -> Cast(to=FLOAT)` (fp16 storage: rounding, overflow to inf above
65504, underflow), float weights are rounded to fp16 values, and ONNX Runtime still computes
each op in fp32. What ATC keeps at its original dtype stays untouched: `Cast` outputs (a
dtype-sensitive op), the nodes a `--keep_dtype` file names, and the graph's fp32 outputs keep
their dtype (`--output_type` defaults to the original's), though the values they carry were
stored in fp16 by the op that made them.

Per mode (GE docs `--precision_mode.md`, `--precision_mode_v2.md`):
- force_fp16 / fp16 (default): every float op in fp16.
- allow_mix_precision(_fp16) / mixed_float16: as force_fp16. The per-op white / black lists
  live in the installed opp's `aic-<soc>-ops-info*.json`, which is not public for the 310P, so
  the emulation takes the pessimistic side: every op reduced.
- allow_fp32_to_fp16: cube ops (Conv, MatMul, ...) in fp16, vector ops keep fp32.
- force_fp32 / cube_fp16in_fp32out: cube ops take fp16 inputs and give fp32 outputs; the rest fp32.
- must_keep_origin_dtype / origin: nothing changes (--keep_dtype has no effect there either).
- bf16 and hif8 modes: not emulated (no 310P supports them).

ONNX Runtime must not fold the Cast pairs away: `CastChainElimination` (optional in ORT) would
turn float -> float16 -> float into nothing, so `session` switches it off by name and by its
config key; tests/test_fp16.py proves the rounding survives the optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .errors import UserError

if TYPE_CHECKING:  # onnx is imported lazily, as everywhere in ompipe
    import onnx

DEFAULT_MODE = "force_fp16"  # atc's default when neither flag is given
FP16_EVERYWHERE = frozenset({"force_fp16", "fp16", "allow_mix_precision", "allow_mix_precision_fp16", "mixed_float16"})
CUBE_FP16 = frozenset({"allow_fp32_to_fp16"})
CUBE_FP16_IN = frozenset({"force_fp32", "cube_fp16in_fp32out"})
ORIGIN = frozenset({"must_keep_origin_dtype", "origin"})
EMULATED_MODES = FP16_EVERYWHERE | CUBE_FP16 | CUBE_FP16_IN | ORIGIN
# Matrix ("cube") ops in ONNX terms, the Ascend custom conv included.
CUBE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "DeformConv", "DeformableConv2D", "Einsum"})
# Ops whose dtype ATC keeps in every mode (FE op_info_common.cc IsDtypeSensitiveOp).
DTYPE_SENSITIVE = frozenset({"Cast"})
# A few ONNX op types under their Ascend IR name, for `OpType::` lines of a --keep_dtype file
# (msit's map_conf/onnx.yaml); any other op type matches an ONNX op of the same name.
ASCEND_IR_TYPE = {"Conv": "Conv2D", "MatMul": "BatchMatMulV2", "Div": "RealDiv", "Softmax": "SoftmaxV2",
                  "GridSample": "GridSampler2D", "Where": "SelectV2", "ReduceL2": "LpNorm"}
LABEL = "emulated fp16"  # provenance: every number made through the emulation says so
SUFFIX_FP32 = "__ompipe_fp32"
SUFFIX_FP16 = "__ompipe_fp16"


@dataclass(frozen=True)
class Precision:
    """An atc precision setting: the mode (from --precision_mode or --precision_mode_v2) and the
    --keep_dtype entries (node names, and op types from `OpType::` lines)."""

    mode: str = DEFAULT_MODE
    keep_names: frozenset[str] = field(default_factory=frozenset)
    keep_types: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.mode not in EMULATED_MODES:
            raise UserError(f"precision mode {self.mode!r} is not emulated",
                            hint=f"choose one of {', '.join(sorted(EMULATED_MODES))}")

    @property
    def reduces(self) -> bool:
        """Whether anything is computed below fp32 (the results then say `emulated fp16`)."""
        return reduces(self.mode)

    @property
    def numerics(self) -> str:
        """What the results call it: `fp16-emulated` or `fp32`."""
        return "fp16-emulated" if self.reduces else "fp32"

    def kept(self, node: "onnx.NodeProto") -> bool:
        if node.op_type in DTYPE_SENSITIVE:
            return True
        return node.name in self.keep_names or ASCEND_IR_TYPE.get(node.op_type, node.op_type) in self.keep_types

    def fp16_io(self, node: "onnx.NodeProto") -> tuple[bool, bool]:
        """(fp16 inputs, fp16 output storage) of one node under this mode."""
        if not self.reduces or self.kept(node):
            return False, False
        if self.mode in FP16_EVERYWHERE:
            return True, True
        cube = node.op_type in CUBE_OPS
        if self.mode in CUBE_FP16:
            return cube, cube
        return cube, False  # CUBE_FP16_IN


def reduces(mode: str) -> bool:
    """Whether ATC computes anything below fp32 under this mode (every mode but the origin ones)."""
    return mode not in ORIGIN


def precision_of(settings: Mapping[str, object]) -> Precision:
    """The Precision a fake .om's meta (or atc's flags) records: precision_mode or
    precision_mode_v2 (atc takes at most one), and keep_dtype as [names, types] or a file path."""
    mode = settings.get("precision_mode_v2") or settings.get("precision_mode") or DEFAULT_MODE
    keep = settings.get("keep_dtype") or {}
    if isinstance(keep, str):
        keep = read_keep_dtype(Path(keep))
    return Precision(str(mode), frozenset(keep.get("names", [])), frozenset(keep.get("types", [])))


def read_keep_dtype(path: Path) -> dict[str, list[str]]:
    """A --keep_dtype file: one node name per line, or `OpType::TypeName` (GE keep_dtype_option.cc)."""
    names, types = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry:
            continue
        if entry.startswith("OpType::"):
            types.append(entry[len("OpType::"):])
        else:
            names.append(entry)
    return {"names": names, "types": types}


# ---------------------------------------------------------------------------------------------
# The graph rewrite


def emulate(model: "onnx.ModelProto", precision: Precision) -> tuple["onnx.ModelProto", dict]:
    """A copy of `model` that computes as the .om would under `precision`, and a summary
    (`rounded`: tensors stored in fp16, `kept`: float-producing nodes kept at fp32, `untyped`:
    node outputs shape inference could not type, left fp32). Top-level graph only: the nodes
    inside control-flow bodies (If, Loop; none in the shipped models) compute in fp32."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    summary = {"mode": precision.mode, "rounded": 0, "kept": [], "untyped": 0}
    if precision.reduces:
        _Rewriter(copy, precision, summary).run()
    return copy, summary


class _Rewriter:
    def __init__(self, model: "onnx.ModelProto", precision: Precision, summary: dict):
        import onnx

        self.onnx = onnx
        self.graph = model.graph
        self.precision = precision
        self.summary = summary
        self.types = _elem_types(model)
        self.initializers = {tensor.name: tensor for tensor in self.graph.initializer}
        self.fp16_valued: set[str] = set()  # tensors already holding fp16 values
        self.rounded_copy: dict[str, str] = {}  # fp32 tensor -> its fp16-rounded copy
        self.nodes: list = []

    def is_float(self, name: str) -> bool:
        return self.types.get(name) == self.onnx.TensorProto.FLOAT

    def run(self) -> None:
        self.round_weights_in_place()
        for node in self.graph.node:
            fp16_in, fp16_out = self.precision.fp16_io(node)
            if fp16_in:
                for index, name in enumerate(node.input):
                    if name and self.is_float(name) and name not in self.fp16_valued:
                        node.input[index] = self.rounded(name)
            self.nodes.append(node)
            if fp16_out:
                self.round_outputs(node)
            elif any(self.is_float(out) for out in node.output) and self.precision.kept(node):
                self.summary["kept"].append(node.name or node.op_type)
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)

    def round_weights_in_place(self) -> None:
        """Float weights read only by fp16 ops are stored as fp16 values (ATC converts them at
        compile time); weights a kept op also reads get a rounded copy instead (`rounded`)."""
        from onnx import numpy_helper

        readers: dict[str, list[bool]] = {}
        for node in self.graph.node:
            fp16_in = self.precision.fp16_io(node)[0]
            for name in node.input:
                readers.setdefault(name, []).append(fp16_in)
        for name, tensor in self.initializers.items():
            if tensor.data_type == self.onnx.TensorProto.FLOAT and readers.get(name) and all(readers[name]):
                tensor.CopyFrom(numpy_helper.from_array(_fp16_values(numpy_helper.to_array(tensor)), name))
                self.fp16_valued.add(name)
                self.summary["rounded"] += 1

    def rounded(self, name: str) -> str:
        """The fp16-rounded copy of an fp32 tensor an fp16 op reads (a graph input, a kept op's
        output, a weight shared with a kept op): made once, shared by every such reader."""
        if name in self.rounded_copy:
            return self.rounded_copy[name]
        copy = name + SUFFIX_FP16 + "_in"
        if name in self.initializers:
            from onnx import numpy_helper

            array = numpy_helper.to_array(self.initializers[name])
            self.graph.initializer.append(numpy_helper.from_array(_fp16_values(array), copy))
        else:
            self.nodes.extend(self.cast_pair(name, copy))
        self.rounded_copy[name] = copy
        self.fp16_valued.add(copy)
        self.summary["rounded"] += 1
        return copy

    def round_outputs(self, node) -> None:
        """The op stores its float outputs in fp16: its output is renamed and the Cast pair
        writes the original name, so every reader (and a graph output) sees the rounded value."""
        for index, name in enumerate(node.output):
            if not name:
                continue
            if name not in self.types:
                self.summary["untyped"] += 1
                continue
            if not self.is_float(name):
                continue
            node.output[index] = name + SUFFIX_FP32
            self.nodes.extend(self.cast_pair(name + SUFFIX_FP32, name))
            self.fp16_valued.add(name)
            self.summary["rounded"] += 1

    def cast_pair(self, source: str, target: str) -> list:
        helper, tensor = self.onnx.helper, self.onnx.TensorProto
        middle = target + SUFFIX_FP16
        return [helper.make_node("Cast", [source], [middle], to=tensor.FLOAT16, name=middle + "_cast"),
                helper.make_node("Cast", [middle], [target], to=tensor.FLOAT, name=target + "_cast")]


def _fp16_values(array):
    import numpy as np

    with np.errstate(over="ignore"):  # overflow to inf is what fp16 storage does
        return array.astype(np.float16).astype(np.float32)


def _elem_types(model: "onnx.ModelProto") -> dict[str, int]:
    """Element type of every top-level tensor: graph inputs, weights, shape inference's view."""
    import onnx

    from .onnx_info import without_weights

    try:  # the weights' types and shapes are all inference needs; copying 100s of MB of them took seconds
        inferred = onnx.shape_inference.infer_shapes(without_weights(model), strict_mode=False).graph
    except Exception:  # a graph the inference cannot handle (e.g. over 2 GB): what is declared
        inferred = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*inferred.input, *inferred.value_info, *inferred.output] if vi.type.tensor_type.elem_type}
    graph = model.graph
    types.update({tensor.name: tensor.data_type for tensor in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


# ---------------------------------------------------------------------------------------------
# Running it


def session_options():
    """ONNX Runtime options for an emulated graph: every optimisation except the one that would
    fold `Cast(float16) -> Cast(float)` away (also refused by name in `session`)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("optimization.enable_cast_chain_elimination", "0")
    return options


def session(model: "onnx.ModelProto", precision: Precision, options=None):
    """An ONNX Runtime CPU session computing `model` as the .om would under `precision`."""
    import onnxruntime

    emulated, _ = emulate(model, precision)
    options = options or session_options()  # callers' own options come from session_options() too
    return onnxruntime.InferenceSession(emulated.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=["CastChainElimination"])

