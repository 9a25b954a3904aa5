"""`ompipe bench MODEL --bs 1,4,8,...`: the guide's throughput table, measured.

For each batch size, builds what is missing (export, atc) and runs the perf stage (ais_bench
`--loop 20` as the guide, msame's average, or the same statistics for ONNX Runtime). The batch
size is taken from the compiled model's real input shape, never from a flag: ais_bench's
formula multiplies by whatever `--batchsize` says (winml-cli#930 was 8x too high that way).
Writes Markdown, JSON and a PNG plot of fps against bs with the guide's reference points.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from .context import Options, Run
from .errors import UserError
from .runner import run_pipeline
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
    if run.tool != "onnxruntime":
        record = run.state.record(run.stage_key("atc", run.target)) or {}
        argv = record.get("argv") or []
        entries = atc_tool.input_shape_entries(atc_tool.parse_flags(argv[1:]).get("input_shape", "")) if argv else []
        if entries:
            return entries[0][1][0]
    from .onnx_info import describe

    shape = describe(run.path(run.model_onnx), check=False)["shapes"][run.recipe.model.inputs[0].name]
    return shape[0] if isinstance(shape[0], int) else run.bs


def measure(make_run, batch_sizes: list[int], printer: Printer) -> list[dict]:
    rows = []
    for bs in batch_sizes:
        run = make_run(bs)
        printer.info(f"--- bs {bs}")
        run_pipeline(run, printer)
        perf = run.state.record(run.stage_key("perf", run.tool))["info"]
        real_bs = compiled_batch(run)
        fps = perf["fps"] * real_bs / perf["batchsize"] if perf.get("batchsize") else perf["fps"]
        if perf.get("batchsize") and perf["batchsize"] != real_bs:
            printer.info(f"note: the tool reported batch size {perf['batchsize']}, the compiled model has {real_bs}: fps corrected")
        rows.append({"bs": real_bs, "fps": fps, "mean_ms": perf.get("mean_ms"), "tool": run.tool})
    return rows


def table(run: Run, rows: list[dict], chip: str | None) -> list[dict]:
    references = run.recipe.reference.fps
    chip = chip if chip in references else next(iter(references), None)
    best = max(rows, key=lambda r: r["fps"])["bs"] if rows else None
    return [{**row, "chip": chip, "reference_fps": references.get(chip, {}).get(row["bs"]),
             "ratio": row["fps"] / references[chip][row["bs"]] if chip and row["bs"] in references.get(chip, {}) else None,
             "best": row["bs"] == best} for row in rows]


def markdown(rows: list[dict], machine: str) -> str:
    lines = [f"Measured on: {machine}", "", "| chip (reference) | bs | fps | reference fps | ratio | best |", "|---|---|---|---|---|---|"]
    for row in rows:
        reference = "" if row["reference_fps"] is None else f"{row['reference_fps']:g}"
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.4f}"
        lines.append(f"| {row['chip'] or ''} | {row['bs']} | {row['fps']:.2f} | {reference} | {ratio} | {'**best**' if row['best'] else ''} |")
    return "\n".join(lines)


def plot(rows: list[dict], references: dict[int, float], title: str, path: Path) -> None:
    """fps against bs (log2 axis), ours as a line, the guide's as dots. OpenCV draws it, so the
    plot needs no extra dependency."""
    import cv2

    width, height, margin = 720, 440, 60
    image = np.full((height, width, 3), 255, np.uint8)
    sizes = sorted({r["bs"] for r in rows} | set(references))
    top = max([r["fps"] for r in rows] + list(references.values()) + [1.0]) * 1.1
    span = max(math.log2(max(sizes)) - math.log2(min(sizes)), 1)

    def point(bs: float, fps: float) -> tuple[int, int]:
        x = margin + (math.log2(bs) - math.log2(min(sizes))) / span * (width - 2 * margin)
        return int(x), int(height - margin - fps / top * (height - 2 * margin))

    cv2.line(image, (margin, height - margin), (width - margin, height - margin), (0, 0, 0), 1)
    cv2.line(image, (margin, margin), (margin, height - margin), (0, 0, 0), 1)
    for bs in sizes:
        x, _ = point(bs, 0)
        cv2.putText(image, str(bs), (x - 8, height - margin + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(image, f"{top:.0f} fps", (5, margin - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(image, title, (margin, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    ours = [point(r["bs"], r["fps"]) for r in sorted(rows, key=lambda r: r["bs"])]
    cv2.polylines(image, [np.array(ours, np.int32)], False, (200, 80, 0), 2)
    for x, y in ours:
        cv2.circle(image, (x, y), 4, (200, 80, 0), -1)
    for bs, fps in references.items():
        cv2.circle(image, point(bs, fps), 5, (0, 0, 220), 2)
    cv2.putText(image, "blue: measured   red circles: the guide's reference", (margin, 50), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def bench(loaded, options: Options, batch_sizes: list[int], backend: str, printer: Printer) -> tuple[str, Path]:
    from . import versions

    def make_run(bs: int) -> Run:
        return Run(loaded, replace(options, bs=bs, only="perf"), backend, bs, options.workdir)

    first = make_run(batch_sizes[0])
    if first.recipe.stages.perf is None:
        raise UserError(f"recipe {loaded.recipe.name} has no perf stage to benchmark")
    rows = table(first, measure(make_run, batch_sizes, printer), first.soc_version if backend == "ais_bench" else None)
    machine = (f"{first.soc_version} ({options.toolchain} toolchain, {first.tool})" if backend == "ais_bench"
               else f"ONNX Runtime {versions.package('onnxruntime')} CPU, {versions.report()['platform']}")
    out = first.model_dir / "bench" / f"{first.name}_{first.tool}"
    write_json_atomic(out.with_suffix(".json"), {"model": first.name, "machine": machine, "rows": rows})
    text = markdown(rows, machine)
    out.with_suffix(".md").write_text(text + "\n")
    chip = rows[0]["chip"] if rows else None
    plot(rows, first.recipe.reference.fps.get(chip, {}), f"{first.name}: fps vs batch size ({machine})", out.with_suffix(".png"))
    return text, out
