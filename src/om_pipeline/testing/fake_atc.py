"""A fake `atc` that behaves as ascend-tools.md §1 describes (GE-new `api/atc/main_impl.cc`):
same flags, same printed lines, same exit codes, same files. It converts ONNX (--framework=5)
only, into the fake `.om` of fake_om.py, which the fake ais_bench runs with ONNX Runtime.

    python -m om_pipeline.testing.fake_atc --model=m.onnx --framework=5 --output=out/m \\
        --soc_version=Ascend310P3 --input_shape="image:1,3,224,224"

Environment knobs (for tests):
    OMPIPE_FAKE_ATC_FAIL=<code>        fail as atc does, with that error code (e.g. E19999)
    OMPIPE_FAKE_DELAY=<seconds>        sleep before writing the model (interruption tests)
    OMPIPE_FAKE_ATC_ARCH_SUFFIX=1      name the model <output>_linux_<arch>.om, as newer CANN
                                       does for dynamic-shape graphs (it does so by itself when an
                                       input keeps a dynamic dim)
    OMPIPE_FAKE_ATC_EXEC_MODEL=<onnx>  embed this ONNX instead of --model (still checked against
                                       --model): for graphs with Ascend-only ops that ONNX Runtime
                                       cannot run; give the standard-op export of the same model
    OMPIPE_FAKE_ATC_HOST_OPS=<json>    with EXEC_MODEL: {"function": "module:name", "params", "outputs"}:
                                       the .om runs the function on the executed model's outputs
                                       and yields `outputs` (the real graph's), as a stand-in for
                                       its Ascend-only tail (GFocalV2's BatchMultiClassNMS)
    OMPIPE_FAKE_ATC_CANN=8|5           whose op table and wording the parse gate uses (default 8:
                                       E16002; 5: E19010 listing every refused node)
The --model graph passes ATC's parse gate first (om_pipeline.atc_ops: a parser plugin for
`domain::opset::op_type` of every node, subgraphs included; DeformableConv2D's attributes),
then the flag checks, static input shapes (E10001) and the curated kernel checks (EZ3003).
Flags the fake cannot emulate (dynamic gears, AIPP, fp16 input nodes, per-node output types,
modes other than 0) fail with E10001 and a reason that says so.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import onnx

from ..tools.atc import (
    FAILURE_BANNER,
    ONNX_FRAMEWORK,
    START_LINE,
    SUCCESS_BANNER,
    AtcFlagError,
    Problem,
    graph_inputs,
    input_shape_entries,
    out_node_tensors,
    parse_flags,
)
from .. import fp16
from ..atc_ops import DEFAULT_CANN, SOLUTION_NEW, SOLUTION_OLD, atc_problems
from .fake_om import write_fake_om

# Value ranges checked while parsing (GE-new cmd_flag_info.cc kStrValueRange), with the code
# CmdFlagInfo::PrintValueError reports for each.
VALUE_RANGES = {
    "sparsity": {"0", "1"}, "dump_mode": {"0", "1"}, "virtual_type": {"0", "1"}, "status_check": {"0", "1"},
    "deterministic": {"0", "1"}, "deterministic_level": {"0", "1", "2"}, "external_weight": {"0", "1", "2"},
    "display_model_info": {"0", "1"}, "atomic_clean_policy": {"0", "1"}, "disable_reuse_memory": {"0", "1"},
    "framework": {"0", "1", "3", "5"}, "op_debug_level": {"0", "1", "2", "3", "4"},
    "mode": {"0", "1", "3", "5", "6", "30"}, "core_type": {"AiCore", "VectorCore"},
    "log": {"debug", "info", "warning", "error", "null"},
    "op_compiler_cache_mode": {"enable", "disable", "force"},
    "buffer_optimize": {"l1_optimize", "l2_optimize", "off_optimize"},
    "shape_generalized_build_mode": {"shape_generalized", "shape_precise"},
    "op_select_implmode": {"high_precision", "high_performance", "high_precision_for_all", "high_performance_for_all"},
    "precision_mode": {
        "force_fp16", "force_fp32", "cube_fp16in_fp32out", "allow_mix_precision", "allow_fp32_to_fp16",
        "must_keep_origin_dtype", "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16",
    },
    "precision_mode_v2": {
        "fp16", "origin", "cube_fp16in_fp32out", "mixed_float16", "mixed_bfloat16", "cube_hif8", "mixed_hif8",
    },
}
ONE_OR_ZERO_FLAGS = {
    "status_check", "deterministic", "external_weight", "display_model_info", "atomic_clean_policy",
    "dump_mode", "disable_reuse_memory", "sparsity",
}
FRAMEWORK_SUPPORT = "0(Caffe) or 1(MindSpore) or 3(TensorFlow) or 5(Onnx)"

# The description atc appends to "is missing its argument" (atc_flags.cc; the flags an ONNX
# pipeline uses — for the others the fake prints the message without it).
FLAG_DESCRIPTIONS = {
    "model": "The model file.",
    "output": "The output file path&name.",
    "framework": "Framework type(0:Caffe; 1:MindSpore; 3:Tensorflow; 5:Onnx).",
    "soc_version": "The soc version.",
    "input_shape": "Optional; shape of input data. Required when framework is caffe or TensorFLow or MindSpore "
    'or Onnx. Format: "input_name1:n1,c1,h1,w1;input_name2:n2,c2,h2,w2" or '
    '"input_name1:n1~n2,c1,h1,w1;input_name2:n3~n4,c2,h2,w2"',
    "out_nodes": 'Optional; output nodes designated by users.Format: "node_name1:0;node_name1:1;node_name2:0"',
    "input_format": 'Optional; input_format, format of input data, NCHW;NHWC.Format:"NHWC"',
    "output_type": "Optional; output type! Support FP32,FP16,INT8,INT16,UINT16,UINT8,INT32,INT64,UINT32,UINT64,DOUBLE.",
    "fusion_switch_file": "Optional; Set fusion switch file path.",
    "log": "Optional; generate atc log. Support debug, info, warning, error, null.",
}
NOT_EMULATED = ("dynamic_batch_size", "dynamic_image_size", "dynamic_dims", "insert_op_conf", "input_fp16_nodes", "singleop")
ONNX_INPUT_FORMATS = {"NCHW", "ND", "NCDHW"}  # main_impl.cc kONNXFormatSupport
OUTPUT_TYPES = {
    "FP32": "float32", "FP16": "float16", "UINT8": "uint8", "INT8": "int8", "UINT16": "uint16", "INT16": "int16",
    "UINT32": "uint32", "INT32": "int32", "UINT64": "uint64", "INT64": "int64", "DOUBLE": "float64",
}
USAGE = """usage: atc <args>
generate offline model example:
atc --model=./alexnet.prototxt --weight=./alexnet.caffemodel --framework=0 --output=./domi --soc_version=<soc_version> 

