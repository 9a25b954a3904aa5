"""`ompipe report`: every results JSON of the work directory in one table."""
from __future__ import annotations

import json


def test_report_puts_the_om_result_beside_the_onnxruntime_baseline(ompipe, toy):
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--weights", "random")
    assert ompipe(*common).code == 0
    assert ompipe(*common, "--backend", "onnxruntime").code == 0
    table = ompipe("report")
    assert table.code == 0, table.err
    ais_row = next(line for line in table.out.splitlines() if line.startswith("| toy | ais_bench | 4 | top1 |"))
    cells = [c.strip() for c in ais_row.strip("|").split("|")]
    assert cells[5] == "0.25" and cells[7] != "" and cells[12] == "RANDOM"  # guide ref, ONNX Runtime baseline
    assert cells[11] == "1"  # golden comparison: the .om's worst cosine against PyTorch
    assert cells[7] == cells[4]  # the fake .om gives the same top1 as ONNX Runtime
    rows = json.loads(ompipe("report", "--json").out)
    assert {(r["tool"], r["metric"]) for r in rows} >= {("ais_bench", "top1"), ("onnxruntime", "mean_confidence")}
    assert all(r["weights"] == "RANDOM" for r in rows)


def test_report_tells_stream_results_apart_and_keeps_the_files_baseline(ompipe, toy):
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--weights", "random")
    for extra in ((), ("--backend", "onnxruntime"), ("--backend", "onnxruntime", "--stream")):
        assert ompipe(*common, *extra).code == 0
    lines = ompipe("report").out.splitlines()
    assert any(line.startswith("| toy | onnxruntime --stream | 4 | top1 |") for line in lines)
    assert any(line.startswith("| toy | onnxruntime | 4 | top1 |") for line in lines)
    rows = json.loads(ompipe("report", "--json").out)
    assert {r["mode"] for r in rows} == {"files", "stream"}
    files_baseline = [r for r in rows if r["tool"] == "onnxruntime"]
    assert all(r["onnxruntime"] is None for r in files_baseline)  # the baseline is not compared with itself
    streamed = next(r for r in rows if r["tool"] == "onnxruntime --stream" and r["metric"] == "top1")
    assert streamed["onnxruntime"] == streamed["value"]  # compared with the files-mode baseline: the same metric


def test_report_without_results_says_what_to_do(ompipe):
    result = ompipe("report", "--workdir", "nowhere")
    assert result.code == 1 and "ompipe run MODEL" in result.err
