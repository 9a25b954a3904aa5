"""`ompipe report`: one table for every results JSON in the work directory. Each metric beside
the guide's reference and beside our own ONNX Runtime baseline (same pre/postprocessing), so a
drop is told apart as pipeline drift (ONNX vs reference) or conversion drift (OM vs ONNX)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import UserError
from .state import read_json


def natural_key(text: str) -> list:
    """homography_accuracy_3 before homography_accuracy_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


BASELINE_TOOL = "onnxruntime"
# The provenance labels results carry (results["provenance"]) and what each tells a reader.
PROVENANCE_NOTES = {
    "fake toolchain": "made by ompipe's fake atc / ais_bench (no CANN, no NPU): the .om's outputs, "
                      "golden cosine and fps are not an Ascend chip's",
    "random weights": "the checkpoint was random: metrics say nothing about the guide's accuracy (fps are unaffected)",
    "emulated fp16": "fp16 emulated on the CPU (ONNX Runtime tensors rounded to fp16), not ATC's fp16 kernels",
    "paced emulator": "a paced NPU emulator: its fps is the pace it was given, not a measurement",
}
REAL = "real"


def runtime_of(result: dict) -> str:
    """The runtime that made a result: its `tool` (results before it had one: `backend`)."""
    return result.get("tool") or result.get("backend") or ""


def is_baseline(name: str) -> bool:
    """Whether this runtime makes the accuracy baseline the .om is held against."""
    return name == BASELINE_TOOL


def provenance_of(result: dict) -> list[str]:
    """What made the numbers of one results (or bench) JSON that a reader must know about:
    `results["provenance"]` where the run wrote it, plus what the older fields say (a fake tool,
    random weights, emulated precision), so a list that names less never hides a fact."""
    labels = list(result.get("provenance") or [])
    facts = {"fake toolchain": result.get("toolchain") == "fake" and not is_baseline(runtime_of(result)),
             "random weights": bool(result.get("random_weights")),
             "emulated fp16": result.get("precision") == "fp16-emulated"}
    return labels + [label for label, holds in facts.items() if holds and label not in labels]


def provenance_caption(series: dict[str, list[str]]) -> list[str]:
    """One line per series naming what made its numbers, then what each label means."""
    lines = [f"{name}: {', '.join(labels) or REAL + ' (no fake tool, random weights or emulation)'}" for name, labels in series.items()]
    used = dict.fromkeys(label for labels in series.values() for label in labels)
    return lines + [f"{label}: {PROVENANCE_NOTES[label]}" for label in used if label in PROVENANCE_NOTES]


def collect(workdir: Path) -> list[dict]:
    paths = sorted(workdir.glob("*/results/*_bs*.json"))
    results = [r for r in (read_json(p) for p in paths) if r and "model" in r and "metrics" in r]
    if not results:
        raise UserError(f"no results in {workdir}", hint="run a model first: ompipe run MODEL (results land in <workdir>/<model>/results/)")
    return results


def collect_bench(workdir: Path) -> list[dict]:
    """The tables `ompipe bench` wrote (<workdir>/<model>/bench/<model>_<tool>.json)."""
    tables = (read_json(path) for path in sorted(workdir.glob("*/bench/*.json")))
    return [table for table in tables if table and "model" in table and "rows" in table]


