"""`ompipe report`: one table for every results JSON in the work directory. Each metric beside
the guide's reference and beside our own ONNX Runtime baseline (same pre/postprocessing), so a
drop is told apart as pipeline drift (ONNX vs reference) or conversion drift (OM vs ONNX)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .state import read_json

BASELINE_TOOL = "onnxruntime"


def collect(workdir: Path) -> list[dict]:
    paths = sorted(workdir.glob("*/results/*_bs*.json"))
    results = [r for r in (read_json(p) for p in paths) if r and "model" in r and "metrics" in r]
    if not results:
        raise UserError(f"no results in {workdir}", hint="run a model first: ompipe run MODEL (results land in <workdir>/<model>/results/)")
    return results


def rows(results: list[dict]) -> list[dict]:
    # The baseline is ONNX Runtime's files-mode result where there is one (a stream result gives
    # the same metrics, and a run of both modes must not make the choice depend on file order).
    baselines = {(r["model"], r["bs"]): r for r in sorted(results, key=_is_files_mode) if r.get("tool") == BASELINE_TOOL}
    table = []
    for result in results:
        baseline = baselines.get((result["model"], result["bs"]))
        perf = result.get("perf") or {}
        for metric, value in sorted((result.get("metrics") or {}).items()):
            references = [r for r in result["reference"]["accuracy"] if r["metric"] == metric]
            table.append({
                "model": result["model"],
                "tool": result.get("tool", result.get("backend")) + (" --stream" if not _is_files_mode(result) else ""),
                "mode": result.get("mode", "files"),
                "bs": result["bs"],
                "metric": metric,
                "value": value,
                "reference": references[0]["value"] if references else None,
                "reference_source": references[0]["source"] if references else None,
                "onnxruntime": (baseline or {}).get("metrics", {}).get(metric) if baseline is not result else None,
                "fps": perf.get("fps"),
                "reference_fps": _reference_fps(result),
                "precision_mode": (result.get("atc") or {}).get("precision_mode"),
                "golden_cosine": _golden_cosine(result.get("compare")),
                "weights": "RANDOM" if result.get("random_weights") else (result.get("weights") or {}).get("mode"),
                "samples": result.get("samples"),
                "cann": result.get("versions", {}).get("cann"),
            })
    return table


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


def markdown(table: list[dict]) -> str:
    header = ("| model | tool | bs | metric | value | guide ref | vs ref | ONNX Runtime | fps | guide fps | precision "
              "| golden cosine | weights | samples |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in table:
        lines.append("| " + " | ".join([
            row["model"], row["tool"], str(row["bs"]), row["metric"], _num(row["value"]),
            _num(row["reference"]), _ratio(row["value"], row["reference"]), _num(row["onnxruntime"]),
            _num(row["fps"]), ", ".join(f"{v:g} ({chip})" for chip, v in row["reference_fps"].items()) or "",
            row["precision_mode"] or "", _num(row["golden_cosine"]), row["weights"] or "", str(row["samples"] or ""),
        ]) + " |")
    return "\n".join(lines)


def _num(value) -> str:
    return "" if value is None else f"{value:.4g}"


def _ratio(value, reference) -> str:
    return "" if value is None or not reference else f"{value / reference:.3f}"


def report(workdir: Path, as_json: bool) -> str:
    table = rows(collect(workdir))
    return json.dumps(table, indent=2) if as_json else markdown(table)
