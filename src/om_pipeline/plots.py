"""Charts of ompipe's numbers, drawn with matplotlib on its Agg canvas (no display, no pyplot
global state, so nothing depends on the machine's backend settings).

Each chart is one function from plain data (what the results and bench JSONs hold) to a
matplotlib Figure, so tests read the plotted series and texts back from the figure's artists;
`save` writes PNG and SVG, `png_data_uri` inlines a figure in the HTML report. Every figure
carries its own caption saying where its numbers came from (fake toolchain, random weights,
emulated precision, paced emulator): a chart pasted into a review keeps its provenance.

A new chart is one function: `_figure(title, subtitle, caption)` gives the axes above a caption
area sized to the caption, `_label_points` writes every point's value beside it.
"""
from __future__ import annotations

import base64
import io
import textwrap
from pathlib import Path

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

WIDTH_IN, AXES_HEIGHT_IN = 10.0, 5.0
CAPTION_FONT_PT, CAPTION_WRAP, SUBTITLE_WRAP = 8.5, 140, 95
# Text stays text in the SVG (searchable, and tests read it); PNG metadata without a date keeps
# a rerun's file identical.
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "ompipe", "font.size": 10}
MEASURED_COLORS = ["#1f5fbf", "#d9480f", "#2b8a3e", "#7048e8"]
REFERENCE_COLORS = ["#c92a2a", "#5f3dc4", "#e67700", "#495057"]


def throughput(title: str, subtitle: str, measured: dict[str, dict[int, float]],
               references: dict[str, dict[int, float]], caption: list[str]) -> Figure:
    """fps against batch size, both axes logarithmic (a CPU's 10 fps and an NPU's 2500 fps
    stay readable on one chart): our measured series as solid lines, the guide's per chip as
    dashed ones, every point labelled with its value."""
    figure, axes = _figure(title, subtitle, caption)
    # A point is labelled above it unless another point at its batch size sits just above (within
    # 3x: close on the log axis); then below, so two close series keep their labels apart.
    every = [*measured.values(), *references.values()]

    def offsets(points: dict[int, float]) -> dict[int, int]:
        return {bs: -13 if any(fps < other[bs] <= fps * 3 for other in every if bs in other) else 7 for bs, fps in points.items()}

    for index, (label, points) in enumerate(measured.items()):
        _series(axes, label, points, color=MEASURED_COLORS[index % len(MEASURED_COLORS)],
                style={"marker": "o", "linewidth": 2.2}, offsets=offsets(points))
    for index, (chip, points) in enumerate(references.items()):
        _series(axes, f"{chip} (guide)", points, color=REFERENCE_COLORS[index % len(REFERENCE_COLORS)],
                style={"marker": "s", "linestyle": "--", "linewidth": 1.2, "markerfacecolor": "white"}, offsets=offsets(points))
    sizes = sorted({bs for points in [*measured.values(), *references.values()] for bs in points})
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    if sizes:
        axes.xaxis.set_major_locator(FixedLocator(sizes))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.set_xticklabels([str(bs) for bs in sizes])
        axes.set_xlim(sizes[0] / 1.4, sizes[-1] * 1.4)
    values = [fps for points in [*measured.values(), *references.values()] for fps in points.values() if fps > 0]
    if values:  # room above and below for the point labels
        axes.set_ylim(min(values) / 2.2, max(values) * 2.2)
    axes.set_xlabel("batch size (log scale)")
    axes.set_ylabel("throughput, samples/s (log scale)")
    axes.grid(True, which="major", alpha=0.45)
    axes.grid(True, which="minor", axis="y", alpha=0.15)
    if measured or references:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)
    return figure


WAYS = {"guide": "the guide's way", "files": "ompipe files mode", "stream": "ompipe --stream"}


def time_to_metric(rows: list[dict], machine: str) -> Figure:
    """Seconds from start to the metric per model, one bar per way (WAYS), the NPU's floor
    (N x passes / the guide's fps) drawn over each model's bars. `rows`: the time-to-metric
    benchmark's (benchmarks/bench_time_to_metric.py): model, n, floor_s, runs[way]["seconds"]."""
    caption = ["NPU: a paced emulator (ompipe's fake toolchain, OMPIPE_FAKE_NPU), not a 310P: it answers with outputs "
               "recorded from ONNX Runtime (random weights) in the time the guide's fps gives; the host work is real.",
               "floor: N samples x passes / the guide's fps, what the NPU alone needs; the bars above it are host "
               "work that did not hide behind the NPU. The guide's way: serial preprocessing to .bin files, ais_bench "
               "over the folder, serial postprocessing and the metric, three processes in a row."]
    figure, axes = _figure("Time to metric against the NPU's floor", f"measured on {machine}", caption)
    axes.title.set_wrap(True)
    height = 0.8 / len(WAYS)
    for index, (way, label) in enumerate(WAYS.items()):
        ys = [row_index + (index - (len(WAYS) - 1) / 2) * height for row_index in range(len(rows))]
        seconds = [row["runs"][way]["seconds"] for row in rows]
        axes.barh(ys, seconds, height=height * 0.9, color=MEASURED_COLORS[index], label=label)
        for y, value in zip(ys, seconds):
            axes.annotate(f"{value:.1f} s", (value, y), textcoords="offset points", xytext=(4, 0), va="center", fontsize=8)
    for row_index, row in enumerate(rows):
        axes.plot([row["floor_s"]] * 2, [row_index - 0.45, row_index + 0.45], color="black", linewidth=2.2,
                  label="NPU floor (paced emulator)" if row_index == 0 else None)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels([f"{row['model']}\nN {row['n']}, floor {row['floor_s']:.1f} s" for row in rows])
    axes.invert_yaxis()
    longest = max((row["runs"][way]["seconds"] for row in rows for way in WAYS), default=1.0)
    axes.set_xlim(0, longest * 1.15)
    axes.set_xlabel("seconds from the first process's start to the metric")
    axes.grid(True, axis="x", alpha=0.45)
    if rows:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)
    return figure


