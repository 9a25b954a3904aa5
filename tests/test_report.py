"""`ompipe report`: every results JSON of the work directory in one table."""
from __future__ import annotations

import json


def test_report_puts_the_om_result_beside_the_onnxruntime_baseline(ompipe, toy):
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--weights", "random")
    assert ompipe(*common).code == 0
    assert ompipe(*common, "--backend", "onnxruntime").code == 0
    table = ompipe("report", "--md")
    assert table.code == 0, table.err
    ais_row = next(line for line in table.out.splitlines() if line.startswith("| toy | ais_bench (fake) | 4 | top1 |"))
    cells = [c.strip() for c in ais_row.strip("|").split("|")]
    assert cells[5] == "0.25" and cells[7] != "" and cells[12] == "RANDOM"  # guide ref, ONNX Runtime baseline
    assert cells[11] == "1"  # golden comparison: the .om's worst cosine against PyTorch
    assert cells[7] == cells[4]  # the fake .om gives the same top1 as ONNX Runtime
    assert cells[10] == "force_fp16" and cells[14] == "fake toolchain, random weights"
    ort_row = next(line for line in table.out.splitlines() if line.startswith("| toy | onnxruntime | 4 | top1 |"))
    assert [c.strip() for c in ort_row.strip("|").split("|")][10::4] == ["fp32", "random weights"]  # not made by the fake
    rows = json.loads(ompipe("report", "--json").out)
    assert {(r["tool"], r["metric"]) for r in rows} >= {("ais_bench", "top1"), ("onnxruntime", "mean_confidence")}
    assert all(r["weights"] == "RANDOM" for r in rows)
    assert {r["tool"]: r["provenance"] for r in rows} == {"ais_bench": ["fake toolchain", "random weights"],
                                                          "onnxruntime": ["random weights"]}


def test_report_tells_stream_results_apart_and_keeps_the_files_baseline(ompipe, toy):
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--weights", "random")
    for extra in ((), ("--backend", "onnxruntime"), ("--backend", "onnxruntime", "--stream")):
        assert ompipe(*common, *extra).code == 0
    lines = ompipe("report", "--md").out.splitlines()
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


def test_report_lists_results_that_have_only_throughput(ompipe, toy, tmp_path):
    assert ompipe("bench", "toy", "--bs", "1,4", "--recipes", toy.recipes, "--backend", "onnxruntime", "--weights", "random", "-q").code == 0
    rows = json.loads(ompipe("report", "--json").out)
    bench = json.loads((tmp_path / "work/toy/bench/toy_onnxruntime.json").read_text())
    assert [(r["bs"], r["metric"], r["fps"]) for r in rows] == [(row["bs"], None, row["fps"]) for row in bench["rows"]]
    assert all(r["reference_fps"] == {"Ascend310P3": {1: 1000, 4: 3000}[r["bs"]]} for r in rows)
    markdown = ompipe("report", "--md").out
    assert "| toy | onnxruntime | 1 | (throughput only) |" in markdown and "| toy | onnxruntime | 4 | (throughput only) |" in markdown


def test_report_on_the_terminal_is_a_table_that_names_the_fake(ompipe, toy):
    assert ompipe("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--toolchain", "fake", "--weights", "random", "-q").code == 0
    result = ompipe("report")
    assert result.code == 0, result.err
    assert "|---" not in result.out and "━" in result.out  # rich's table, not Markdown
    assert "ais_bench (fake)" in result.out and "mean_confidence" in result.out  # not wrapped, not cut
    assert "fake: made by ompipe's fake atc / ais_bench" in result.out  # the short label spelled out


def test_report_refuses_two_stdout_formats(ompipe, tmp_path):
    (tmp_path / "work/m/results").mkdir(parents=True)
    (tmp_path / "work/m/results/m_onnxruntime_bs1.json").write_text(json.dumps(
        {"model": "m", "bs": 1, "tool": "onnxruntime", "metrics": {"top1": 0.5}, "reference": {"accuracy": [], "fps": {}}}))
    assert ompipe("report", "--md").code == 0
    result = ompipe("report", "--json", "--md")
    assert result.code == 1 and "--json and --md" in result.err


def test_provenance_comes_from_the_results_list_else_from_the_older_fields():
    from om_pipeline.report import provenance_of

    assert provenance_of({"provenance": ["paced emulator"], "toolchain": "real", "random_weights": False}) == ["paced emulator"]
    # a list that names less (one helper's labels only) never hides what the fields say
    assert provenance_of({"provenance": ["emulated fp16"], "toolchain": "fake", "tool": "ais_bench", "random_weights": True,
                          "precision": "fp16-emulated"}) == ["emulated fp16", "fake toolchain", "random weights"]
    assert provenance_of({"toolchain": "fake", "tool": "ais_bench", "random_weights": True}) == ["fake toolchain", "random weights"]
    assert provenance_of({"toolchain": "fake", "tool": "onnxruntime", "random_weights": False}) == []  # ONNX Runtime made it
    assert provenance_of({"toolchain": "real", "tool": "onnxruntime", "precision": "fp16-emulated"}) == ["emulated fp16"]


def test_the_baseline_is_the_fp32_onnxruntime_result_when_an_emulated_fp16_one_exists():
    from om_pipeline.report import rows

    def result(precision, top1):
        return {"model": "m", "bs": 1, "tool": "onnxruntime", "mode": "files", "precision": precision, "metrics": {"top1": top1},
                "reference": {"accuracy": [], "fps": {}}}

    for order in ((result("fp32", 0.5), result("fp16-emulated", 0.49)), (result("fp16-emulated", 0.49), result("fp32", 0.5))):
        table = {row["tool"]: row for row in rows(list(order))}
        assert table["onnxruntime fp16-emulated"]["onnxruntime"] == 0.5 and table["onnxruntime"]["onnxruntime"] is None


def test_throughput_takes_the_bench_figure_over_a_runs_own_for_the_same_batch_size():
    """bench corrects fps for the compiled batch size; a run's perf record does not."""
    from om_pipeline.report import throughput

    result = {"model": "m", "bs": 4, "tool": "ais_bench", "toolchain": "fake", "perf": {"fps": 10.0},
              "reference": {"accuracy": [], "fps": {"T4": {"4": 400.0}}}}
    table = {"model": "m", "machine": "Ascend310P3 (fake toolchain, ais_bench)", "rows": [{"bs": 1, "fps": 5.0, "tool": "ais_bench"},
                                                                                       {"bs": 4, "fps": 40.0, "tool": "ais_bench"}]}
    for benches in ([table], [dict(table, provenance=["fake toolchain"], references={"Ascend310P3": {"1": 100.0}})]):
        entry = throughput([result], benches)["m"]
        assert entry["measured"] == {"ais_bench": {1: 5.0, 4: 40.0}} and entry["provenance"] == {"ais_bench": ["fake toolchain"]}
        assert entry["reference_sources"] == []
    assert entry["references"] == {"T4": {4: 400.0}, "Ascend310P3": {1: 100.0}}
