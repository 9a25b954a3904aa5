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
    assert cells[10] == "fp16-emulated" and cells[14] == "fake toolchain, random weights, emulated fp16"  # the fake .om's fp16
    ort_row = next(line for line in table.out.splitlines() if line.startswith("| toy | onnxruntime | 4 | top1 |"))
    assert [c.strip() for c in ort_row.strip("|").split("|")][10::4] == ["fp32", "random weights"]  # not made by the fake
    rows = json.loads(ompipe("report", "--json").out)
    assert {(r["tool"], r["metric"]) for r in rows} >= {("ais_bench", "top1"), ("onnxruntime", "mean_confidence")}
    assert all(r["weights"] == "RANDOM" for r in rows)
    assert {r["tool"]: r["provenance"] for r in rows} == {"ais_bench": ["fake toolchain", "random weights", "emulated fp16"],
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


def fp16_pair(root, fp32=True, fp16=True):
    """The two results `--backend onnxruntime` and `--backend onnxruntime --precision fp16` write,
    built directly (no pipeline run): bs 1, three metrics, a 310P guide figure for one of them."""
    reference = {"accuracy": [{"metric": "miou", "value": 0.7885, "chip": "Ascend310P3", "source": "guide table (bs 1)"},
                              {"metric": "miou", "value": 0.789, "source": "upstream README"},
                              {"metric": "pixel_acc", "value": 0.95, "source": "upstream README"}], "fps": {}}
    common = {"model": "m", "bs": 1, "tool": "onnxruntime", "backend": "onnxruntime", "toolchain": "real", "mode": "files",
              "random_weights": True, "samples": 8, "reference": reference}
    results = {}
    if fp32:
        results["m_onnxruntime_bs1"] = dict(common, precision="fp32", provenance=["random weights"],
                                            metrics={"miou": 0.004609, "pixel_acc": 0.3125, "loss_10": 2.5})
    if fp16:
        results["m_onnxruntime_bs1_fp16"] = dict(common, precision="fp16-emulated", provenance=["emulated fp16", "random weights"],
                                                 metrics={"miou": 0.004591, "pixel_acc": 0.3125, "loss_10": 2.75})
    (root / "m/results").mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        (root / f"m/results/{name}.json").write_text(json.dumps(result))
    return results


def test_report_sets_fp32_emulated_fp16_and_the_guides_310p_figure_side_by_side(ompipe, tmp_path):
    results = fp16_pair(tmp_path / "work")
    fp32, fp16 = results["m_onnxruntime_bs1"]["metrics"], results["m_onnxruntime_bs1_fp16"]["metrics"]
    rows = json.loads(ompipe("report", "--json").out)
    assert [r["metric"] for r in rows] == ["loss_10", "miou", "pixel_acc"] * 2  # both runs' rows carry the preview
    previews = {r["metric"]: r["fp16_preview"] for r in rows}
    assert all(r["fp16_preview"] == previews[r["metric"]] for r in rows)
    for metric, preview in previews.items():
        assert (preview["fp32"], preview["fp16_emulated"]) == (fp32[metric], fp16[metric])
        assert preview["delta"] == fp16[metric] - fp32[metric]
    assert previews["miou"]["guide_310p"] == 0.7885 and previews["miou"]["guide_source"] == "guide table (bs 1)"
    assert previews["pixel_acc"]["guide_310p"] is None  # the upstream README is not the guide's 310P figure
    assert previews["miou"]["provenance"] == {"fp32": ["random weights"], "fp16-emulated": ["emulated fp16", "random weights"]}

    lines = ompipe("report", "--md").out.splitlines()
    header = lines.index("| model | bs | metric | fp32 | fp16 emulated | guide 310P | delta fp16 - fp32 | provenance |")
    assert lines[header + 2:header + 5] == [
        "| m | 1 | loss_10 | 2.5 | 2.75 |  | +0.25 | emulated fp16, random weights |",
        "| m | 1 | miou | 0.004609 | 0.004591 | 0.7885 | -1.8e-05 | emulated fp16, random weights |",
        "| m | 1 | pixel_acc | 0.3125 | 0.3125 |  | +0 | emulated fp16, random weights |"]
    terminal = ompipe("report").out
    assert "m: fp32 vs emulated fp16 (onnxruntime)" in terminal and "-1.8e-05" in terminal and "0.7885" in terminal


def test_the_fp16_preview_with_one_of_the_two_runs(ompipe, tmp_path):
    fp16_pair(tmp_path / "work", fp32=False)
    rows = json.loads(ompipe("report", "--json").out)
    assert [(r["fp16_preview"]["fp32"], r["fp16_preview"]["delta"]) for r in rows] == [(None, None)] * 3
    assert "| m | 1 | miou |  | 0.004591 | 0.7885 |  | emulated fp16, random weights |" in ompipe("report", "--md").out
    (tmp_path / "work/m/results/m_onnxruntime_bs1_fp16.json").unlink()
    fp16_pair(tmp_path / "work", fp16=False)
    assert all(r["fp16_preview"] is None for r in json.loads(ompipe("report", "--json").out))  # nothing to compare
    result = ompipe("report", "--md")
    assert result.code == 0 and "fp16 emulated" not in result.out


def test_the_fp16_preview_of_the_toys_two_onnxruntime_runs(ompipe, toy, tmp_path):
    common = ("run", "toy", "--recipes", toy.recipes, "--data", toy.data, "--backend", "onnxruntime", "--weights", "random", "-q")
    assert ompipe(*common).code == 0 and ompipe(*common, "--precision", "fp16").code == 0
    fp32, fp16 = (json.loads((tmp_path / f"work/toy/results/toy_onnxruntime_bs4{suffix}.json").read_text()) for suffix in ("", "_fp16"))
    previews = {r["metric"]: r["fp16_preview"] for r in json.loads(ompipe("report", "--json").out) if r["fp16_preview"]}
    assert set(previews) == set(fp32["metrics"]) == set(fp16["metrics"])
    for metric, preview in previews.items():
        assert (preview["fp32"], preview["fp16_emulated"]) == (fp32["metrics"][metric], fp16["metrics"][metric])
    assert previews["top1"]["guide_310p"] is None  # the toy's reference is chance level, not a 310P figure
