"""`ompipe bench MODEL --bs 1,4,8,...`: the guide's throughput table, measured.

For each batch size, builds what is missing (export, atc) and runs the perf stage (ais_bench
`--loop 20` as the guide, msame's average, or the same statistics for ONNX Runtime). The batch
size is taken from the compiled model's real input shape, never from a flag: ais_bench's
formula multiplies by whatever `--batchsize` says (winml-cli#930 was 8x too high that way).
Writes Markdown, JSON and a chart (PNG and SVG) of fps against bs beside the guide's figures
for every chip the recipe names, saying in its own text what made the numbers (plots.py).
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

from . import report
from .context import Run
from .errors import UserError
from .runner import run_pipeline
from .stages.perf import PerfStage
from .state import write_json_atomic
from .tools import atc as atc_tool
from .ui import Printer


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--bs {text!r}: give batch sizes as 1,4,8") from None
    if not sizes or any(bs < 1 for bs in sizes):
        raise UserError(f"--bs {text!r}: batch sizes must be positive")
    return sizes


def compiled_batch(run: Run) -> int:
    """dim 0 of the first input as compiled: atc's --input_shape, or the ONNX model's shape."""
    record = run.state.record(run.stage_key("atc", run.target)) if run.runtime.runs_om else None
    argv = (record or {}).get("argv") or []
    entries = atc_tool.input_shape_entries(atc_tool.parse_flags(argv[1:]).get("input_shape", "")) if argv else []
    if entries:
        return entries[0][1][0]
    from .onnx_info import describe

    shape = describe(run.path(run.model_onnx), check=False)["shapes"][run.recipe.model.inputs[0].name]
    return shape[0] if isinstance(shape[0], int) else run.bs


def measure(runs: list[Run], printer: Printer) -> tuple[list[dict], list[str]]:
    """fps per batch size, and what made them (the provenance labels of every run's results)."""
    rows, provenance = [], []
    for run in runs:
        printer.info(f"--- bs {run.bs}")
        results = run_pipeline(run, printer).results or {}
        provenance += [label for label in report.provenance_of(results) if label not in provenance]
        perf = run.state.record(PerfStage(run).key)["info"]
        real_bs = compiled_batch(run)
        fps = perf["fps"] * real_bs / perf["batchsize"] if perf.get("batchsize") else perf["fps"]
        if perf.get("batchsize") and perf["batchsize"] != real_bs:
            printer.info(f"note: the tool reported batch size {perf['batchsize']}, the compiled model has {real_bs}: fps corrected")
        rows.append({"bs": real_bs, "fps": fps, "mean_ms": perf.get("mean_ms"), "tool": run.runtime.name,
                     "devices": len(perf.get("devices") or [None])})
    return rows, provenance


def table(run: Run, rows: list[dict], chip: str | None) -> list[dict]:
    """Each row beside the guide's figure for its chip. The guides measure one device: with
    several (`--devices`), fps is their sum and the ratio is per device (fps / devices / guide)."""
    references = run.recipe.reference.fps
    chip = chip if chip in references else next(iter(references), None)
    best = max(rows, key=lambda r: r["fps"])["bs"] if rows else None
    return [{**row, "chip": chip, "reference_fps": references.get(chip, {}).get(row["bs"]),
             "ratio": row["fps"] / row["devices"] / references[chip][row["bs"]] if chip and row["bs"] in references.get(chip, {}) else None,
             "best": row["bs"] == best} for row in rows]


def markdown(rows: list[dict], machine: str) -> str:
    devices = max((row["devices"] for row in rows), default=1)
    lines = [f"Measured on: {machine}", ""]
    if devices > 1:
        lines += [f"fps: the sum over {devices} devices (ais_bench's own multi-device mode); ratio: per device, "
                  "against the guide's one-device figure", ""]
    lines += ["| chip (reference) | bs | fps | reference fps | ratio | best |", "|---|---|---|---|---|---|"]
    for row in rows:
        reference = "" if row["reference_fps"] is None else f"{row['reference_fps']:g}"
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.4f}"
        lines.append(f"| {row['chip'] or ''} | {row['bs']} | {row['fps']:.2f} | {reference} | {ratio} | {'**best**' if row['best'] else ''} |")
    return "\n".join(lines)


def host_cpu() -> str:
    """The CPU that measured ONNX Runtime's fps: its model name and logical CPU count."""
    name = platform.processor()
    try:
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name or platform.machine()}, {os.cpu_count()} logical CPUs"


def bench(runs: list[Run], printer: Printer) -> tuple[str, Path]:
    """The perf stage of each run (one per batch size, built by commands.build_run): the table,
    its JSON, Markdown and chart, under the model's `bench/`."""
    from . import plots, versions

    first = runs[0]
    if first.recipe.stages.perf is None:
        raise UserError(f"recipe {first.name} has no perf stage to benchmark")
    measured, provenance = measure(runs, printer)
    rows = table(first, measured, first.soc_version if first.runtime.runs_om else None)
    tool_versions = versions.report()  # on the real toolchain this asks CANN: once
    devices = first.options.devices
    on_devices = f" x{len(devices)} devices {','.join(map(str, devices))}" if devices else ""
    machine = (f"{first.soc_version}{on_devices} ({first.options.toolchain} toolchain, {first.runtime.name})" if first.runtime.runs_om
               else f"ONNX Runtime {versions.package('onnxruntime')} CPU, {tool_versions['platform']}, {host_cpu()}")
    out = first.model_dir / "bench" / f"{first.name}_{PerfStage(first).variant}"
    data = {"model": first.name, "machine": machine, "rows": rows, "provenance": provenance,
            "references": first.recipe.reference.model_dump(mode="json")["fps"],
            "fps_source": first.recipe.reference.fps_source, "versions": tool_versions}
    write_json_atomic(out.with_suffix(".json"), data)
    text = markdown(rows, machine)
    if provenance:
        text += "\n\n" + "\n".join(f"- {line}" for line in report.provenance_caption({first.runtime.name: provenance}))
    out.with_suffix(".md").write_text(text + "\n")
    plots.save(figure(data), out)
    return text, out


def figure(data: dict):
    """The chart of one bench table (its JSON as written), the guide's fps for every chip beside it."""
    entry = report.throughput([], [data])[data["model"]]
    return report.throughput_figure(data["model"], entry, f"measured on {data['machine']}; guide: {data.get('fps_source') or 'recipe reference'}")
