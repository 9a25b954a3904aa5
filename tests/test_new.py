"""`ompipe new NAME`: a recipe and plugin skeleton that validates, dry-runs and runs.

The sequence the README gives: `ompipe new mymodel --dir DIR`, `ompipe validate`, `ompipe run
mymodel --recipes DIR --dry-run --toolchain fake`; then a real run on the toy dataset (the
skeleton reads the same layout) with the fake toolchain, so the skeleton is a working plugin.
"""
from __future__ import annotations

import json

from om_pipeline.testing.dry_run import closing_table


def test_new_then_validate_then_dry_run(ompipe, tmp_path):
    created = ompipe("new", "mymodel", "--dir", "models")
    assert created.code == 0, created.err
    assert (tmp_path / "models/mymodel.yaml").is_file() and (tmp_path / "models/mymodel.py").is_file()
    assert "ompipe run mymodel --recipes models --dry-run --toolchain fake" in created.out
    validated = ompipe("validate", "models/mymodel.yaml")
    assert validated.code == 0 and "ok      models/mymodel.yaml" in validated.out, validated.err
    assert ompipe("validate", "--recipes", "models").code == 0  # with every recipe found
    planned = ompipe("run", "mymodel", "--recipes", "models", "--dry-run", "--toolchain", "fake")
    assert planned.code == 0, planned.err
    table = closing_table(planned.out)
    assert set(table) == {"dataset", "preprocess", "export-bs1-ascend", "atc-bs1-ascend", "infer-bs1-ais_bench",
                          "eval-bs1-ais_bench", "perf-bs1-ais_bench"} and set(table.values()) == {"RUN"}
    assert "needs --data (mymodel_data)" in planned.out and "--input_shape=image:1,3,32,32" in planned.out
    assert not list((tmp_path / "work").rglob("*.onnx"))  # a dry run executes nothing


def test_the_skeleton_runs_on_a_dataset_of_its_layout(ompipe, toy, tmp_path):
    assert ompipe("new", "mymodel", "--dir", "models").code == 0
    result = ompipe("run", "mymodel", "--recipes", "models", "--toolchain", "fake", "--data", toy.data, "--limit", "6")
    assert result.code == 0, result.err
    results = json.loads((tmp_path / "work/mymodel/results/mymodel_ais_bench_bs1.json").read_text())
    assert 0 <= results["metrics"]["top1"] <= 1 and results["random_weights"]


def test_new_never_overwrites_and_checks_the_name(ompipe, tmp_path):
    assert ompipe("new", "mymodel").code == 0
    (tmp_path / "mymodel.py").write_text("# mine\n")
    again = ompipe("new", "mymodel")
    assert again.code == 1 and "already exist" in again.err and (tmp_path / "mymodel.py").read_text() == "# mine\n"
    bad = ompipe("new", "My Model")
    assert bad.code == 1 and "is not a recipe name" in bad.err
