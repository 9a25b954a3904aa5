"""A dry run executes nothing and needs nothing: no data, no weights, no network, no CANN. With
the network blocked for this process and its subprocesses, every shipped recipe plans (the
guides' argv for each batch size: tests/recipes/test_*_recipe.py, their `offline` cases), a
stage whose input is absent says what it would download or needs, nothing is fetched, and
the only subprocess is the fake npu-smi that `--soc-version auto` reads."""
from __future__ import annotations

import os
import re
import sys
import urllib.request

import pytest

from om_pipeline.testing.dry_run import closing_table, planned_commands
from om_pipeline.testing.offline import MESSAGE, block_network
from om_pipeline.tools import execute

MODELS = ["superpoint", "pointrend", "centernet", "transpose", "gfocalv2"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    block_network(monkeypatch, tmp_path)


@pytest.fixture
def subprocesses(monkeypatch):
    """Every argv the tool seam runs during the test (they still run)."""
    seen: list[tuple[str, ...]] = []

    def record(request):
        seen.append(request.argv)
        return execute.run_subprocess(request)

    with execute.swapped(record):
        yield seen


def test_the_guard_blocks_this_process_and_its_subprocesses(offline, tmp_path):
    with pytest.raises(OSError, match=re.escape(MESSAGE)):
        urllib.request.urlopen("http://images.cocodataset.org/zips/val2017.zip", timeout=5)
    child = execute.execute([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9), timeout=5)"])
    assert child.returncode == 1 and MESSAGE in child.output


@pytest.mark.parametrize("model", MODELS)
def test_stage_atc_dry_run_needs_nothing(ompipe, offline, subprocesses, model, tmp_path):
    result = ompipe("stage", model, "atc", "--dry-run", "--toolchain", "fake", "--workdir", "work")
    assert result.code == 0, result.err
    table = closing_table(result.out)
    assert table[f"atc-bs{1}-ascend"] == "RUN" and "dataset" not in {k for k, v in table.items() if v == "RUN"}
    (atc,) = [argv for argv in planned_commands(result.out) if argv[0] == "atc"]
    assert "--framework=5" in atc and "--soc_version=Ascend310P3" in atc
    assert [argv[0] for argv in subprocesses] == ["npu-smi"]  # --soc-version auto; nothing else executes
    assert not os.listdir(os.environ["OMPIPE_CACHE"]) and not (tmp_path / "work" / model / "om").exists()


@pytest.mark.parametrize("model", MODELS)
def test_check_plans_offline_and_says_what_would_run(ompipe, offline, model):
    result = ompipe("run", model, "--check", "--toolchain", "fake", "--workdir", "work")
    assert result.code == 1 and "check: some stages would run" in result.err
    assert "Traceback" not in result.err and "cannot download" not in result.err
    assert all(status in ("RUN", "SKIPPED") for status in closing_table(result.out).values())
    assert not os.listdir(os.environ["OMPIPE_CACHE"])


def test_absent_inputs_are_named_in_their_rows(ompipe, offline):
    centernet = ompipe("run", "centernet", "--dry-run", "--toolchain", "fake", "--workdir", "work")
    assert centernet.code == 0, centernet.err
    assert ("dataset                      would download http://images.cocodataset.org/zips/val2017.zip (816 MB), "
            "http://images.cocodataset.org/annotations/annotations_trainval2017.zip (253 MB)") in centernet.out
    assert "weights                      never ran; needs --weights PATH (ctdet_coco_dla_2x.pth is not in" in centernet.out
    pointrend = ompipe("run", "pointrend", "--dry-run", "--toolchain", "fake", "--workdir", "work")
    assert "dataset                      needs --data (cityscapes_val)" in pointrend.out
    assert "weights                      never ran; would download https://dl.fbaipublicfiles.com/" in pointrend.out
    superpoint = ompipe("run", "superpoint", "--dry-run", "--toolchain", "fake", "--workdir", "work")
    assert "hpatches-sequences-release.tar.gz (size not stated)" in superpoint.out
    assert "weights                      upstream patch will run\n" in superpoint.out  # in the checkout the clone makes


def test_a_real_run_still_downloads_what_the_dry_run_named(ompipe, offline):
    """Outside a dry run the dataset stage fetches as before (here: refused by the guard)."""
    result = ompipe("stage", "superpoint", "dataset", "--toolchain", "fake", "--workdir", "work")
    assert result.code == 1 and "cannot download http://icvl.ee.ic.ac.uk/" in result.err


def test_download_sizes_are_shown_not_fingerprinted(tmp_path):
    """A size added to a recipe reruns nothing: it only feeds the dry run's line."""
    from om_pipeline.context import Options, Run
    from om_pipeline.data.centernet_tinycoco import write_tiny_coco
    from om_pipeline.recipe import find_recipe
    from om_pipeline.stages.dataset import DatasetStage

    loaded = find_recipe("centernet")
    assert [d.size for d in loaded.recipe.stages.dataset.downloads] == [815585330, 252907541]
    run = Run(loaded, Options(data=write_tiny_coco(tmp_path / "coco", images=1)), "onnxruntime", 1, tmp_path / "work")
    downloads = DatasetStage(run).fingerprint().params["downloads"]
    assert [sorted(item) for item in downloads] == [["sha256", "url"], ["sha256", "url"]]