PRECISION_COLORS = {"fp32": "#1f5fbf", "fp16 emulated": "#7048e8", "guide 310P": "#c92a2a"}


def fp16_metrics(title: str, subtitle: str, groups: dict[str, dict[str, float | None]],
                 deltas: dict[str, float | None], caption: list[str]) -> Figure:
    """Grouped bars, one group per metric: fp32, fp16 emulated and the guide's 310P figure
    (a series' bar is left out where it has no value), every bar labelled with its value and
    each group's tick with its delta fp16 - fp32 (a loss of 1e-5 reads there, not in the bars)."""
    figure, axes = _figure(title, subtitle, caption)
    names = list(groups)
    series = [name for name in PRECISION_COLORS if any(values.get(name) is not None for values in groups.values())]
    width = 0.8 / max(len(series), 1)
    for index, name in enumerate(series):
        at = [(x, values[name]) for x, values in enumerate(groups.values()) if values.get(name) is not None]
        bars = axes.bar([x + (index - (len(series) - 1) / 2) * width for x, _ in at], [v for _, v in at], width * 0.92,
                        label=name, color=PRECISION_COLORS[name], alpha=0.55 if name == "guide 310P" else 1.0,
                        hatch="//" if name == "guide 310P" else None, edgecolor="white")
        axes.bar_label(bars, labels=[_short(v) if abs(v) >= 100 else f"{v:.4g}" for _, v in at], padding=2, fontsize=8,
                       color=PRECISION_COLORS[name])
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels([name if deltas.get(name) is None else f"{name}\ndelta {deltas[name]:+.3g}" for name in names])
    axes.set_xlim(-0.6, len(names) - 0.4)
    values = [v for values in groups.values() for v in values.values() if v is not None]
    if values:  # room above the tallest bar for its label; negative metrics keep their floor
        axes.set_ylim(min(0.0, min(values) * 1.15), max(0.0, max(values)) * 1.15 or 1.0)
    axes.axhline(0, color="#adb5bd", linewidth=0.8)
    axes.set_xlabel("metric (delta: fp16 emulated - fp32)")
    axes.set_ylabel("metric value")
    axes.grid(True, axis="y", alpha=0.45)
    axes.set_axisbelow(True)
    if series:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)
    return figure


def save(figure: Figure, stem: Path) -> list[Path]:
    """stem.png and stem.svg, each written to a temporary name and renamed into place."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        partial = path.with_name(f".{path.name}.tmp")
        with rc_context(STYLE), open(partial, "wb") as handle:
            figure.savefig(handle, format=suffix[1:], dpi=110, metadata=_metadata(suffix))
        partial.replace(path)
        paths.append(path)
    return paths


def png_data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    with rc_context(STYLE):
        figure.savefig(buffer, format="png", dpi=110, metadata=_metadata(".png"))
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def texts(figure: Figure) -> list[str]:
    """Every text the figure draws (titles, labels, annotations, legend, caption): for tests and
    for checking that nothing overlaps."""
    return [text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text")) if text.get_text()]


# ---------------------------------------------------------------- shared parts of every chart


def _figure(title: str, subtitle: str, caption: list[str]) -> tuple[Figure, "object"]:
    """A figure with one axes above a caption area exactly as tall as the wrapped caption, laid
    out by matplotlib's constrained layout so title, subtitle, labels and legend never overlap."""
    lines = [wrapped for line in caption for wrapped in textwrap.wrap(line, CAPTION_WRAP, subsequent_indent="   ")]
    caption_in = (len(lines) * CAPTION_FONT_PT * 1.35 + 14) / 72
    with rc_context(STYLE):
        figure = Figure(figsize=(WIDTH_IN, AXES_HEIGHT_IN + caption_in), layout="constrained")
        FigureCanvasAgg(figure)
        bottom = caption_in / (AXES_HEIGHT_IN + caption_in)
        figure.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
        figure.suptitle(title, fontsize=13, fontweight="bold")
        axes = figure.add_subplot()
        axes.set_title("\n".join(textwrap.wrap(subtitle, SUBTITLE_WRAP)), fontsize=9.5, color="#444444")
        if lines:
            figure.text(0.01, 0.012, "\n".join(lines), fontsize=CAPTION_FONT_PT, va="bottom", ha="left",
                        color="#6b1d1d", linespacing=1.35, gid="caption")
    return figure, axes


def _series(axes, label: str, points: dict[int, float], color: str, style: dict, offsets: dict[int, int]) -> None:
    xs = sorted(points)
    ys = [points[x] for x in xs]
    axes.plot(xs, ys, color=color, label=label, **style)
    _label_points(axes, xs, ys, color, [offsets[x] for x in xs])


def _label_points(axes, xs, ys, color: str, offsets_pt: list[int]) -> None:
    """Each point's value beside it, `offsets_pt` points above (+) or below (-)."""
    for x, y, offset in zip(xs, ys, offsets_pt):
        axes.annotate(_short(y), (x, y), textcoords="offset points", xytext=(0, offset), ha="center",
                      fontsize=8, color=color, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _metadata(suffix: str) -> dict:
    return {"Software": None} if suffix == ".png" else {"Date": None}
