"""`ompipe report --html FILE`: one self-contained page for a design review.

Per model: each metric beside the guide's reference and our ONNX Runtime baseline, the golden
comparison's cosine and the precision it ran in; the throughput table and chart; a badge on
everything a fake toolchain, random weights, an emulator or emulated precision made. Then the
machine and tool versions the results recorded. Charts are inline PNG data: URIs, styles are
inline, there is no script: the file opens offline, anywhere, as it was written.
"""
from __future__ import annotations

import datetime as dt
import html
import os
import tempfile
from pathlib import Path

from . import report
from .errors import UserError
from .report import PROVENANCE_NOTES, REAL, natural_key

BADGE_CLASS = {"fake toolchain": "fake", "random weights": "random", "emulated fp16": "emulated", "paced emulator": "paced"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #212529;
       margin: 0 auto; max-width: 1180px; padding: 24px 32px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 36px 0 4px; border-bottom: 2px solid #dee2e6; }
h3 { font-size: 15px; margin: 20px 0 6px; } .muted { color: #6c757d; font-size: 12.5px; }
table { border-collapse: collapse; margin: 6px 0 4px; font-size: 13px; }
th, td { border: 1px solid #dee2e6; padding: 4px 8px; vertical-align: top; }
th { background: #f1f3f5; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fake td { background: #fff5f5; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; margin: 1px 2px; font-size: 11.5px;
         font-weight: 600; color: #fff; background: #495057; white-space: nowrap; }
.badge.fake { background: #c92a2a; } .badge.random { background: #d9480f; } .badge.emulated { background: #7048e8; }
.badge.paced { background: #1971c2; } .badge.real { background: #2b8a3e; }
img.chart { max-width: 100%; border: 1px solid #dee2e6; margin-top: 8px; }
dl.legend dt { float: left; clear: left; width: 130px; } dl.legend dd { margin: 0 0 4px 140px; }
code { background: #f1f3f5; padding: 0 3px; border-radius: 3px; }
"""


def write(workdir: Path, path: Path) -> None:
    """Rendered first, written to a temporary name and renamed: no half-written report."""
    page = render(workdir)
    if path.is_dir():
        raise UserError(f"--html {path}: is a directory", hint="give a file name, e.g. --html report.html")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"--html {path}: cannot write there ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
        os.chmod(partial, 0o644)  # a page to share, not mkstemp's private 0600
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def render(workdir: Path) -> str:
    results = report.collect(workdir)
    benches = report.collect_bench(workdir)
    table = report.rows(results)
    throughput = report.throughput(results, benches)
    models = sorted({r["model"] for r in results} | set(throughput))
    used = dict.fromkeys(label for row in table for label in row["provenance"])
    used.update(dict.fromkeys(label for entry in throughput.values() for labels in entry["provenance"].values() for label in labels))
    body = [
        "<h1>ompipe report</h1>",
        f'<p class="muted">{len(results)} results file(s) and {len(benches)} bench table(s) from '
        f"<code>{_e(workdir.resolve())}</code>, written {_e(dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} "
        f"by ompipe {_e(_first(results, 'ompipe'))}.</p>",
        _legend(list(used)),
        *(_model_section(model, [r for r in results if r["model"] == model], [row for row in table if row["model"] == model],
                         throughput.get(model), [b for b in benches if b["model"] == model]) for model in models),
        _versions_section(results, benches),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>ompipe report: {_e(', '.join(models))}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _legend(labels: list[str]) -> str:
    items = [f"<dt>{badge(label)}</dt><dd>{_e(PROVENANCE_NOTES.get(label, label))}</dd>" for label in labels]
    items.append(f"<dt>{badge(REAL)}</dt><dd>none of these: the tools named made the numbers on the machine named below</dd>")
    return '<h3>What made the numbers</h3>\n<dl class="legend">' + "".join(items) + "</dl>"


def badge(label: str) -> str:
    css = "real" if label == REAL else BADGE_CLASS.get(label, "other")
    return f'<span class="badge {css}" title="{_e(PROVENANCE_NOTES.get(label, label))}">{_e(label)}</span>'


def badges(labels: list[str]) -> str:
    return " ".join(badge(label) for label in labels) or badge(REAL)


def _model_section(model: str, results: list[dict], rows: list[dict], throughput: dict | None, benches: list[dict]) -> str:
    labels = list(dict.fromkeys([label for row in rows for label in row["provenance"]]
                                + [label for labels in (throughput or {}).get("provenance", {}).values() for label in labels]))
    guide = results[0].get("guide") if results else ""
    parts = [f'<section id="{_e(model)}">', f"<h2>{_e(model)} {badges(labels)}</h2>",
             f'<p class="muted">guide: {_e(guide or "unknown")}</p>' if guide else "",
             "<h3>Accuracy</h3>", _runs_table([row for row in rows if row["metric"] is not None]),
             _metrics_table([row for row in rows if row["metric"] is not None], model),
             _fp16_section(model, rows)]
    if throughput:
        parts += ["<h3>Throughput</h3>", _throughput_table(throughput, benches), _chart(model, throughput, benches)]
    parts.append("</section>")
    return "\n".join(part for part in parts if part)


def _runs_table(rows: list[dict]) -> str:
    """One line per run that produced metrics: how its numbers were made."""
    if not rows:
        return ""
    runs = {(row["tool"], row["bs"]): row for row in rows}
    header = ["run", "bs", "precision", "golden cosine", "samples", "made by"]
    lines = ["<table>", _header(header), "<tbody>"]
    for (tool, bs), row in runs.items():
        fake = ' class="fake"' if "fake toolchain" in row["provenance"] else ""
        lines.append(f"<tr{fake}><td>{_e(tool)}</td>{_num_cell(bs)}<td>{_e(row['precision'] or '')}</td>"
                     f"{_num_cell(row['golden_cosine'], digits=6)}{_num_cell(row['samples'])}<td>{badges(row['provenance'])}</td></tr>")
    lines += ["</tbody>", "</table>",
              '<p class="muted">Golden cosine: the worst output cosine of the model the run used (.om or ONNX) '
              "against PyTorch on the compare stage's inputs.</p>"]
    return "\n".join(lines)


def _metrics_table(rows: list[dict], model: str) -> str:
    """Each metric once per batch size: the guide's reference, then every run's value with its
    ratio to the reference and to our ONNX Runtime baseline (same pre- and postprocessing)."""
    if not rows:
        return f"<p>No accuracy run yet (throughput only): <code>ompipe run {_e(model)}</code> adds it.</p>"
    tools = sorted(dict.fromkeys(row["tool"] for row in rows), key=lambda tool: not report.is_baseline(tool))
    by_key = {}
    for row in rows:
        by_key.setdefault((row["bs"], row["metric"]), {})[row["tool"]] = row
    fake = {row["tool"] for row in rows if "fake toolchain" in row["provenance"]}
    names = [tool + (" (fake)" if tool in fake else "") + (" (baseline)" if report.is_baseline(tool) else "") for tool in tools]
    lines = ["<table>", _header(["bs", "metric", "guide reference"] + names),
             "<tbody>"]
    for (bs, metric), runs in sorted(by_key.items(), key=lambda item: (item[0][0], natural_key(item[0][1]))):
        first = next(iter(runs.values()))
        reference = (f'{_n(first["reference"])} <span class="muted">({_e(first["reference_source"])})</span>'
                     if first["reference"] is not None else "")
        cells = [_num_cell(bs), f"<td>{_e(metric)}</td>", f"<td>{reference}</td>"] + [_value_cell(runs.get(tool)) for tool in tools]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>",
              '<p class="muted">Under each value: its ratio to the guide\'s reference (a gap there is the pipeline\'s: '
              "preprocessing, postprocessing, data, weights) and to our ONNX Runtime run of the same ONNX model "
              "(a gap there is the conversion's).</p>"]
    return "\n".join(lines)


def _fp16_section(model: str, rows: list[dict]) -> str:
    """fp32 vs emulated fp16 (ONNX Runtime, `--precision fp16`): one row per metric with the
    guide's 310P figure and the delta, then the chart. A hint where only the fp32 run exists."""
    previews = report.fp16_previews(rows)
    if not previews:
        fp32 = any(report.is_baseline(row["tool"]) and row["precision"] == "fp32" and row["metric"] for row in rows)
        return (f'<p class="muted">fp16 preview: <code>ompipe run {_e(model)} --runtime onnxruntime --precision fp16</code> '
                "adds the metric with ATC's fp16 emulated beside this fp32 one.</p>" if fp32 else "")
    from . import plots

    lines = ["<h3>fp32 vs emulated fp16</h3>", "<table>",
             _header(["bs", "metric", "fp32", "fp16 emulated", "guide 310P", "delta fp16 - fp32"]), "<tbody>"]
    for p in previews:
        guide = (f'{_n(p["guide_310p"])} <span class="muted">({_e(p["guide_source"])})</span>'
                 if p["guide_310p"] is not None else "")
        lines.append(f'<tr>{_num_cell(p["bs"])}<td>{_e(p["metric"])}</td>{_num_cell(p["fp32"])}{_num_cell(p["fp16_emulated"])}'
                     f'<td class="num">{guide}</td><td class="num">{_e(report.delta_text(p["delta"]))}</td></tr>')
    made_by = dict.fromkeys(label for p in previews for labels in p["provenance"].values() for label in labels)
    figure = report.fp16_figure(model, previews)
    lines += ["</tbody>", "</table>",
              f'<p class="muted">Both columns are ONNX Runtime on this machine, same data and postprocessing; '
              f"fp16 emulated rounds every float tensor to fp16 as ATC's precision mode would on the NPU. "
              f"Made by: {badges(list(made_by))}</p>",
              f'<img class="chart" alt="{_e(model)}: fp32 vs emulated fp16 accuracy" src="{plots.png_data_uri(figure)}">']
    return "\n".join(lines)


def _value_cell(row: dict | None) -> str:
    if row is None or row["value"] is None:
        return '<td class="num"></td>'
    ratios = [f"×{ratio:.3f} {name}" for name, ratio in (("guide", _ratio(row["value"], row["reference"])),
                                                          ("ONNX Runtime", _ratio(row["value"], row["onnxruntime"])))
              if ratio is not None]
    extra = f'<br><span class="muted">{_e(", ".join(ratios))}</span>' if ratios else ""
    return f'<td class="num">{_n(row["value"])}{extra}</td>'


def _header(names: list[str]) -> str:
    return "<thead><tr>" + "".join(f"<th>{_e(name)}</th>" for name in names) + "</tr></thead>"


def _throughput_table(entry: dict, benches: list[dict]) -> str:
    sizes = sorted({bs for points in [*entry["measured"].values(), *entry["references"].values()] for bs in points})
    measured, references = list(entry["measured"]), list(entry["references"])
    header = ("<thead><tr><th>bs</th>" + "".join(f"<th>{_e(name)} fps {badges(entry['provenance'][name])}</th>" for name in measured)
              + "".join(f"<th>{_e(chip)} fps (guide)</th>" for chip in references) + "</tr></thead>")
    body = []
    for bs in sizes:
        cells = [_num_cell(bs)] + [_num_cell(entry["measured"][name].get(bs)) for name in measured]
        cells += [_num_cell(entry["references"][chip].get(bs)) for chip in references]
        body.append("<tr>" + "".join(cells) + "</tr>")
    benched = {row["tool"] for b in benches for row in b["rows"]}
    machines = [f"{_e(b['rows'][0]['tool'] if b['rows'] else '')}: <code>ompipe bench</code> on {_e(b['machine'])}" for b in benches]
    machines += [f"{_e(name)}: the perf stage of <code>ompipe run</code>" for name in measured if name not in benched]
    note = "; ".join(machines + [f"guide figures: {_e(source)}" for source in entry["reference_sources"]])
    return "<table>\n" + header + "\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>" + (f'\n<p class="muted">{note}</p>' if note else "")


def _chart(model: str, entry: dict, benches: list[dict]) -> str:
    from . import plots

    subtitle = "; ".join(f"{b['rows'][0]['tool']} on {b['machine']}" for b in benches if b["rows"]) or "measured by ompipe run"
    figure = report.throughput_figure(model, entry, subtitle)
    return f'<img class="chart" alt="{_e(model)}: throughput vs batch size" src="{plots.png_data_uri(figure)}">'


def _versions_section(results: list[dict], benches: list[dict]) -> str:
    """Every version the results recorded; a name with several values lists which result had which."""
    values: dict[str, dict[str, list[str]]] = {}
    for record, name in [(r, f"{r['model']} {report.tool_label(r)} bs{r['bs']}") for r in results] + [
            (b, f"{b['model']} bench") for b in benches]:
        for key, version in (record.get("versions") or {}).items():
            values.setdefault(key, {}).setdefault(str(version), []).append(name)
    rows = []
    for key in sorted(values):
        found = values[key]
        shown = (_e(next(iter(found))) if len(found) == 1
                 else "<br>".join(f"{_e(v)} <span class=\"muted\">({_e(', '.join(names))})</span>" for v, names in found.items()))
        rows.append(f"<tr><th>{_e(key)}</th><td>{shown}</td></tr>")
    machines = sorted({f"{b['model']} {b['rows'][0]['tool']}: {b['machine']}" for b in benches if b["rows"]})
    listed = "".join(f"<li>{_e(m)}</li>" for m in machines)
    return ("<h2>Machine and tool versions</h2>\n"
            + (f"<p>Throughput measured on:</p><ul>{listed}</ul>\n" if listed else "")
            + "<table>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")


def _first(results: list[dict], key: str) -> str:
    return next((r["versions"][key] for r in results if key in (r.get("versions") or {})), "unknown")


def _num_cell(value, digits: int = 4) -> str:
    return f'<td class="num">{_n(value, digits)}</td>'


def _n(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return _e(f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}")


def _ratio(value, reference):
    return None if value is None or not reference else value / reference


def _e(value) -> str:
    return html.escape(str(value), quote=True)