def rows(results: list[dict]) -> list[dict]:
    # The baseline is ONNX Runtime's fp32 files-mode result where there is one (a stream result
    # gives the same metrics, and a run of both modes must not make the choice depend on file
    # order; an emulated-fp16 run is what the baseline is compared with, not the baseline).
    candidates = sorted(results, key=lambda r: (r.get("precision", "fp32") == "fp32", _is_files_mode(r)))
    baselines = {(r["model"], r["bs"]): r for r in candidates if is_baseline(runtime_of(r))}
    previews = {(p["model"], p["bs"], p["metric"]): p for p in fp16_preview(results)}
    table = []
    for result in results:
        baseline = baselines.get((result["model"], result["bs"]))
        perf = result.get("perf") or {}
        metrics = sorted((result.get("metrics") or {}).items(), key=lambda item: natural_key(item[0]))
        # A result with throughput only (`ompipe bench`, `--to perf`) still gets its row.
        for metric, value in metrics or ([(None, None)] if perf else []):
            references = [r for r in result["reference"]["accuracy"] if r["metric"] == metric]
            table.append({
                "model": result["model"],
                "tool": tool_label(result),
                "mode": result.get("mode", "files"),
                "bs": result["bs"],
                "metric": metric,
                "value": value,
                "reference": references[0]["value"] if references else None,
                "reference_source": references[0]["source"] if references else None,
                "onnxruntime": (baseline or {}).get("metrics", {}).get(metric) if baseline is not result and metric else None,
                "fps": perf.get("fps"),
                "reference_fps": _reference_fps(result),
                "precision_mode": (result.get("atc") or {}).get("precision_mode"),
                "precision": precision(result),
                "golden_cosine": _golden_cosine(result.get("compare")),
                "weights": "RANDOM" if result.get("random_weights") else (result.get("weights") or {}).get("mode"),
                "samples": result.get("samples"),
                "cann": result.get("versions", {}).get("cann"),
                "provenance": provenance_of(result),
                "fp16_preview": previews.get((result["model"], result["bs"], metric)),
            })
    return table


GUIDE_CHIP = "Ascend310P"  # the chip whose guide figure the fp16 preview is set beside (310P1/310P3)
FP16 = "fp16-emulated"


def fp16_preview(results: list[dict]) -> list[dict]:
    """ATC's fp16 seen on the CPU: per model, batch size and metric, ONNX Runtime's fp32 metric,
    the same evaluation with fp16 emulated (`--precision fp16`), the guide's 310P figure and the
    delta fp16 - fp32. Made where an emulated-fp16 run exists (its fp32 twin may be missing: its
    cells stay empty); an fp32 run alone has nothing to compare with. Keyed on `precision`, never
    on file names, and files-mode results win over --stream ones (the same metrics)."""
    runs: dict[tuple, dict[str, dict]] = {}
    for result in sorted(results, key=_is_files_mode):  # files mode last: it wins
        kind = FP16 if result.get("precision") == FP16 else precision(result)
        if is_baseline(runtime_of(result)) and kind in ("fp32", FP16):
            runs.setdefault((result["model"], result["bs"]), {})[kind] = result
    table = []
    for (model, bs), pair in sorted(runs.items(), key=lambda item: (item[0][0], item[0][1])):
        if FP16 not in pair:
            continue
        fp32, fp16 = (pair.get(kind, {}).get("metrics") or {} for kind in ("fp32", FP16))
        for metric in sorted(fp32.keys() | fp16.keys(), key=natural_key):
            guide = next((r for r in pair[FP16]["reference"]["accuracy"]
                          if r["metric"] == metric and (r.get("chip") or "").startswith(GUIDE_CHIP)), None)
            table.append({
                "model": model, "bs": bs, "metric": metric,
                "fp32": fp32.get(metric), "fp16_emulated": fp16.get(metric),
                "delta": fp16[metric] - fp32[metric] if metric in fp16 and metric in fp32 else None,
                "guide_310p": guide["value"] if guide else None,
                "guide_chip": guide.get("chip") if guide else None,
                "guide_source": guide["source"] if guide else None,
                "provenance": {kind: provenance_of(pair[kind]) for kind in ("fp32", FP16) if kind in pair},
            })
    return table


def fp16_previews(table: list[dict]) -> list[dict]:
    """The fp16 preview entries `rows` attached to its rows, each once, in order."""
    entries = {(p["model"], p["bs"], p["metric"]): p for p in (row.get("fp16_preview") for row in table) if p}
    return list(entries.values())


