"""tools/atc.py: flag grammar, pre-flight against the graph, output parsing (on the literal
outputs quoted in ascend-tools.md §1.4), finding the model, the CANN version."""
from __future__ import annotations

import pytest

from om_pipeline.errors import UserError
from om_pipeline.testing.tiny_model import write_tiny_onnx
from om_pipeline.tools import atc
from om_pipeline.tools.atc import AtcFlagError


# -- flags


def test_both_flag_forms_single_dash_and_dashes_in_names():
    argv = ["--model=m.onnx", "--framework", "5", "-output=out/m", "--soc-version=Ascend310P3",
            "-input-shape", "x:1,3,4,4"]
    assert atc.parse_flags(argv) == {
        "model": "m.onnx", "framework": "5", "output": "out/m", "soc_version": "Ascend310P3", "input_shape": "x:1,3,4,4",
    }


def test_a_required_value_is_the_next_element_whatever_it_looks_like():
    assert atc.parse_flags(["--output", "--weird"]) == {"output": "--weird"}


def test_last_repeated_flag_wins_and_unique_prefixes_resolve_as_getopt_long_does():
    assert atc.parse_flags(["--log=info", "--log=error", "--soc=Ascend310"]) == {"log": "error", "soc_version": "Ascend310"}


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--h"], ["--model=m", "--help", "--nonsense"]])
def test_help_stops_parsing(argv):
    assert atc.parse_flags(argv) == {"help": ""}


def test_help_false_is_no_help():
    assert atc.parse_flags(["--help=false", "--log=info"]) == {"log": "info"}


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--foo=1"], "unknown command line flag 'foo'"),
        (["--out=x"], "unknown command line flag 'out'"),  # ambiguous: out_nodes, output, output_type
        (["-x"], "unknown command line flag 'x'"),
        (["--model"], "flag '--model' is missing its argument"),
        (["--model=m", "stray"], "Non-option parameter: stray"),
    ],
)
def test_flag_errors_carry_atc_own_text(argv, line):
    with pytest.raises(AtcFlagError) as err:
        atc.parse_flags(argv)
    assert err.value.line == line


def test_input_shape_entries():
    assert atc.input_shape_entries("a:1,3,224,224;b:1,3") == [("a", [1, 3, 224, 224]), ("b", [1, 3])]
    assert atc.input_shape_entries("x:0:-1,3;s:;r:1~8,2;") == [("x:0", [-1, 3]), ("s", []), ("r", [-1, 2])]
    for bad in ("a", "a:1,x", "a:0,3", ""):
        with pytest.raises(UserError, match="--input_shape"):
            atc.input_shape_entries(bad)


# -- pre-flight

REQUIRED = {"framework": "5", "output": "out/tiny", "soc_version": "Ascend310P3"}


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_onnx(tmp_path / "tiny.onnx")


def test_preflight_accepts_the_guides_flags(tiny):
    atc.preflight(tiny, {**REQUIRED, "model": str(tiny), "input_shape": "x:4,3,4,4",
                         "out_nodes": "Relu_1:0;ReduceMean_2:0"})
    atc.preflight(tiny, {**REQUIRED, "model": str(tiny), "input_shape": "x:1,3,4,4", "out_nodes": "m;y"})
    with pytest.raises(UserError, match="E10001"):  # the batch dim is symbolic: atc needs --input_shape
        atc.preflight(tiny, {**REQUIRED, "model": str(tiny), "out_nodes": "m;y"})


def test_preflight_names_a_wrong_input_shape_name(tiny):
    with pytest.raises(UserError) as err:
        atc.preflight(tiny, {**REQUIRED, "model": str(tiny), "input_shape": "image:1,3,4,4"})
    assert "--input_shape names 'image'" in err.value.message and "E10016" in err.value.message
    assert err.value.hint == "graph inputs: x"


@pytest.mark.parametrize(
    ("out_nodes", "code", "words"),
    [
        ("Conv_9:0", "E10016", "--out_nodes names 'Conv_9'"),
        ("nosuch", "E10016", "--out_nodes names 'nosuch'"),
        ("Relu_1:0;m", "E10001", "Only one of index"),
        ("Relu_1:1", "E10003", "has 1 output"),
        ("Relu_1:x", "E10001", "not a positive integer"),
    ],
)
def test_preflight_checks_out_nodes(tiny, out_nodes, code, words):
    with pytest.raises(UserError) as err:
        atc.preflight(tiny, {**REQUIRED, "model": str(tiny), "out_nodes": out_nodes})
    assert code in err.value.message and words in err.value.message


