"""`ompipe report --html`: one self-contained page; valid HTML; every number where the results
put it; badges for what the fake, random weights or an emulator made; renders in Chromium."""
from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import html5lib
import pytest

import headless_chromium  # beside this file (pytest puts the test directory on sys.path)
from om_pipeline import html_report, report
from om_pipeline.cli import main
from om_pipeline.testing.toy import make_toy
from om_pipeline.tools import execute


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The demo's sequence on the toy: bench (fake toolchain, bs 1 and 4), a fake .om run and an
    ONNX Runtime run of bs 4, built once for this module's tests."""
    root = tmp_path_factory.mktemp("report-html")
    toy = make_toy(root / "toy")
    work = root / "work"
    common = ["--recipes", str(toy.recipes), "--weights", "random", "--workdir", str(work), "-q"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMPIPE_CACHE", str(root / "cache"))
        for name in ("OMPIPE_RECIPES", "OMPIPE_TOOLCHAIN", "ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH", "ASCEND_OPP_PATH"):
            patch.delenv(name, raising=False)
        try:
            assert main(["bench", "toy", "--bs", "1,4", "--toolchain", "fake", *common]) == 0
            assert main(["run", "toy", "--data", str(toy.data), "--toolchain", "fake", *common]) == 0
            assert main(["run", "toy", "--data", str(toy.data), "--backend", "onnxruntime", *common]) == 0
        finally:
            execute.set_toolchain_env({})
    return work


@pytest.fixture(scope="module")
def page(workdir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "report.html"
    assert main(["report", "--workdir", str(workdir), "--html", str(path), "--md"]) == 0
    return path


class Page(HTMLParser):
    """The page as tables of cell texts (per section id), its images and its resource links."""

    def __init__(self, text: str):
        super().__init__()
        self.section, self.tables, self.images, self.links, self.scripts = None, {}, [], [], 0
        self.badges: dict[str, list[str]] = {}
        self._cell, self._row, self._badge = None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs["id"]
        elif tag == "table":
            self.tables.setdefault(self.section, []).append([])
        elif tag == "tr":
            self._row = []
            self.tables[self.section][-1].append(self._row)
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")
        elif tag == "script":
            self.scripts += 1
        elif tag == "span" and "badge" in attrs.get("class", ""):
            self._badge = attrs["class"].split()[1]
        for name in ("src", "href"):
            if name in attrs and tag != "img":
                self.links.append(attrs[name])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "section":
            self.section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._badge:
            self.badges.setdefault(self._badge, []).append(data)
            self._badge = None


def results_of(workdir: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in (workdir / "toy/results").glob("toy_*.json")}


def test_the_page_is_valid_html_with_every_chart_inline_and_nothing_to_fetch(page):
    text = page.read_text(encoding="utf-8")
    html5lib.HTMLParser(strict=True).parse(text)  # raises on any HTML5 parse error
    parsed = Page(text)
    assert parsed.scripts == 0 and parsed.links == []  # no script, no stylesheet or link to load
    assert len(parsed.images) == 1 and parsed.images[0]["alt"] == "toy: throughput vs batch size"
    assert base64.b64decode(parsed.images[0]["src"].removeprefix("data:image/png;base64,")).startswith(b"\x89PNG")
    assert oct(page.stat().st_mode & 0o777) == "0o644" and not list(page.parent.glob(".*"))


def test_each_metric_sits_beside_the_guide_and_the_onnxruntime_baseline(page, workdir):
    runs, metrics = Page(page.read_text()).tables["toy"][:2]
    results = results_of(workdir)
    om, ort = results["toy_ais_bench_bs4"], results["toy_onnxruntime_bs4"]
    assert metrics[0] == ["bs", "metric", "guide reference", "onnxruntime (baseline)", "ais_bench (fake)"]
    top1 = dict(zip(metrics[0], next(row for row in metrics[1:] if row[:2] == ["4", "top1"])))
    assert top1["guide reference"] == "0.25 (chance level of 4 classes)"
    assert top1["onnxruntime (baseline)"] == f"{ort['metrics']['top1']:.4g} ×{ort['metrics']['top1'] / 0.25:.3f} guide"
    assert top1["ais_bench (fake)"] == f"{om['metrics']['top1']:.4g} ×{om['metrics']['top1'] / 0.25:.3f} guide, ×1.000 ONNX Runtime"
    assert [row[1] for row in metrics[1:]] == ["mean_confidence", "top1"]
    assert runs[0] == ["run", "bs", "precision", "golden cosine", "samples", "made by"]
    cosine = min(s["cosine"] for s in om["compare"]["stats"][om["compare"]["rungs"][-1]].values())  # "om (fp16 emulated)"
    assert runs[1] == ["ais_bench", "4", om["precision"], f"{cosine:.6g}", str(om["samples"]),
                       "fake toolchain random weights emulated fp16"]
    assert runs[2][:3] == ["onnxruntime", "4", "fp32"] and runs[2][-1] == "random weights"


def test_the_throughput_table_and_chart_hold_the_bench_and_run_figures(page, workdir):
    table = Page(page.read_text()).tables["toy"][2]
    bench = json.loads((workdir / "toy/bench/toy_ais_bench.json").read_text())
    results = results_of(workdir)
    assert table[0] == ["bs", "ais_bench fps fake toolchain random weights emulated fp16", "onnxruntime fps random weights",
                        "Ascend310P3 fps (guide)"]
    shown = {row[0]: row[1:] for row in table[1:]}
    assert shown["1"][0] == f"{bench['rows'][0]['fps']:,.0f}" and shown["4"][0] == f"{bench['rows'][1]['fps']:,.0f}"
    assert shown["4"][1] == f"{results['toy_onnxruntime_bs4']['perf']['fps']:,.0f}" and shown["1"][1] == ""
    assert [shown[bs][2] for bs in ("1", "4", "8")] == ["1,000", "3,000", "4,000"]
    assert "guide figures: made up for the fixture" in page.read_text()  # where the recipe took them from
    entry = report.throughput(report.collect(workdir), report.collect_bench(workdir))["toy"]
    figure = report.throughput_figure("toy", entry, "subtitle")
    plotted = {line.get_label(): dict(zip(line.get_xdata(), line.get_ydata())) for line in figure.axes[0].get_lines()}
    assert plotted["ais_bench (fake toolchain, random weights, emulated fp16)"] == {row["bs"]: row["fps"] for row in bench["rows"]}
    assert plotted["onnxruntime (random weights)"] == {4: results["toy_onnxruntime_bs4"]["perf"]["fps"]}


def test_machine_and_tool_versions_come_from_the_results(page, workdir):
    versions = dict(row for row in Page(page.read_text()).tables[None][-1])
    recorded = results_of(workdir)["toy_onnxruntime_bs4"]["versions"]
    assert versions["onnxruntime"] == recorded["onnxruntime"] and versions["torch"] == recorded["torch"]
    assert "Ascend310P3 (fake toolchain, ais_bench)" in page.read_text()


def test_an_html_path_that_cannot_be_written_is_a_user_error(workdir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target, message in ((tmp_path, "is a directory"), (blocker / "report.html", "cannot write there")):
        assert main(["report", "--workdir", str(workdir), "--html", str(target), "--md"]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_badges_follow_the_provenance_list_when_results_carry_one(tmp_path):
    """The provenance contract: results["provenance"] wins over the older fields, and every
    label gets its badge, its legend entry and its line in the chart's caption."""
    result = {"model": "m", "bs": 1, "tool": "onnxruntime", "backend": "onnxruntime", "toolchain": "real", "mode": "files",
              "random_weights": False, "precision": "fp16-emulated", "provenance": ["emulated fp16", "paced emulator"],
              "metrics": {"top1": 0.5}, "samples": 3, "perf": {"fps": 12.0}, "compare": None, "atc": None,
              "reference": {"accuracy": [], "fps": {"T4": {"1": 40.0}}, "fps_source": "guide"}, "versions": {"onnxruntime": "1"}}
    (tmp_path / "m/results").mkdir(parents=True)
    (tmp_path / "m/results/m_onnxruntime_bs1.json").write_text(json.dumps(result))
    parsed = Page(html_report.render(tmp_path))
    assert set(parsed.badges) == {"emulated", "paced", "real"}  # real: the legend's entry
    row = dict(zip(parsed.tables["m"][0][0], parsed.tables["m"][0][1]))
    assert row["precision"] == "fp16-emulated" and row["made by"] == "emulated fp16 paced emulator"
    assert parsed.tables["m"][1][0][-1] == "onnxruntime fp16-emulated"  # told apart from an fp32 baseline
    caption = report.provenance_caption(report.throughput([result], [])["m"]["provenance"])
    assert caption[0] == "onnxruntime fp16-emulated: emulated fp16, paced emulator" and any("paced NPU emulator" in line for line in caption)


chromium = headless_chromium.find_chromium()


@pytest.mark.skipif(not chromium, reason="no chromium on PATH (Debian: apt-get install chromium; or set OMPIPE_CHROMIUM)")
def test_the_page_renders_in_headless_chromium_without_errors_or_broken_images(page, tmp_path):
    rendered = headless_chromium.render(page, chromium)
    assert rendered.console_errors == [] and rendered.broken_images == []
    assert rendered.images == 1 and rendered.title == "ompipe report: toy"
    assert rendered.screenshot.startswith(b"\x89PNG") and len(rendered.screenshot) > 20_000


@pytest.mark.skipif(not chromium, reason="no chromium on PATH (Debian: apt-get install chromium; or set OMPIPE_CHROMIUM)")
def test_the_browser_check_catches_a_broken_image_and_a_console_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>broken</title></head><body>'
                    '<img alt="not a png" src="data:image/png;base64,bm90IGEgcG5n">'
                    "<script>console.error('something failed')</script></body></html>")
    rendered = headless_chromium.render(page, chromium)
    assert rendered.broken_images == ["not a png"]
    assert any("something failed" in error for error in rendered.console_errors)


def test_the_model_section_sets_fp32_emulated_fp16_and_the_guides_310p_figure_side_by_side(tmp_path):
    from test_report import fp16_pair

    results = fp16_pair(tmp_path)
    text = html_report.render(tmp_path)
    html5lib.HTMLParser(strict=True).parse(text)
    parsed = Page(text)
    table = next(t for t in parsed.tables["m"] if t[0][:3] == ["bs", "metric", "fp32"])
    assert table[0] == ["bs", "metric", "fp32", "fp16 emulated", "guide 310P", "delta fp16 - fp32"]
    fp32, fp16 = results["m_onnxruntime_bs1"]["metrics"], results["m_onnxruntime_bs1_fp16"]["metrics"]
    shown = {row[1]: row for row in table[1:]}
    assert list(shown) == ["loss_10", "miou", "pixel_acc"]
    for metric, row in shown.items():
        assert row[2:4] == [f"{fp32[metric]:.4g}", f"{fp16[metric]:.4g}"] and row[5] == f"{fp16[metric] - fp32[metric]:+.3g}"
    assert shown["miou"][4] == "0.7885 (guide table (bs 1))" and shown["pixel_acc"][4] == ""
    assert [image["alt"] for image in parsed.images] == ["m: fp32 vs emulated fp16 accuracy"]
    assert {"emulated", "random"} <= set(parsed.badges)


def test_an_fp32_run_alone_gets_the_hint_that_adds_the_fp16_preview(tmp_path):
    from test_report import fp16_pair

    fp16_pair(tmp_path, fp16=False)
    parsed = Page(html_report.render(tmp_path))
    assert all(t[0][:3] != ["bs", "metric", "fp32"] for t in parsed.tables["m"]) and parsed.images == []
    assert "ompipe run m --runtime onnxruntime --precision fp16" in html_report.render(tmp_path)