def fp16_figure(model: str, previews: list[dict]):
    """The fp32 vs emulated-fp16 metric chart of one model's preview entries: per metric (and
    batch size) a bar for fp32, fp16 emulated and the guide's 310P figure where the recipe has
    one; what made each series in the caption."""
    from . import plots

    several = len({p["bs"] for p in previews}) > 1
    groups = {f"{p['metric']} (bs {p['bs']})" if several else p["metric"]:
              {"fp32": p["fp32"], "fp16 emulated": p["fp16_emulated"], "guide 310P": p["guide_310p"]} for p in previews}
    deltas = {name: p["delta"] for name, p in zip(groups, previews)}
    runs = {"fp32": "ONNX Runtime fp32", FP16: "ONNX Runtime fp16 emulated"}
    labels: dict[str, list[str]] = {}
    for p in previews:
        for kind, found in p["provenance"].items():
            known = labels.setdefault(runs[kind], [])
            known += [label for label in found if label not in known]
    guides = dict.fromkeys(f"guide 310P: {p['guide_chip']}, {p['guide_source']}" for p in previews if p["guide_310p"] is not None)
    bs = ", ".join(str(b) for b in dict.fromkeys(p["bs"] for p in previews))
    subtitle = (f"ONNX Runtime on the CPU, batch size {bs}: the same ONNX model in fp32 and with ATC's fp16 emulated "
                "(every float tensor stored in fp16), beside the guide's Ascend 310P figure")
    return plots.fp16_metrics(f"{model}: fp32 vs emulated fp16 accuracy", subtitle, groups, deltas,
                              provenance_caption(labels) + list(guides))


def tool_label(result: dict) -> str:
    """The tool, and what sets this run apart from others of the same tool: --stream, or ONNX
    Runtime emulating fp16 (the fake .om always emulates; its badge says so)."""
    runtime = runtime_of(result)
    emulated = is_baseline(runtime) and result.get("precision") == "fp16-emulated"
    return runtime + (" --stream" if not _is_files_mode(result) else "") + (" fp16-emulated" if emulated else "")


def precision(result: dict) -> str | None:
    """What the numbers were computed in: the run's own statement (e.g. fp16-emulated), else
    ATC's precision mode for an .om, else fp32 for ONNX Runtime."""
    if result.get("precision"):
        return result["precision"]
    if (result.get("atc") or {}).get("precision_mode"):
        return result["atc"]["precision_mode"]
    return "fp32" if is_baseline(runtime_of(result)) else None


def _is_files_mode(result: dict) -> bool:
    return result.get("mode", "files") == "files"


def _golden_cosine(compare: dict | None) -> float | None:
    """The worst cosine of the last rung (the target model) against the reference rung."""
    if not compare or not compare.get("stats"):
        return None
    last = compare["rungs"][-1]
    return min(stats["cosine"] for stats in compare["stats"][last].values())


def _reference_fps(result: dict) -> dict[str, float]:
    bs = str(result["bs"])
    return {chip: fps[bs] for chip, fps in result["reference"]["fps"].items() if bs in fps}


