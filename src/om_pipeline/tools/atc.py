"""`atc` (ONNX -> .om): its flag grammar, a pre-flight check of the flags against the ONNX
graph, the parser of what it prints, and where its model lands (ascend-tools.md §1).

The real tool needs minutes before it reports a wrong `--input_shape` name (E10016), so
`preflight` checks the same things first. The fake atc (om_pipeline.testing.fake_atc) uses
the same flag parser and graph checks, so both agree on what atc accepts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from ..errors import UserError

if TYPE_CHECKING:  # onnx is imported lazily: `ompipe --help` should not pay for it
    import onnx

START_LINE = "ATC start working now, please wait for a moment."
SUCCESS_BANNER = "ATC run success, welcome to the next use."
FAILURE_BANNER = "ATC run failed, Please check the detail log, Try 'atc --help' for more information"

REQUIRED_FLAGS = ("model", "framework", "output", "soc_version")
ONNX_FRAMEWORK = "5"

# Every flag of GE-new `api/atc/atc_flags.cc`. getopt_long rejects anything else.
KNOWN_FLAGS = frozenset(
    """
    model output framework weight input_shape input_hint_shape input_shape_range help h cal_conf
    insert_op_conf op_name_map target om json mode out_nodes op_precision_mode allow_hf32
    precision_mode precision_mode_v2 modify_mixlist keep_dtype input_format check_report
    input_fp16_nodes is_output_adjust_hw_layout is_input_adjust_hw_layout output_type
    op_select_implmode optypelist_for_implmode singleop disable_reuse_memory auto_tune_mode
    jit_compile optimization_switch static_model_ops_lower_limit raw_ge_options
    raw_ge_options_ignore_unsupported soc_version virtual_type core_type aicore_num
    buffer_optimize fusion_switch_file compression_optimize_conf customize_dtypes op_debug_config
    save_original_model dynamic_batch_size dynamic_image_size dynamic_dims enable_small_channel
    enable_compress_weight enable_attr_compression compress_weight_conf sparsity
    enable_single_stream ac_parallel_enable tiling_schedule_optimize log dump_mode op_debug_level
    enable_scope_fusion_passes debug_dir status_check op_compiler_cache_dir op_compiler_cache_mode
    mdl_bank_path op_bank_path display_model_info device_id shape_generalized_build_mode
    atomic_clean_policy external_weight deterministic deterministic_level host_env_os host_env_cpu
    cluster_config hccl_sub_comm_config quant_dumpable is_weight_clip oo_level build_config
    """.split()
)
# Bool flags are registered with an optional argument: their value can only follow "=".
OPTIONAL_VALUE_FLAGS = frozenset({"help", "h", "raw_ge_options_ignore_unsupported"})


class AtcFlagError(UserError):
    """A command line atc rejects while parsing it. `line` is atc's own stderr text
    (printed after "ERROR: ", GE-new `cmd_flag_info.cc` GFPRINTF)."""

    def __init__(self, line: str, flag: str):
        super().__init__(f"atc flags: {line}", hint="see `atc --help`")
        self.line = line
        self.flag = flag


# ---------------------------------------------------------------------------------------------
# Flag grammar (GE-new cmd_flag_info.cc ParseCommandLine)


def normalise_arg(arg: str) -> str:
    """ATC rewrites every argv element before getopt: `-name` -> `--name` (two or more letters
    after the dash) and dashes inside a flag name -> underscores (up to any "=")."""
    arg = re.sub(r"^-(?=[A-Za-z]{2,})", "--", arg)
    if not re.match(r"^--[A-Za-z]{2,}", arg):
        return arg
    name, sep, value = arg[4:].partition("=")
    return arg[:4] + name.replace("-", "_") + sep + value


def parse_flags(argv: Sequence[str]) -> dict[str, str]:
    """argv (without the program name) -> {flag: value}, names without dashes, the last of a
    repeated flag winning. Accepts `--k=v`, `--k v`, `-k=v`, unique prefixes of flag names
    (getopt_long does) and `--help`/`-h` (returned as {"help": ...}, parsing stops there,
    as atc prints its usage at once). Raises AtcFlagError as atc would fail."""
    args = [normalise_arg(arg) for arg in argv]
    flags: dict[str, str] = {}
    positional: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            positional += args[index:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)  # getopt moves these to the end; atc rejects them after
            continue
        name, value, index = _take_flag(arg, args, index)
        if name != "help":
            flags[name] = value
        elif value.lower() in ("", "1", "t", "true", "y", "yes"):  # --help=false is no help
            return {"help": value}
    if positional:
        raise AtcFlagError(f"Non-option parameter: {positional[0]}", positional[0])
    return flags


def _take_flag(arg: str, args: Sequence[str], index: int) -> tuple[str, str, int]:
    if not arg.startswith("--"):  # the only short option is -h
        if arg == "-h":
            return "help", "", index
        raise AtcFlagError(f"unknown command line flag '{arg[1:]}'", arg[1:])
    written, sep, value = arg[2:].partition("=")
    name = _resolve_flag_name(written)
    if name is None:
        raise AtcFlagError(f"unknown command line flag '{written}'", written)
    if name in OPTIONAL_VALUE_FLAGS:
        return ("help" if name == "h" else name), value, index
    if sep:
        return name, value, index
    if index < len(args):  # a required argument takes the next element, whatever it looks like
        return name, args[index], index + 1
    raise AtcFlagError(f"flag '{arg}' is missing its argument", name)


def _resolve_flag_name(written: str) -> str | None:
    """getopt_long: an exact name, else a prefix of exactly one name (ambiguous = unknown)."""
    if written in KNOWN_FLAGS:
        return written
    candidates = [name for name in KNOWN_FLAGS if name.startswith(written)] if written else []
    return candidates[0] if len(candidates) == 1 else None


def input_shape_entries(value: str) -> list[tuple[str, list[int]]]:
    """`"a:1,3,224,224;b:1,3"` -> [("a", [1, 3, 224, 224]), ("b", [1, 3])]. A dynamic dim
    (`-1`) and a range (`1~10`) both become -1; `name:` is a scalar ([]). The name is cut at
    the LAST colon, so TensorFlow names such as `x:0` survive."""
    entries = []
    for item in filter(None, value.split(";")):
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise UserError(f"--input_shape entry {item!r} is not name:dims", hint='e.g. --input_shape="image:1,3,224,224"')
        entries.append((name, [_dim(d, item) for d in dims.split(",")] if dims else []))
    if not entries:
        raise UserError("--input_shape is empty", hint='e.g. --input_shape="image:1,3,224,224"')
    return entries


def _dim(text: str, item: str) -> int:
    text = text.strip()
    if re.fullmatch(r"\d+~\d+", text) or text == "-1":
        return -1
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise UserError(
        f"--input_shape entry {item!r}: dim {text!r} is not a positive integer, -1 or a range a~b",
        hint='e.g. --input_shape="image:1,3,224,224"',
    )


# ---------------------------------------------------------------------------------------------
# Flags vs. the ONNX graph (GE-new api/atc/omg.cc CheckUserInputShape, ParseOutNodes, ...)


@dataclass(frozen=True)
class Problem:
    """A flag that atc would reject for this graph: `code` and `atc_text` are what atc prints,
    `message` and `hint` what ompipe tells the user."""

    code: str
    flag: str
    atc_text: str
    message: str
    hint: str | None = None
    name: str = ""  # the node or tensor name at fault, when there is one


def graph_inputs(model: "onnx.ModelProto") -> list[str]:
    """The graph's data inputs (old exporters list initializers as inputs too; those are not
    Data nodes for atc)."""
    initializers = {init.name for init in model.graph.initializer}
    return [inp.name for inp in model.graph.input if inp.name not in initializers]


def graph_problems(model: "onnx.ModelProto", flags: Mapping[str, str]) -> list[Problem]:
    problems = []
    if flags.get("input_shape"):
        problems += _input_shape_problems(model, flags["input_shape"])
    if flags.get("out_nodes"):
        problems += _out_nodes_problems(model, flags["out_nodes"])
    return problems


def _input_shape_problems(model: "onnx.ModelProto", value: str) -> list[Problem]:
    try:
        entries = input_shape_entries(value)
    except UserError as exc:
        sample = '"input_name1:n1,c1,h1,w1;input_name2:n2,c2,h2,w2"'
        return [Problem(
            "E10002", "--input_shape",
            f"Value {value} for parameter --input_shape is invalid. Reason: {exc.message}. "
            f"The value must be formatted as {sample}.",
            exc.message, exc.hint,
        )]
    inputs = {inp.name: inp for inp in model.graph.input}
    data_inputs = graph_inputs(model)
    node_names = {node.name for node in model.graph.node if node.name}
    problems = []
    for name, dims in entries:
        if name in data_inputs:
            problems += _rank_problem(name, dims, inputs[name], value)
        elif name in node_names or name in inputs:
            problems.append(Problem(
                "E10017", "--input_shape",
                f"Input Op {name} specified in --input_shape is invalid. The Op type must be Data.",
                f"--input_shape names {name!r}, which is a node of the graph but not one of its inputs",
                f"graph inputs: {', '.join(data_inputs)}", name,
            ))
        else:
            problems.append(Problem(
                "E10016", "--input_shape",
                f"Op name {name} specified in --input_shape is not found in the model. Confirm whether "
                "this node name exists, or whether the node is not split with the specified delimiter ';'.",
                f"--input_shape names {name!r}, which is not an input of the graph",
                f"graph inputs: {', '.join(data_inputs)}", name,
            ))
    return problems


def _rank_problem(name: str, dims: list[int], graph_input, value: str) -> list[Problem]:
    tensor_type = graph_input.type.tensor_type
    if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) == len(dims):
        return []
    rank = len(tensor_type.shape.dim)
    reason = f"input {name} has rank {rank} in the model but {len(dims)} dims are given"
    return [Problem(
        "E10002", "--input_shape",
        f"Value {value} for parameter --input_shape is invalid. Reason: {reason}. "
        'The value must be formatted as "input_name1:n1,c1,h1,w1;input_name2:n2,c2,h2,w2".',
        f"--input_shape: {reason}",
    )]


def _out_nodes_problems(model: "onnx.ModelProto", value: str) -> list[Problem]:
    # "node:0;node2:1" (node name + output index) or, ONNX only, "tensor1;tensor2"
    # (tensor names); atc refuses a mix (GE-new omg.cc ParseOutNodes).
    items = [item for item in value.split(";") if item]
    styles = {len(item.split(":")) for item in items}
    if styles - {1, 2}:
        bad = next(item for item in items if len(item.split(":")) > 2)
        return [_out_nodes_value_problem(bad, "The parameter format is invalid. Valid format: "
                                         '"node_name1:0;node_name1:1;node_name2:0".')]
    if styles == {1, 2}:
        return [_out_nodes_value_problem(value, "Only one of index, top_name and output_name can be used.")]
    if styles == {1}:
        return _out_tensor_problems(model, items)
    return _out_node_index_problems(model, items, value)


def _out_nodes_value_problem(value: str, reason: str) -> Problem:
    return Problem(
        "E10001", "--out_nodes", f"Value {value} for parameter --out_nodes is invalid. Reason: {reason}",
        f"--out_nodes {value!r}: {reason}",
    )


def _out_tensor_problems(model: "onnx.ModelProto", names: list[str]) -> list[Problem]:
    produced = {out for node in model.graph.node for out in node.output}
    return [_unknown_out_node(name, "a tensor the graph computes", sorted(o.name for o in model.graph.output))
            for name in names if name not in produced]


def _out_node_index_problems(model: "onnx.ModelProto", items: list[str], value: str) -> list[Problem]:
    nodes = {node.name: node for node in model.graph.node if node.name}
    problems = []
    for item in items:
        name, index = item.split(":")
        if not index.strip().isdigit():
            problems.append(_out_nodes_value_problem(value, "The index is not a positive integer."))
        elif name not in nodes:
            problems.append(_unknown_out_node(name, "a node of the graph", _last_node_names(model)))
        elif int(index) >= len(nodes[name].output):
            reason = (f'Output index:"{int(index)}" must be smaller than output size:{len(nodes[name].output)} '
                      "and cannot be negative.")
            problems.append(Problem(
                "E10003", "--out_nodes", f"Value {name} for parameter --out_nodes is invalid. Reason: {reason}",
                f"--out_nodes {item!r}: node {name} has {len(nodes[name].output)} output(s)",
            ))
    return problems


def _unknown_out_node(name: str, what: str, known: list[str]) -> Problem:
    return Problem(
        "E10016", "--out_nodes",
        f"Op name {name} specified in --out_nodes is not found in the model. Confirm whether this node "
        "name exists, or whether the node is not split with the specified delimiter ';'.",
        f"--out_nodes names {name!r}, which is not {what}",
        f"e.g. {', '.join(known[:6])}" if known else None, name,
    )


def _last_node_names(model: "onnx.ModelProto") -> list[str]:
    """The nodes that produce the graph outputs: the likeliest intended --out_nodes."""
    outputs = {o.name for o in model.graph.output}
    return [node.name for node in model.graph.node if node.name and set(node.output) & outputs]


def out_node_tensors(model: "onnx.ModelProto", value: str) -> list[str]:
    """The tensors a valid `--out_nodes` value makes the model outputs, in its order."""
    nodes = {node.name: node for node in model.graph.node if node.name}
    tensors = []
    for item in filter(None, value.split(";")):
        name, sep, index = item.partition(":")
        tensors.append(nodes[name].output[int(index)] if sep else name)
    return tensors


def preflight(onnx_path: Path, flags: Mapping[str, str], cann: str = "8") -> "onnx.ModelProto | None":
    """Fail now, with a clear message, where atc would fail minutes into its run: the flags
    against the graph, and ATC's op/opset gate for CANN generation `cann` (om_pipeline.atc_ops),
    every refusal listed at once. Returns the graph it checked (None: not ONNX), so the stage
    reads it once."""
    missing = [f"--{name}" for name in REQUIRED_FLAGS if not flags.get(name)]
    if missing:
        raise UserError(f"atc needs {', '.join(missing)}", hint="--model, --framework, --output and --soc_version are required")
    if not Path(onnx_path).is_file():
        raise UserError(f"atc --model {onnx_path} does not exist")
    if flags["framework"] != ONNX_FRAMEWORK:
        return None  # only ONNX graphs can be checked here
    import onnx

    from ..atc_ops import atc_problems

    model = onnx.load(str(onnx_path), load_external_data=False)
    problems = atc_problems(model, flags, cann)
    if problems:
        first = problems[0]
        more = f"; {len(problems) - 1} more below" if len(problems) > 1 else ""
        raise UserError(
            f"{first.message} (atc would fail with {first.code} after loading {Path(onnx_path).name}{more})",
            hint=first.hint,
            details=[f"{p.code} {p.message}" for p in problems[1:]],
        )
    return model


# ---------------------------------------------------------------------------------------------
# What atc prints (§1.4)

# An error-manager block starts with its code (newer CANN may put "[...]" prefixes before it).
_CODE_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)*([EW][0-9A-Z]{5}):")
# Older releases print "Solution:" / "TraceBack" lines without indentation.
_CONTINUATION = re.compile(r"^(\s+\S|Solution:|Possible Cause:|TraceBack)")


@dataclass(frozen=True)
class AtcResult:
    ok: bool
    errors: list[str] = field(default_factory=list)  # "EXXXXX: ..." blocks and "ERROR: ..." flag lines
    warnings: list[str] = field(default_factory=list)  # "WXXXXX: ..." lines


def parse_output(text: str) -> AtcResult:
    errors: list[list[str]] = []
    warnings: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines():
        code = _CODE_LINE.match(line)
        if code and code.group(1).startswith("E"):
            block = [line.rstrip()]
            errors.append(block)
        elif code:
            warnings.append(line.strip())
            block = None
        elif block is not None and _CONTINUATION.match(line):
            block.append(line.rstrip())
        else:
            block = None
            if line.startswith("ERROR: "):  # flag parsing errors go to stderr, without a code
                errors.append([line.rstrip()])
    ok = SUCCESS_BANNER in text and "ATC run failed" not in text  # the banner's tail varies by release
    return AtcResult(ok, ["\n".join(b) for b in errors], warnings)


# ---------------------------------------------------------------------------------------------
# Files and versions


def find_om(output: Path) -> Path:
    """The model atc wrote for `--output=<output>`: `<output>.om`, or `<output>_linux_<arch>.om`
    for dynamic-shape graphs on newer CANN (§1.3). Only those two forms count, so `m_bs1`
    never picks up `m_bs16.om`."""
    output = Path(output)
    pattern = re.compile(re.escape(output.name) + r"(_linux_[A-Za-z0-9_]+)?\.om")
    found = sorted(p for p in output.parent.glob(f"{_glob_escape(output.name)}*.om") if pattern.fullmatch(p.name))
    if not found:
        raise UserError(
            f"atc reported success but wrote no {output.name}.om or {output.name}_linux_<arch>.om in {output.parent}",
            hint="pass --output without the .om suffix (atc appends it)",
        )
    if len(found) > 1:
        raise UserError(
            f"several models match --output={output}: {', '.join(p.name for p in found)}",
            hint="remove the stale one; atc writes <output>.om or <output>_linux_<arch>.om",
        )
    return found[0]


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# Assumption (ascend-tools.md §5 names the variables, not the files): a toolkit records its
# version as `version=<v>` in `<arch>-linux/ascend_toolkit_install.info` (CANN 7/8 install
# layout; the file `cat`-ed by Huawei's install guides) or, in older packages, in `version.cfg`
# at the toolkit root. The first file found wins.
_VERSION_FILES = ("*/ascend_toolkit_install.info", "version.cfg")
_VERSION_LINE = re.compile(r"^\s*version\s*=\s*\"?([^\"\s]+)", re.IGNORECASE | re.MULTILINE)


def cann_version(env: Mapping[str, str]) -> str | None:
    """The CANN toolkit version from `$ASCEND_TOOLKIT_HOME` (or `$ASCEND_HOME_PATH`), or None."""
    home = env.get("ASCEND_TOOLKIT_HOME") or env.get("ASCEND_HOME_PATH")
    if not home or not Path(home).is_dir():
        return None
    for pattern in _VERSION_FILES:
        for path in sorted(Path(home).glob(pattern)):
            match = _VERSION_LINE.search(path.read_text(encoding="utf-8", errors="replace"))
            if match:
                return match.group(1)
    return None
