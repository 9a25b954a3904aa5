"""Export environments: built once in the cache, keyed by requirements; the export runs there."""
from __future__ import annotations

import json
import sys

from om_pipeline.tools import execute


def test_export_runs_in_a_declared_environment_built_once(ompipe, toy, tmp_path):
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace("    opset: 13\n", "    opset: 13\n    env:\n      requirements: [torch==1.8.0, onnx==1.8.0]\n"))
    calls = []
    real = execute._executor

    def env_free(request):
        """venv and pip are recorded (no network in tests); the worker really runs, with this
        interpreter standing in for the environment's."""
        calls.append(request.argv)
        if request.argv[1:3] == ("-m", "venv"):
            return execute.Outcome(request.argv, 0, "")
        if request.argv[1:3] == ("-m", "pip"):
            return execute.Outcome(request.argv, 0, "Successfully installed torch-1.8.0")
        if request.argv[1:3] == ("-m", "om_pipeline.export_worker"):
            return real(execute.Request((sys.executable, *request.argv[1:]), request.cwd, request.env, request.log))
        return real(request)

    args = ("stage", "toy", "export", "--recipes", toy.recipes, "--data", toy.data, "--backend", "onnxruntime")
    with execute.swapped(env_free):
        first = ompipe(*args)
        assert first.code == 0, first.err
        recipe.write_text(recipe.read_text().replace("opset: 13", "opset: 12"))
        second = ompipe(*args)
        assert second.code == 0, second.err
    venvs = [c for c in calls if c[1:3] == ("-m", "venv")]
    pips = [c for c in calls if c[1:3] == ("-m", "pip")]
    workers = [c for c in calls if c[1:3] == ("-m", "om_pipeline.export_worker")]
    assert len(venvs) == 1 and venvs[0][0] == "python3"  # built once, reused by the second export
    assert pips == [(pips[0][0], "-m", "pip", "install", "--disable-pip-version-check", "torch==1.8.0", "onnx==1.8.0")]
    assert len(workers) == 2 and workers[0][0] == pips[0][0]  # the export used the env's interpreter
    onnx_info = json.loads((tmp_path / "work/toy/.ompipe/stages/export-bs4-onnxruntime.json").read_text())["info"]
    assert onnx_info["opset"] == 12 and onnx_info["inputs"] == ["image"]


def test_checkout_is_installed_into_the_environment_once_per_clone(tmp_path):
    """detectron2's editable install compiles for minutes: a second export with the same
    checkout skips it, a new clone at the same path installs again."""
    from pathlib import Path

    from om_pipeline.envs import install_source

    python = tmp_path / "env/bin/python"
    python.parent.mkdir(parents=True)
    source = tmp_path / "src"
    source.mkdir()
    calls = []

    def record(request):
        calls.append(request.argv)
        return execute.Outcome(request.argv, 0, "Successfully installed detectron2")

    log = Path(tmp_path / "export.log")
    with execute.swapped(record):
        install_source(python, source, log)
        install_source(python, source, log)
        assert calls == [(str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-build-isolation", "-e", str(source))]
        keep = tmp_path / "old-src"
        source.rename(keep)  # the clone stage renames a new checkout into place
        source.mkdir()
        install_source(python, source, log)
    assert len(calls) == 2