def test_preflight_flags_a_node_that_is_not_an_input_and_a_wrong_rank(tiny):
    with pytest.raises(UserError, match="E10017"):
        atc.preflight(tiny, {**REQUIRED, "model": str(tiny), "input_shape": "Relu_1:1,2"})
    with pytest.raises(UserError, match="rank 4 in the model but 3 dims"):
        atc.preflight(tiny, {**REQUIRED, "model": str(tiny), "input_shape": "x:3,4,4"})


def test_preflight_requires_the_four_flags_and_the_model(tmp_path):
    with pytest.raises(UserError, match="atc needs --framework, --soc_version"):
        atc.preflight(tmp_path / "m.onnx", {"model": "m.onnx", "output": "o"})
    with pytest.raises(UserError, match="does not exist"):
        atc.preflight(tmp_path / "m.onnx", {**REQUIRED, "model": "m.onnx"})


# -- output (literal examples from ascend-tools.md §1.4)

UIE_FAILURE = """ATC start working now, please wait for a moment.
...
ATC run failed, Please check the detail log, Try 'atc --help' for more information
E16005: The model has [2] [--domain_version] fields, but only one is allowed.
        TraceBack (most recent call last):
        Model parse to graph failed, graph name:model_uie_om.[FUNC:ModelParseToGraph][FILE:onnx_parser.cc][LINE:924]
"""

OLD_FAILURE = """ATC start working now, please wait for a moment.
ATC run failed, Please check the detail log, Try 'atc --help' for more information
E10001: Value [-1] for parameter [Inputs] is invalid. Reason: maybe you should set input_shape to specify its shape
Solution: Try again with a valid argument.
"""

SUCCESS_WITH_WARNING = """ATC start working now, please wait for a moment.
ATC run success, welcome to the next use.
W11001: Op [Slice_29] does not hit the high-priority operator information library, which might result in compromised performance.
"""


def test_parse_failure_keeps_the_traceback_lines_with_their_code():
    result = atc.parse_output(UIE_FAILURE)
    assert not result.ok
    assert result.errors == [UIE_FAILURE.split("\n", 3)[3].rstrip()]
    assert result.errors[0].splitlines()[1].strip() == "TraceBack (most recent call last):"


def test_parse_old_failure_with_unindented_solution_line():
    result = atc.parse_output(OLD_FAILURE)
    assert not result.ok
    assert result.errors == [
        "E10001: Value [-1] for parameter [Inputs] is invalid. Reason: maybe you should set input_shape to specify its shape\n"
        "Solution: Try again with a valid argument."
    ]


def test_parse_success_with_a_warning():
    result = atc.parse_output(SUCCESS_WITH_WARNING)
    assert result.ok and result.errors == []
    assert result.warnings == [SUCCESS_WITH_WARNING.splitlines()[2]]


def test_parse_flag_error_on_stderr_and_prefixed_codes():
    text = ("ATC start working now, please wait for a moment.\nERROR: unknown command line flag 'foo'\n"
            "ATC run failed, Please check the detail log, Try 'atc --help' for more information\n"
            "[PID: 42] E10016: Op name a specified in --input_shape is not found in the model.\n")
    result = atc.parse_output(text)
    assert not result.ok
    assert result.errors == ["ERROR: unknown command line flag 'foo'",
                             "[PID: 42] E10016: Op name a specified in --input_shape is not found in the model."]


def test_no_banner_is_not_ok():
    assert not atc.parse_output("ATC start working now, please wait for a moment.\n").ok


# -- files


def test_find_om_plain_or_with_arch_suffix_never_a_longer_name(tmp_path):
    (tmp_path / "m_bs16.om").write_bytes(b"")
    with pytest.raises(UserError, match="wrote no m_bs1.om"):
        atc.find_om(tmp_path / "m_bs1")
    (tmp_path / "m_bs1_linux_x86_64.om").write_bytes(b"")
    assert atc.find_om(tmp_path / "m_bs1").name == "m_bs1_linux_x86_64.om"
    (tmp_path / "m_bs1.om").write_bytes(b"")
    with pytest.raises(UserError, match="several models"):
        atc.find_om(tmp_path / "m_bs1")


def test_cann_version_from_install_info_or_version_cfg(tmp_path):
    assert atc.cann_version({}) is None
    home = tmp_path / "latest"
    (home / "x86_64-linux").mkdir(parents=True)
    assert atc.cann_version({"ASCEND_HOME_PATH": str(home)}) is None
    (home / "version.cfg").write_text("Version=7.0.RC1\n")
    assert atc.cann_version({"ASCEND_HOME_PATH": str(home)}) == "7.0.RC1"
    (home / "x86_64-linux" / "ascend_toolkit_install.info").write_text(
        "package_name=Ascend-cann-toolkit\nversion=8.0.RC2\ninnerversion=V100R001C19\n"
    )
    assert atc.cann_version({"ASCEND_TOOLKIT_HOME": str(home), "ASCEND_HOME_PATH": "/nonexistent"}) == "8.0.RC2"