===== Basic Functionality =====
[General]
  --h/help            Show this help message
  --mode              Run mode. 0: default, generate offline model
[Input]
  --model             Model file
  --framework         Framework type. 0:Caffe; 1:MindSpore; 3:Tensorflow; 5:Onnx
  --input_format      Format of input data. E.g.: "NCHW"
  --input_shape       Shape of input data. Separate multiple nodes with semicolons (;). E.g.: "input_name1:n1,c1,h1,w1;input_name2:n2,c2,h2,w2"
[Output]
  --output            Output file path&name(needn't suffix, will add .om/.exeom automatically).
  --out_nodes         Output nodes designated by users. E.g.: "node_name1:0;node_name1:1;node_name2:0"
  --output_type       Set net output type. Support FP32, FP16, UINT8, INT8.
[Target]
  --soc_version       The soc version.
[Precision]
  --precision_mode    precision mode, support force_fp16(default), force_fp32, allow_mix_precision, must_keep_origin_dtype, ...
(ompipe fake atc: ONNX only)"""


class AtcFailure(Exception):
    """One error-manager block as atc prints it after the failure banner: the code and text, a
    Solution line for registered codes that have one, then the inner messages under TraceBack.
    An inner error (E19999 raised with its own message) prints "Internal Error!" first and the
    message on a second line, as atc's error manager does."""

    def __init__(self, code: str, text: str, trace: str | Sequence[str] | None = None, solution: str | None = None,
                 inner: bool = False):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.trace = [trace] if isinstance(trace, str) else list(trace or [])
        self.solution = solution
        self.inner = inner

    def render(self) -> str:
        lines = [f"{self.code}: Internal Error!", f"{self.code}  {self.text}"] if self.inner else [f"{self.code}: {self.text}"]
        if self.solution:
            lines.append(f"        Solution: {self.solution}")
        if self.trace:
            lines += ["        TraceBack (most recent call last):", *(f"        {line}" for line in self.trace)]
        return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    say(START_LINE)
    try:
        flags = parse_flags(argv)
    except AtcFlagError as exc:
        print(f"ERROR: {flag_error_line(exc)}", file=sys.stderr, flush=True)
        return fail(None)
    if "help" in flags:
        say(USAGE)
        return 0
    try:
        check_flag_values(flags)
    except AtcFailure as failure:  # reported while parsing, before any "..."
        return fail(failure)
    try:
        convert(flags, ["atc", *argv], os.environ)
    except AtcFailure as failure:
        say("...")
        return fail(failure)
    say("...")
    say(SUCCESS_BANNER)
    return 0


def say(text: str) -> None:
    print(text, flush=True)


def fail(failure: AtcFailure | None) -> int:
    say(FAILURE_BANNER)
    if failure:
        say(failure.render())
    return 255  # main_impl returns FAILED (0xFFFFFFFF) -> exit status 255 (§1.4)


def flag_error_line(exc: AtcFlagError) -> str:
    description = FLAG_DESCRIPTIONS.get(exc.flag)
    if exc.line.endswith("is missing its argument") and description:
        return f"{exc.line}; flag description: {description}"
    return exc.line


def check_flag_values(flags: Mapping[str, str]) -> None:
    for name, value in flags.items():
        allowed = VALUE_RANGES.get(name)
        if allowed is None or value in allowed:
            continue
        if name == "framework":
            raise AtcFailure("E10007", f"--framework is required. The value must be {FRAMEWORK_SUPPORT}.")
        if name == "log":
            raise AtcFailure("E10010", f"Value {value} for parameter --log is invalid.")
        if name in ONE_OR_ZERO_FLAGS:
            raise AtcFailure("E10006", f"Value {value} for parameter --{name} is invalid. The value must be either 1 or 0.")
        valid = "".join(f"[{v}] " for v in sorted(allowed))
        raise invalid_value(value, name, f"The value is not within the range of values. The valid range is {valid}.")


def invalid_value(value: str, flag: str, reason: str) -> AtcFailure:
    return AtcFailure("E10001", f"Value {value} for parameter --{flag} is invalid. Reason: {reason}")


def not_emulated(value: str, flag: str) -> AtcFailure:
    return invalid_value(value, flag, "the ompipe fake atc does not emulate this flag.")


def convert(flags: Mapping[str, str], argv: list[str], env: Mapping[str, str]) -> None:
    """RunAtcByMode for mode 0, in atc's order of checks; writes the model on success."""
    check_mode_and_framework(flags)
    check_required_flags(flags)
    check_emulated(flags)
    check_precision_flags(flags)
    model = load_onnx(flags["model"])
    cann = env.get("OMPIPE_FAKE_ATC_CANN") or DEFAULT_CANN
    problems = atc_problems(model, flags, cann)
    if problems:
        raise failure_for(problems, graph_name(flags["output"]), cann)
    if env.get("OMPIPE_FAKE_ATC_EXEC_MODEL"):
        model = load_onnx(env["OMPIPE_FAKE_ATC_EXEC_MODEL"])
    onnx_bytes, meta = compile_model(model, flags, argv)
    if env.get("OMPIPE_FAKE_ATC_EXEC_MODEL") and env.get("OMPIPE_FAKE_ATC_HOST_OPS"):
        meta.update(host_ops_meta(json.loads(env["OMPIPE_FAKE_ATC_HOST_OPS"]), meta["outputs"], flags))
    time.sleep(float(env.get("OMPIPE_FAKE_DELAY", "0") or 0))
    if env.get("OMPIPE_FAKE_ATC_FAIL"):
        raise AtcFailure(env["OMPIPE_FAKE_ATC_FAIL"], "Failure forced by OMPIPE_FAKE_ATC_FAIL.",
                         "[Generate][Model]failed.")
    dynamic = any(-1 in i["shape"] for i in meta["inputs"])
    path = om_path(flags, dynamic or env.get("OMPIPE_FAKE_ATC_ARCH_SUFFIX") == "1")
    write_fake_om(path, onnx_bytes, meta)
    write_fusion_result(env, path.parent)


def check_mode_and_framework(flags: Mapping[str, str]) -> None:
    if flags.get("mode", "0") != "0":
        raise not_emulated(flags["mode"], "mode")
    framework = flags.get("framework", "")
    if not framework:
        raise AtcFailure("E10007", f"--framework is required. The value must be {FRAMEWORK_SUPPORT}.")
    if framework != ONNX_FRAMEWORK:
        raise invalid_value(framework, "framework", "the ompipe fake atc converts ONNX models only (--framework=5).")


def check_required_flags(flags: Mapping[str, str]) -> None:
    # GFlagUtils::CheckFlags: soc_version, output, model (E10054), then the model path.
    for name in ("soc_version", "output", "model"):
        if not flags.get(name):
            raise AtcFailure(
                "E10054",
                f"The required parameter --{name} for ATC is empty. Another possible reason is that the values "
                'of some parameters are not enclosed by quotation marks ("").',
            )
    if not Path(flags["model"]).exists():
        raise invalid_value(flags["model"], "model", "[Errno 2] No such file or directory")
    if flags["output"].endswith("/"):
        raise AtcFailure("E10022", f"Path {flags['output']} for parameter --output does not include the file name.")


def check_emulated(flags: Mapping[str, str]) -> None:
    for name in NOT_EMULATED:
        if flags.get(name):
            raise not_emulated(flags[name], name)
    output_type = flags.get("output_type", "")
    if output_type and output_type not in OUTPUT_TYPES:
        raise not_emulated(output_type, "output_type")
    input_format = flags.get("input_format", "")
    if input_format and input_format not in ONNX_INPUT_FORMATS:
        raise invalid_value(input_format, "input_format", "The value must be NCHW, ND or NCDHW in ONNX model.")


def check_precision_flags(flags: Mapping[str, str]) -> None:
    """option_utils.cc CheckPrecisionModeV2Conflict / CheckKeepTypeParamValid; the values
    themselves are checked while parsing (VALUE_RANGES). The fake .om computes as the mode says
    (om_pipeline.fp16); the bf16 / hif8 modes (no 310P has them) are not emulated."""
    if flags.get("precision_mode") and flags.get("precision_mode_v2"):
        raise AtcFailure("E10056", "Cannot configure both parameters --precision_mode and --precision_mode_v2 simultaneously.")
    for name in ("precision_mode", "precision_mode_v2"):
        if flags.get(name) and flags[name] not in fp16.EMULATED_MODES:
            raise not_emulated(flags[name], name)
    keep = flags.get("keep_dtype")
    if keep and not Path(keep).is_file():
        raise AtcFailure("E10001", f"Value {keep} for parameter --keep_dtype is invalid. Reason: File defined by keep_dtype is not found.")


def precision_meta(flags: Mapping[str, str]) -> dict:
    """What the fake .om records for the fake runtime to compute with (fp16.precision_of)."""
    meta = {"precision_mode": flags.get("precision_mode") or ("" if flags.get("precision_mode_v2") else "force_fp16")}
    if flags.get("precision_mode_v2"):
        meta["precision_mode_v2"] = flags["precision_mode_v2"]
    if flags.get("keep_dtype"):
        meta["keep_dtype"] = fp16.read_keep_dtype(Path(flags["keep_dtype"]))
    return meta


def load_onnx(path: str) -> onnx.ModelProto:
    try:
        return onnx.load(path)
    except Exception:  # any parse failure is atc's "Read onnx model file failed"
        raise AtcFailure("E19999", "Inner Error!", f"Read onnx model file:{path} failed.") from None


def internal_log(problem: Problem) -> str | None:
    """The GELOGE line atc adds under TraceBack for an unknown --input_shape name (omg.cc)."""
    if problem.code == "E10016" and problem.flag == "--input_shape":
        return f"Input parameter[--input_shape]'s opname[{problem.name}] does not exist in model"
    return None


# What the parser reports on its way out (REPORT_INNER_ERR_MSG in onnx_parser.cc
# ModelParseToGraph and GE_CHK_BOOL_RET_STATUS in omg.cc ParseGraph), with atc's
# [FUNC][FILE][LINE] suffix: line numbers of hicann/ge ffdcbc9f7 for the CANN 8 wording, of the
# release msit recorded (test/UT/resource/analyze/dataset/atc_err/atc_err_e19010.txt) for the older.
PARSE_FAILED = {
    "8": ("Model parse to graph failed, graph name:{graph}.[FUNC:ModelParseToGraph][FILE:onnx_parser.cc][LINE:977]",
          "ATC model parse ret fail.[FUNC:ParseGraph][FILE:omg.cc][LINE:838]"),
    "5": ("Model parse to graph failed, graph name:{graph}.[FUNC:ModelParseToGraph][FILE:onnx_parser.cc][LINE:905]",
          "ATC model parse ret fail.[FUNC:ParseGraph][FILE:omg.cc][LINE:788]"),
}
PARSER_CODES = {"E16002", "E19010", "E19999", "E11010"}


def graph_name(output: str) -> str:
    """atc names the graph after --output's base name (omg.cc ParseGraph, GetBaseNameFromFileName)."""
    return Path(output).name.split(".")[0] or "default_graph"


def failure_for(problems: list[Problem], graph: str, cann: str) -> AtcFailure:
    """The block atc prints for the first refusal. The CANN 8 parser stops at the first node it
    cannot parse; the older one (E19010) reported every unregistered node, the first in the
    header and the rest under TraceBack."""
    first = problems[0]
    if first.code not in PARSER_CODES:
        solution = SOLUTION_OLD if first.code == "EZ3003" else None
        if first.code == "E10001" and cann == "5" and first.flag == "--input_shape":
            solution = "Try again with a valid argument."  # the older release's E10001 (ascend-tools.md §1.4)
        return AtcFailure(first.code, first.atc_text, internal_log(first), solution=solution)
    parse_failed = [line.format(graph=graph) for line in PARSE_FAILED[cann]]
    if first.code == "E19010":
        others = [p.atc_text for p in problems[1:] if p.code == "E19010"]
        return AtcFailure(first.code, first.atc_text, [*others, *parse_failed], solution=SOLUTION_OLD)
    if first.code == "E19999":
        text = f"{first.atc_text}[FUNC:ConstructOriType][FILE:onnx_parser.cc][LINE:423]"
        return AtcFailure(first.code, text, parse_failed, inner=True)
    return AtcFailure(first.code, first.atc_text, parse_failed, solution=SOLUTION_NEW if first.code == "E16002" else None)


# ---------------------------------------------------------------------------------------------
# "Compiling": the ONNX with atc's view of its inputs and outputs


def compile_model(model: onnx.ModelProto, flags: Mapping[str, str], argv: list[str]) -> tuple[bytes, dict]:
    shapes = dict(input_shape_entries(flags["input_shape"])) if flags.get("input_shape") else {}
    set_input_shapes(model, shapes)
    if flags.get("out_nodes"):
        set_outputs(model, out_node_tensors(model, flags["out_nodes"]))
    model = onnx.shape_inference.infer_shapes(model)
    data_inputs = set(graph_inputs(model))
    inputs = [tensor_desc(vi) for vi in model.graph.input if vi.name in data_inputs]
    outputs = [tensor_desc(vi) for vi in model.graph.output]
    if flags.get("output_type"):
        for output in outputs:
            output["dtype"] = OUTPUT_TYPES[flags["output_type"]]
    meta = {
        "soc_version": flags["soc_version"],
        "framework": flags["framework"],
        "inputs": inputs,
        "outputs": outputs,
        **precision_meta(flags),  # atc's default force_fp16 (§1.2) when no mode is given
        "argv": argv,
    }
    return model.SerializeToString(), meta


def host_ops_meta(host_ops: dict, executed: list[dict], flags: Mapping[str, str]) -> dict:
    """The .om yields the real graph's outputs (--output_type applies to them) from the executed
    twin's (`executed_outputs`) through the host function (fake_runtime.FakeOmModel)."""
    outputs = [dict(output) for output in host_ops["outputs"]]
    if flags.get("output_type"):
        for output in outputs:
            output["dtype"] = OUTPUT_TYPES[flags["output_type"]]
    return {"outputs": outputs, "executed_outputs": executed,
            "host_ops": {"function": host_ops["function"], "params": host_ops["params"]}}


def set_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, list[int]]) -> None:
    """Make the dims --input_shape fixes static; a -1 there becomes (or stays) symbolic."""
    for graph_input in model.graph.input:
        if graph_input.name not in shapes:
            continue
        shape = graph_input.type.tensor_type.shape
        del shape.dim[:]
        for value in shapes[graph_input.name]:
            dim = shape.dim.add()
            if value > 0:
                dim.dim_value = value
            else:
                dim.dim_param = "dynamic"


