"""The subprocess seam."""
from __future__ import annotations

import pytest

from om_pipeline.errors import UserError
from om_pipeline.tools import execute


def test_argv_only_never_a_shell_string(tmp_path):
    marker = tmp_path / "a-shell-ran-this"
    with pytest.raises(TypeError):
        execute.execute(f"echo hi; touch {marker}")
    assert not marker.exists()


def test_output_and_log_with_argv_on_top(tmp_path):
    log = tmp_path / "stage.log"
    outcome = execute.execute(["sh", "-c", "echo out; echo err >&2; exit 3"], log=log)
    assert outcome.returncode == 3 and "out" in outcome.output and "err" in outcome.output
    assert log.read_text().splitlines()[0] == "$ sh -c 'echo out; echo err >&2; exit 3'"


def test_missing_program_is_a_user_error():
    with pytest.raises(UserError, match="atc-that-does-not-exist not found on PATH"):
        execute.execute(["atc-that-does-not-exist"])


def test_toolchain_overlay_goes_first_on_path(tmp_path):
    (tmp_path / "atc").write_text("#!/bin/sh\necho fake atc\n")
    (tmp_path / "atc").chmod(0o755)
    execute.set_toolchain_env({"PATH": str(tmp_path)})
    assert execute.execute(["atc"]).output == "fake atc\n"
    assert execute.which("atc") == str(tmp_path / "atc")


def test_tests_can_swap_the_executor():
    seen = []
    with execute.swapped(lambda request: seen.append(request.argv) or execute.Outcome(request.argv, 0, "ok")):
        assert execute.execute(["atc", "--help"]).output == "ok"
    assert seen == [("atc", "--help")]
