"""The fakes run as real subprocesses, found through the fake toolchain's PATH/PYTHONPATH overlay
and started through the tool seam, exactly as the runner starts them."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

from om_pipeline.testing import fake_toolchain_env
from om_pipeline.testing.tiny_model import write_tiny_onnx
from om_pipeline.tools.execute import Outcome, execute

ATC_FLAGS = ["--framework=5", "--soc_version=Ascend310P3"]

Run = Callable[..., Outcome]


@pytest.fixture(scope="session")
def toolchain(tmp_path_factory) -> dict[str, str]:
    return fake_toolchain_env(tmp_path_factory.mktemp("fake-toolchain"))


@pytest.fixture
def run(toolchain, tmp_path) -> Run:
    """run(*argv, cwd=tmp_path, **env) -> Outcome (stdout and stderr interleaved)."""

    def invoke(*argv: str, cwd: Path | None = None, **env: str) -> Outcome:
        return execute([str(a) for a in argv], cwd=cwd or tmp_path, env={**toolchain, **env}, timeout=120)

    return invoke


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """Symbolic batch: atc's --input_shape decides the compiled batch size."""
    return write_tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_om_bs4(toolchain, tiny_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("om")
    outcome = execute(
        ["atc", f"--model={tiny_onnx}", *ATC_FLAGS, f"--output={out}/tiny_bs4", "--input_shape=x:4,3,4,4"],
        cwd=out, env=toolchain,
    )
    assert outcome.ok, outcome.output
    return out / "tiny_bs4.om"


@pytest.fixture
def python() -> str:
    return sys.executable