def set_outputs(model: onnx.ModelProto, tensors: list[str]) -> None:
    """--out_nodes: the model outputs become these tensors, in this order (types from shape
    inference; unknown ones stay untyped float, as ORT only needs the name)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    outputs = [known.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
               for name in tensors]
    del model.graph.output[:]
    model.graph.output.extend(outputs)


def tensor_desc(value_info: onnx.ValueInfoProto) -> dict:
    tensor_type = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name if tensor_type.elem_type else "float32"
    return {"name": value_info.name, "shape": dims, "dtype": dtype}


# ---------------------------------------------------------------------------------------------
# Files (§1.3)


def om_path(flags: Mapping[str, str], arch_suffix: bool) -> Path:
    """`<output>.om` always (so `--output=x.om` gives `x.om.om`); a dynamic-shape model gets
    `_<host_env_os>_<host_env_cpu>` inserted before the first `.om` of the file name."""
    path = Path(flags["output"] + ".om")
    if arch_suffix:
        suffix = f"_{flags.get('host_env_os') or 'linux'}_{flags.get('host_env_cpu') or platform.machine()}"
        stem, _, rest = path.name.partition(".om")
        path = path.with_name(f"{stem}{suffix}.om{rest}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_fusion_result(env: Mapping[str, str], om_directory: Path) -> None:
    """atc leaves fusion_result.json in its working directory (or under $ASCEND_WORK_PATH). The
    fake writes it beside the .om instead: the same place when ompipe runs it (the atc stage's
    cwd is its staging directory, where --output points), and never the caller's directory on
    a direct call (one left a stray fusion_result.json in the repository root)."""
    directory = Path(env["ASCEND_WORK_PATH"]) / "FE" / str(os.getpid()) if env.get("ASCEND_WORK_PATH") else om_directory
    directory.mkdir(parents=True, exist_ok=True)
    record = [{"graph_fusion": {}, "session_and_graph_id": "0_0", "ub_fusion": {}}]
    (directory / "fusion_result.json").write_text(json.dumps(record, indent=4), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
