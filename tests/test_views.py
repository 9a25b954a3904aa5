"""Plugins with views (TransPose's flip test): preprocess per view, one inference run per view,
the evaluator gets every view's outputs. Also exercises `plugin: file:<name>.py`."""
from __future__ import annotations

import json

import numpy as np
import pytest

FLIP_PLUGIN = '''
import numpy as np
from om_pipeline.testing import toy_plugin
from om_pipeline.testing.toy_plugin import Settings, export, list_samples

VIEWS = ("normal", "flip")


def preprocess(sample, settings):
    (image,) = toy_plugin.preprocess(sample, settings)
    return {"normal": [image], "flip": [np.ascontiguousarray(image[:, :, ::-1])]}


class FlipAverage(toy_plugin.Top1):
    def add(self, sample, outputs):
        assert set(outputs) == {"normal", "flip"}
        self.flip_differs = getattr(self, "flip_differs", False) or not np.allclose(outputs["normal"][0], outputs["flip"][0])
        super().add(sample, [(outputs["normal"][0] + outputs["flip"][0]) / 2])

    def result(self):
        return {**super().result(), "flip_differs": float(self.flip_differs)}


def evaluator(data, settings):
    return FlipAverage()
'''


@pytest.mark.parametrize("backend", ["ais_bench", "onnxruntime"])
def test_flip_views_run_twice_and_reach_the_evaluator(ompipe, toy, tmp_path, backend):
    (toy.recipes / "toy_flip.py").write_text(FLIP_PLUGIN)
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace("plugin: om_pipeline.testing.toy_plugin", "plugin: file:toy_flip.py"))
    plan = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--backend", backend, "--dry-run")
    if backend == "ais_bench":
        infer_commands = [line for line in plan.out.splitlines() if "-m ais_bench --model=" in line and "--input=" in line]
        assert len(infer_commands) == 2 and "inputs/normal/image" in infer_commands[0] and "inputs/flip/image" in infer_commands[1]
    result = ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--backend", backend)
    assert result.code == 0, result.err
    work = tmp_path / "work/toy"
    for view in ("normal", "flip"):
        assert len(list((work / f"infer/{backend}_bs4/{view}").glob("*_0.bin"))) == 12
    metrics = json.loads((work / f"results/toy_{backend}_bs4.json").read_text())["metrics"]
    assert metrics["flip_differs"] == 1.0
    flipped = np.fromfile(next((work / "inputs/flip/image").glob("*.bin")), dtype=np.float32).reshape(3, 16, 16)
    normal = np.fromfile(next((work / "inputs/normal/image").glob("*.bin")), dtype=np.float32).reshape(3, 16, 16)
    assert np.array_equal(flipped, normal[:, :, ::-1])