def throughput(results: list[dict], benches: list[dict]) -> dict[str, dict]:
    """Per model: measured fps per series (tool and mode) and batch size, what made each series
    (provenance labels), and the guide's fps per chip with where the recipe took them from. `ompipe bench` tables win over a run's
    own perf figure for the same batch size: bench corrects fps for the compiled batch."""
    models: dict[str, dict] = {}

    def add(model: str, name: str, points: dict[int, float], labels: list[str], references: dict, source: str | None) -> None:
        entry = models.setdefault(model, {"measured": {}, "provenance": {}, "references": {}, "reference_sources": []})
        if source and source not in entry["reference_sources"]:
            entry["reference_sources"].append(source)
        entry["measured"].setdefault(name, {}).update(points)
        known = entry["provenance"].setdefault(name, [])
        known.extend(label for label in labels if label not in known)
        for chip, fps in references.items():
            entry["references"].setdefault(chip, {}).update({int(bs): value for bs, value in fps.items()})

    for result in results:
        fps = (result.get("perf") or {}).get("fps")
        if fps is not None:
            add(result["model"], tool_label(result), {result["bs"]: fps}, provenance_of(result), result["reference"]["fps"],
                result["reference"].get("fps_source"))
    for bench in benches:
        for series in dict.fromkeys(map(_bench_series, bench["rows"])):
            add(bench["model"], series, {row["bs"]: row["fps"] for row in bench["rows"] if _bench_series(row) == series},
                _bench_provenance(bench), bench.get("references", {}), bench.get("fps_source"))
    for entry in models.values():
        entry["measured"] = {name: dict(sorted(points.items())) for name, points in entry["measured"].items()}
    return models


def _bench_series(row: dict) -> str:
    """A bench row's series: its runtime, and the device count when it summed several (`bench
    --devices`), so a sum is never read as one device's figure beside the guide's."""
    devices = row.get("devices", 1)
    return row["tool"] if devices == 1 else f"{row['tool']} (sum of {devices} devices)"


def _bench_provenance(bench: dict) -> list[str]:
    """Bench tables written before they carried provenance name the fake in their machine line."""
    if isinstance(bench.get("provenance"), list):
        return bench["provenance"]
    return ["fake toolchain"] if "fake toolchain" in bench.get("machine", "") else []


def throughput_figure(model: str, entry: dict, subtitle: str):
    """The fps-vs-batch-size chart of one model's `throughput` entry, provenance in its caption
    and in each measured series' legend label."""
    from . import plots

    measured = {series_label(name, entry["provenance"][name]): points for name, points in entry["measured"].items()}
    return plots.throughput(f"{model}: throughput vs batch size", subtitle, measured, entry["references"],
                            provenance_caption(entry["provenance"]))


def series_label(name: str, labels: list[str]) -> str:
    return f"{name} ({', '.join(labels)})" if labels else name


def markdown(table: list[dict]) -> str:
    lines = ["| " + " | ".join(MARKDOWN_COLUMNS) + " |", "|" + "---|" * len(MARKDOWN_COLUMNS)]
    for row in table:
        lines.append("| " + " | ".join(_cells(row)) + " |")
    previews = fp16_previews(table)
    if previews:  # a second table: fp32 vs emulated fp16, one row per metric
        lines += ["", f"fp32 vs emulated fp16 ({BASELINE_TOOL}, `--precision fp16`) beside the guide's 310P figure:", "",
                  "| " + " | ".join(FP16_COLUMNS) + " |", "|" + "---|" * len(FP16_COLUMNS)]
        lines += ["| " + " | ".join(_fp16_cells(p)) + " |" for p in previews]
    return "\n".join(lines)


