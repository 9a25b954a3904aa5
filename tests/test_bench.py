"""`ompipe bench`: per batch size, build what is missing, measure, compare with the guide."""
from __future__ import annotations

import json

from om_pipeline import bench, plots


def test_bench_writes_the_guides_table_json_and_a_chart_of_that_json(ompipe, toy, tmp_path):
    result = ompipe("bench", "toy", "--bs", "1,4", "--recipes", toy.recipes, "--toolchain", "fake", "--weights", "random", "-q")
    assert result.code == 0, result.err
    assert "| Ascend310P3 | 1 |" in result.out and "| Ascend310P3 | 4 |" in result.out and "**best**" in result.out
    assert "- ais_bench: fake toolchain, random weights" in result.out  # the table says what made it
    data = json.loads((tmp_path / "work/toy/bench/toy_ais_bench.json").read_text())
    assert [row["bs"] for row in data["rows"]] == [1, 4]
    assert data["rows"][1]["reference_fps"] == 3000 and data["rows"][1]["ratio"] == data["rows"][1]["fps"] / 3000
    assert data["provenance"] == ["fake toolchain", "random weights", "emulated fp16"]
    assert (tmp_path / "work/toy/bench/toy_ais_bench.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "work/toy/inputs").exists()  # bench needs no dataset
    # the chart: the JSON's series, the guide's, and what made them in its own text
    figure = bench.figure(data)
    lines = {line.get_label(): dict(zip(line.get_xdata(), line.get_ydata())) for line in figure.axes[0].get_lines()}
    assert lines == {"ais_bench (fake toolchain, random weights, emulated fp16)": {row["bs"]: row["fps"] for row in data["rows"]},
                     "Ascend310P3 (guide)": {1: 1000, 4: 3000, 8: 4000}}  # every chip of the recipe's reference
    texts = "\n".join(plots.texts(figure))
    assert "made by ompipe's fake atc / ais_bench" in texts and "the checkpoint was random" in texts
    svg = (tmp_path / "work/toy/bench/toy_ais_bench.svg").read_text()
    for text in ("made by ompipe's fake atc / ais_bench", "ais_bench (fake toolchain, random weights, emulated fp16)", "3,000", "made up for the fixture"):
        assert text in svg  # the written file is this figure, its provenance in its own text


def test_bench_takes_the_batch_size_from_the_compiled_model_not_the_flag(ompipe, toy, tmp_path):
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace('args: ["--model={om}", "--loop=20", "--batchsize={bs}"]',
                                                 'args: ["--model={om}", "--loop=20", "--batchsize=16"]'))
    result = ompipe("bench", "toy", "--bs", "4", "--recipes", toy.recipes, "--toolchain", "fake", "--weights", "random")
    assert result.code == 0, result.err
    assert "the tool reported batch size 16.0, the compiled model has 4: fps corrected" in result.out
    row = json.loads((tmp_path / "work/toy/bench/toy_ais_bench.json").read_text())["rows"][0]
    perf = json.loads((tmp_path / "work/toy/.ompipe/stages/perf-bs4-ais_bench.json").read_text())["info"]
    assert row["bs"] == 4 and row["fps"] == perf["fps"] * 4 / 16


def test_bench_with_onnx_runtime(ompipe, toy, tmp_path):
    result = ompipe("bench", "toy", "--bs", "1,4", "--recipes", toy.recipes, "--backend", "onnxruntime", "--weights", "random", "-q")
    assert result.code == 0, result.err
    data = json.loads((tmp_path / "work/toy/bench/toy_onnxruntime.json").read_text())
    assert [row["bs"] for row in data["rows"]] == [1, 4] and data["machine"].startswith("ONNX Runtime")
    assert data["machine"].endswith("logical CPUs")  # which CPU measured it
    assert data["provenance"] == ["random weights"]  # ONNX Runtime measured it: no fake, but random weights
    assert not (tmp_path / "work/toy/om").exists()  # no atc on this path


def test_bench_on_several_devices_uses_the_guides_multi_device_mode(ompipe, toy, tmp_path):
    """`bench --devices 0,1`: one ais_bench --device 0,1 run per batch size; its summed throughput,
    beside (never over) the one-device figure, and the ratio to the guide's one-device figure per device."""
    common = ("bench", "toy", "--bs", "4", "--recipes", toy.recipes, "--toolchain", "fake", "--weights", "random", "-q")
    one = ompipe(*common)
    assert one.code == 0, one.err
    two = ompipe(*common, "--devices", "0,1")
    assert two.code == 0, two.err
    assert "fps: the sum over 2 devices" in two.out and "ratio: per device" in two.out
    record = json.loads((tmp_path / "work/toy/.ompipe/stages/perf-bs4-ais_bench-2dev.json").read_text())
    assert record["argv"][-2:] == ["--device", "0,1"] and record["info"]["devices"] == [0, 1]
    single = json.loads((tmp_path / "work/toy/bench/toy_ais_bench.json").read_text())["rows"][0]
    double = json.loads((tmp_path / "work/toy/bench/toy_ais_bench-2dev.json").read_text())["rows"][0]
    assert double["devices"] == 2 and single["devices"] == 1
    assert double["fps"] == record["info"]["fps"] and double["ratio"] == double["fps"] / 2 / 3000
    assert json.loads((tmp_path / "work/toy/.ompipe/stages/perf-bs4-ais_bench.json").read_text())["argv"][-1] != "0,1"


def test_bench_on_several_devices_needs_a_runtime_that_has_them(ompipe, toy):
    result = ompipe("bench", "toy", "--bs", "4", "--recipes", toy.recipes, "--runtime", "onnxruntime", "--devices", "0,1")
    assert result.code == 1 and "measures one device at a time" in result.err and "Traceback" not in result.err


def test_the_report_keeps_a_several_device_sum_apart_from_one_device(ompipe, toy, tmp_path):
    from om_pipeline import report

    common = ("bench", "toy", "--bs", "4", "--recipes", toy.recipes, "--toolchain", "fake", "--weights", "random", "-q")
    assert ompipe(*common).code == 0 and ompipe(*common, "--devices", "0,1").code == 0
    series = report.throughput([], report.collect_bench(tmp_path / "work"))["toy"]["measured"]
    assert set(series) == {"ais_bench", "ais_bench (sum of 2 devices)"}
