"""ais_bench refuses group- or other-writable models and inputs (docs/ais_bench-args.md): under a
common `umask 002` ompipe must still write files it accepts."""
from __future__ import annotations

import os
import stat

import pytest

from om_pipeline.cli import no_group_or_other_write


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_a_group_writable_umask_still_gives_files_ais_bench_accepts(umask_002, toy, ompipe, tmp_path):
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--workdir", "work",
                    "--toolchain", "fake", "--to", "infer")
    assert result.code == 0, result.err  # the fake ais_bench applies the real tool's permission checks
    model_dir = tmp_path / "work/toy"
    for path in [model_dir / "om/toy_bs4.om", *sorted((model_dir / "inputs").rglob("*"))]:
        assert not stat.S_IMODE(path.stat().st_mode) & 0o022, path


def test_a_stricter_umask_is_kept(umask_002):
    os.umask(0o077)
    no_group_or_other_write()
    assert os.umask(0o022) == 0o077
