"""Ascend-unfriendly patterns that atc accepts but that cost accuracy, speed or a late failure:
warnings, not refusals (those are atc_ops). Rows as msit analyze writes its result.csv
(ori_op_name, ori_op_type, op_type, engine, is_supported, details), shown in the atc stage's
log and by `ompipe doctor MODEL`.

Sources (ascend-strictness.md §1.3, §4): msit debug surgeon's knowledge base (KnowledgeTopkFix:
the NPU's TopK gives int32 indices where ONNX says int64, seen as `E89999 ... type1:DT_INT64,
type2:DT_INT32`); the kernels' dtype lists (canndev ops/built-in/tbe/impl/mod.py: Mod without
int64; ops-math math/real_div/op_host/real_div_def.cpp: RealDiv, ATC's Div, without int64);
ops-nn resize_onnx_plugin.cpp ParseResizeModeAttrs (only half_pixel / pytorch_half_pixel and
align_corners reach the kernel; nearest_mode is never read); ops that usually run on AI CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .atc_ops import DEFAULT_CANN, FP16_LOWERING_MODES, GraphNode, domain_opsets, op_table, tensor_types, walk

if TYPE_CHECKING:
    import onnx

INT64 = 7  # onnx.TensorProto.INT64
FLOAT = 1
ARITHMETIC = {"Add", "Sub", "Mul", "Div", "Mod", "Pow"}
# Ops that pass a tensor's values through (reshaping or selecting): the TopK indices stay indices.
VIEWS = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Identity", "Expand", "Concat", "Slice", "Gather"}
AI_CPU_USUALLY = {"NonZero", "NonMaxSuppression", "Unique", "ScatterND"}
HALF_PIXEL_MODES = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"}
COLUMNS = ("ori_op_name", "ori_op_type", "op_type", "engine", "is_supported", "details")


@dataclass(frozen=True)
class LintRow:
    ori_op_name: str
    ori_op_type: str
    op_type: str
    engine: str
    is_supported: bool
    details: str

    def cells(self) -> list[str]:
        return [self.ori_op_name, self.ori_op_type, self.op_type, self.engine, str(self.is_supported).upper(), self.details]


def lint(model: "onnx.ModelProto", flags: Mapping[str, str] | None = None, cann: str = DEFAULT_CANN) -> list[LintRow]:
    flags = flags or {}
    table = op_table(cann)
    opsets = domain_opsets(model)
    types = tensor_types(model)
    consumers = _consumers(model)
    rows = []
    for item in walk(model.graph):
        op_type = item.node.op_type
        ir = table.ir_type(item.domain, op_type) if item.domain in opsets else ""

        def row(engine: str, details: str, supported: bool = True) -> LintRow:
            return LintRow(item.name, op_type, ir, engine, supported, details)

        if op_type == "TopK" and len(item.node.output) > 1:
            users = _arithmetic_users(item.node.output[1], consumers)
            if users:
                rows.append(row("AI Core", f"indices are int32 on the NPU, int64 in ONNX, and feed {', '.join(users)}: "
                                           "atc may stop with E89999 (DT_INT64 vs DT_INT32); Cast the indices "
                                           "(msit surgeon KnowledgeTopkFix)"))
        elif op_type in ("Mod", "Div") and INT64 in (types.get(name) for name in item.node.input):
            kernel = "Mod" if op_type == "Mod" else "RealDiv"
            rows.append(row("AI CPU?", f"int64 {op_type}: the {kernel} kernels take no int64 (310P TBE {kernel}: "
                                       "float16/float32/int32 and smaller ints); Cast to int32 first", supported=False))
        elif op_type == "Resize":
            details = _resize_details(item)
            if details:
                rows.append(row("AI Core", details))
        elif op_type in AI_CPU_USUALLY:
            rows.append(row("AI CPU", f"{op_type} usually runs on AI CPU: slow, and the graph splits around it"))
        elif op_type == "BatchMultiClassNMS":
            fp32 = [name for name in item.node.input[:2] if types.get(name) == FLOAT]
            mode = flags.get("precision_mode_v2") or flags.get("precision_mode") or "force_fp16"
            if fp32 and mode in FP16_LOWERING_MODES:
                rows.append(row("AI Core", f"float32 {', '.join(fp32)} reach a float16-only kernel: {mode} lowers them "
                                           "to float16 here, any mode that keeps float32 fails (EZ3003); the guide "
                                           "casts explicitly"))
    return rows


def _consumers(model: "onnx.ModelProto") -> dict[str, list[GraphNode]]:
    consumers: dict[str, list[GraphNode]] = {}
    for item in walk(model.graph):
        for name in item.node.input:
            consumers.setdefault(name, []).append(item)
    return consumers


def _arithmetic_users(tensor: str, consumers: Mapping[str, list[GraphNode]]) -> list[str]:
    """The arithmetic nodes that tensor reaches through view ops, before any Cast."""
    found, seen, todo = [], set(), [tensor]
    while todo:
        name = todo.pop()
        for user in consumers.get(name, []):
            if user.name in seen:
                continue
            seen.add(user.name)
            if user.node.op_type in ARITHMETIC:
                found.append(user.name)
            elif user.node.op_type in VIEWS and (user.node.op_type != "Gather" or user.node.input[0] == name):
                todo.extend(user.node.output)
    return sorted(found)


def _resize_details(item: GraphNode) -> str:
    attrs = {a.name: a.s.decode() for a in item.node.attribute if a.s}
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    problems = []
    if transform not in HALF_PIXEL_MODES:
        problems.append(f"coordinate_transformation_mode {transform} reaches the kernel as neither half_pixel_centers "
                        "nor align_corners (i.e. asymmetric)")
    if attrs.get("mode", "nearest") == "nearest" and attrs.get("nearest_mode", "floor") != "floor":
        problems.append(f"nearest_mode {attrs['nearest_mode']} is ignored by ATC (the kernel's own rounding applies)")
    return "; ".join(problems)


def format_rows(rows: list[LintRow]) -> list[str]:
    """Plain aligned lines: the header, then one line per row."""
    table = [list(COLUMNS), *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(line, widths)), line[-1]]).rstrip() for line in table]
