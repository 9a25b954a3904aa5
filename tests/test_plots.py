"""plots.py: the charts' data, labels and provenance read back from matplotlib's artists."""
from __future__ import annotations

import itertools

import pytest

from om_pipeline import plots

MEASURED = {"ais_bench (fake toolchain)": {1: 9.5, 4: 12.25, 8: 11.0}}
REFERENCES = {"Ascend310P3": {1: 2124.0, 4: 2437.0, 8: 2528.0}, "T4": {1: 497.47, 4: 405.03}}
CAPTION = ["ais_bench: fake toolchain", "fake toolchain: made by ompipe's fake atc / ais_bench (no CANN, no NPU)"]


def chart():
    return plots.throughput("toy: throughput vs batch size", "measured on a machine with a rather long name " * 4,
                            MEASURED, REFERENCES, CAPTION)


def test_every_series_is_plotted_as_given_on_log_axes_with_each_point_labelled():
    figure = chart()
    axes = figure.axes[0]
    plotted = {line.get_label(): dict(zip(line.get_xdata(), line.get_ydata())) for line in axes.get_lines()}
    assert plotted == {**MEASURED, **{f"{chip} (guide)": points for chip, points in REFERENCES.items()}}
    assert axes.get_xscale() == "log" and axes.get_yscale() == "log"
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["1", "4", "8"]
    assert "batch size" in axes.get_xlabel() and "samples/s" in axes.get_ylabel()
    assert all(line.get_visible() for line in axes.get_xgridlines() + axes.get_ygridlines())
    assert axes.get_legend() is not None
    labels = [annotation.get_text() for annotation in axes.texts]
    assert sorted(labels) == sorted(["9.5", "12.2", "11", "2,124", "2,437", "2,528", "497", "405"])
    assert [text.get_text() for text in axes.get_legend().get_texts()] == list(plotted)


def test_the_caption_with_its_provenance_is_part_of_the_figure():
    texts = plots.texts(chart())
    assert all(line in "\n".join(texts) for line in CAPTION)
    assert "toy: throughput vs batch size" in texts


def test_title_subtitle_axes_legend_and_caption_neither_overlap_nor_leave_the_figure():
    figure = chart()
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    axes = figure.axes[0]
    caption = next(text for text in figure.texts if text.get_gid() == "caption")
    boxes = {"title": figure._suptitle.get_window_extent(renderer), "subtitle": axes.title.get_window_extent(renderer),
             "plot": axes.get_window_extent(renderer), "x label": axes.xaxis.label.get_window_extent(renderer),
             "legend": axes.get_legend().get_window_extent(renderer), "caption": caption.get_window_extent(renderer)}
    for (name, box), (other, other_box) in itertools.combinations(boxes.items(), 2):
        assert not box.overlaps(other_box), f"{name} overlaps {other}"
    whole = figure.bbox
    for name, box in boxes.items():
        assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1, f"{name} leaves the figure"


def test_save_writes_png_and_svg_with_the_text_kept_as_text(tmp_path):
    paths = plots.save(chart(), tmp_path / "out" / "chart")
    assert [p.name for p in paths] == ["chart.png", "chart.svg"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    svg = paths[1].read_text()
    assert "fake toolchain" in svg and "2,437" in svg
    assert not list((tmp_path / "out").glob(".*"))  # no temporary left


def test_png_data_uri_is_a_png():
    import base64

    uri = plots.png_data_uri(chart())
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG")


@pytest.mark.parametrize("measured", [{}, {"onnxruntime": {1: 10.0}}])
def test_a_chart_with_one_point_or_only_references_still_draws(measured):
    figure = plots.throughput("t", "s", measured, {"T4": {1: 5.0}}, [])
    figure.canvas.draw()
    assert len(figure.axes[0].get_lines()) == len(measured) + 1


def test_a_point_with_another_just_above_it_is_labelled_below():
    figure = plots.throughput("t", "s", {"a": {1: 3.95, 4: 2.0}, "b": {1: 2.66, 4: 5.0}}, {"T4": {1: 3.0}}, [])
    offsets = {annotation.get_text(): annotation.xyann[1] for annotation in figure.axes[0].texts}
    assert offsets == {"3.95": 7, "2.66": -13, "3": -13, "2": -13, "5": 7}


def test_time_to_metric_draws_each_way_and_the_npu_floor_and_says_the_npu_is_emulated():
    rows = [{"model": "centernet", "n": 700, "floor_s": 20.5,
             "runs": {"guide": {"seconds": 61.0}, "files": {"seconds": 40.2}, "stream": {"seconds": 22.1}}},
            {"model": "superpoint", "n": 600, "floor_s": 0.24,
             "runs": {"guide": {"seconds": 30.0}, "files": {"seconds": 20.0}, "stream": {"seconds": 9.5}}}]
    figure = plots.time_to_metric(rows, "2 cores, load 1.0")
    axes = figure.axes[0]
    widths = {label: [bar.get_width() for bar in container] for label, container in
              zip([c.get_label() for c in axes.containers], axes.containers)}
    assert widths == {plots.WAYS["guide"]: [61.0, 30.0], plots.WAYS["files"]: [40.2, 20.0], plots.WAYS["stream"]: [22.1, 9.5]}
    floors = [line for line in axes.get_lines() if "floor" in (line.get_label() or "") or line.get_xdata()[0] in (20.5, 0.24)]
    assert sorted(line.get_xdata()[0] for line in floors) == [0.24, 20.5]
    text = "\n".join(plots.texts(figure))
    assert "paced emulator" in text and "61.0 s" in text and "floor 20.5 s" in text


def test_the_fp16_chart_plots_each_metrics_fp32_fp16_and_guide_values_with_deltas_and_provenance(tmp_path):
    from test_report import fp16_pair

    from om_pipeline import report

    results = fp16_pair(tmp_path)
    previews = report.fp16_previews(report.rows(list(results.values())))
    figure = report.fp16_figure("m", previews)
    axes = figure.axes[0]
    plotted = {bars.get_label(): {round(bar.get_x() + bar.get_width() / 2): bar.get_height() for bar in bars}
               for bars in axes.containers}
    fp32, fp16 = results["m_onnxruntime_bs1"]["metrics"], results["m_onnxruntime_bs1_fp16"]["metrics"]
    metrics = ["loss_10", "miou", "pixel_acc"]
    assert plotted == {"fp32": {x: fp32[m] for x, m in enumerate(metrics)}, "fp16 emulated": {x: fp16[m] for x, m in enumerate(metrics)},
                       "guide 310P": {1: 0.7885}}  # no guide bar where the guide has no 310P figure
    assert [t.get_text() for t in axes.get_xticklabels()] == ["loss_10\ndelta +0.25", "miou\ndelta -1.8e-05", "pixel_acc\ndelta +0"]
    assert sorted(t.get_text() for t in axes.texts) == sorted(["2.5", "0.004609", "0.3125", "2.75", "0.004591", "0.3125", "0.7885"])
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["fp32", "fp16 emulated", "guide 310P"]
    caption = next(text for text in figure.texts if text.get_gid() == "caption").get_text()
    assert "ONNX Runtime fp16 emulated: emulated fp16, random weights" in caption
    assert "ONNX Runtime fp32: random weights" in caption and "emulated fp16: fp16 emulated on the CPU" in caption
    assert "guide 310P: Ascend310P3, guide table (bs 1)" in caption
    svg = plots.save(figure, tmp_path / "fp16")[1].read_text()
    assert "emulated fp16" in svg and "0.004591" in svg