def rich_table(table: list[dict]):
    """The terminal's view: one table per model (its name as the title), the Markdown columns
    a terminal has room for (weights and samples are in --md and --json), provenance in colour
    and short, its words spelled out below."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    tables = []
    for model in dict.fromkeys(row["model"] for row in table):
        out = Table(title=model, title_justify="left", title_style="bold", show_edge=False, pad_edge=False, header_style="bold")
        for column in TERMINAL_COLUMNS:
            out.add_column(column, justify="right" if column in NUMERIC_COLUMNS else "left",
                           no_wrap=column in ("tool", "metric", "precision", "provenance"))
        for row in (row for row in table if row["model"] == model):
            cells = dict(zip(MARKDOWN_COLUMNS, _cells(row)))
            cells["guide fps"] = ", ".join(f"{fps:g} @{chip.removeprefix('Ascend')}" for chip, fps in row["reference_fps"].items())
            out.add_row(*[cells[column] for column in TERMINAL_COLUMNS[:-1]], _rich_provenance(row["provenance"]))
        tables += [out, Text("")]
        previews = [p for p in fp16_previews(table) if p["model"] == model]
        if previews:
            tables += [_rich_fp16_table(model, previews), Text("")]
    used = dict.fromkeys(label for row in table for label in row["provenance"])
    notes = [f"{SHORT.get(label, label)}: {PROVENANCE_NOTES.get(label, label)}" for label in used]
    return Group(*tables, *(Text(note, style="dim") for note in notes))


MARKDOWN_COLUMNS = ("model", "tool", "bs", "metric", "value", "guide ref", "vs ref", "ONNX Runtime", "fps", "guide fps",
                    "precision", "golden cosine", "weights", "samples", "provenance")
TERMINAL_COLUMNS = ("tool", "bs", "metric", "value", "guide ref", "vs ref", "ONNX Runtime", "fps", "guide fps", "precision",
                    "golden cosine", "provenance")
NUMERIC_COLUMNS = {"bs", "value", "guide ref", "vs ref", "ONNX Runtime", "fps", "golden cosine", "samples"}
SHORT = {"fake toolchain": "fake", "random weights": "random weights", "emulated fp16": "emulated fp16", "paced emulator": "paced"}


FP16_COLUMNS = ("model", "bs", "metric", "fp32", "fp16 emulated", "guide 310P", "delta fp16 - fp32", "provenance")


def _fp16_cells(preview: dict) -> list[str]:
    fp16 = preview["provenance"].get(FP16, [])
    return [preview["model"], str(preview["bs"]), preview["metric"], _num(preview["fp32"]), _num(preview["fp16_emulated"]),
            _num(preview["guide_310p"]), delta_text(preview["delta"]), ", ".join(fp16) or REAL]


def _rich_fp16_table(model: str, previews: list[dict]):
    from rich.table import Table

    out = Table(title=f"{model}: fp32 vs emulated fp16 ({BASELINE_TOOL})", title_justify="left", title_style="bold",
                show_edge=False, pad_edge=False, header_style="bold")
    for column in FP16_COLUMNS[1:]:
        out.add_column(column, justify="left" if column in ("metric", "provenance") else "right", no_wrap=True)
    for preview in previews:
        cells = _fp16_cells(preview)
        out.add_row(*cells[1:-1], _rich_provenance(preview["provenance"].get(FP16, [])))
    return out


def delta_text(value) -> str:
    """Signed, and enough digits to show a small fp16 loss (-1.8e-05) rather than round it away."""
    return "" if value is None else f"{value:+.3g}"


def _cells(row: dict) -> list[str]:
    fake = "fake toolchain" in row["provenance"]
    return [
        row["model"], row["tool"] + (" (fake)" if fake else ""), str(row["bs"]), row["metric"] or "(throughput only)",
        _num(row["value"]), _num(row["reference"]), _ratio(row["value"], row["reference"]), _num(row["onnxruntime"]),
        _fps(row["fps"]), ", ".join(f"{v:g} ({chip})" for chip, v in row["reference_fps"].items()) or "",
        row["precision"] or "", _num(row["golden_cosine"]), row["weights"] or "", str(row["samples"] or ""),
        ", ".join(row["provenance"]) or REAL,
    ]


def _rich_provenance(labels: list[str]) -> str:
    from rich.markup import escape

    if not labels:
        return f"[green]{REAL}[/]"
    return ", ".join(f"[{'bold red' if 'fake' in label else 'yellow'}]{escape(SHORT.get(label, label))}[/]" for label in labels)


def _num(value) -> str:
    return "" if value is None else f"{value:.4g}"


def _fps(value) -> str:
    """1,234 rather than 1.234e+03: throughput reads as a count."""
    return "" if value is None else f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"


def _ratio(value, reference) -> str:
    return "" if value is None or not reference else f"{value / reference:.3f}"


def as_json(table: list[dict]) -> str:
    return json.dumps(table, indent=2)
