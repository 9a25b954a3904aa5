"""Time to metric against the NPU's own limit, with the fake toolchain's paced NPU
(om_pipeline/testing/fake_paced_npu.py) standing in for a 310P at the guide's fps.

For each model, at the guide's best batch size on Ascend310P3 and N synthetic samples:
  (a) the guide's way: three processes in a row, as the guide's scripts run: serial preprocessing
      to .bin files (`ompipe stage M preprocess --workers 0`), ais_bench over the folder
      (`ompipe stage M infer`), then serial postprocessing and the metric (`ompipe stage M eval`);
  (b) ompipe's files mode in one process (`ompipe run M --to eval`, workers as ompipe chooses);
  (c) ompipe --stream (`ompipe run M --to eval --stream`), median of --repeats;
and the floor, N x passes / fps (TransPose's flip test runs the model twice per sample). For each
run: time to metric, start-up (process start to the NPU's first batch), the NPU's busy fraction
from its first to its last batch, the tail (the NPU's last batch to the process's end, which is
when the metric is written). In process: per-sample host cost of preprocessing (decode included)
and of postprocessing with the metric's update (evaluator.add), on recorded outputs; from them the
host's serial rate and the cores it would need to keep the NPU busy.

The NPU's outputs are those ONNX Runtime gave (random weights) on a recorded subset (--record R,
in the fake .om's own ONNX Runtime run), replayed in turn for N samples (cyclic), or exactly when
R >= N: with cyclic replay the metric means nothing, which every result says ("paced emulator").

    python benchmarks/bench_time_to_metric.py centernet gfocalv2 pointrend transpose superpoint \
        --n superpoint=696 --scaling 1,2 --readme README.md
    (sources: OMPIPE_UPSTREAM_SUPERPOINT / _CENTERNET / _TRANSPOSE name clones or mirrors)

Writes OUT/time_to_metric.{md,json,png,svg}; with --readme, the README's table and chart too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHIP = "Ascend310P3"
# Full validation sets, for the extrapolation: COCO val2017 images (CenterNet, GFocalV2), its
# ground-truth person boxes (TransPose, the guide's flip-test setting), HPatches' 116 sequences
# of 6 images (SuperPoint), Cityscapes val (PointRend).
FULL_SET = {"centernet": 5000, "gfocalv2": 5000, "transpose": 6352, "superpoint": 696, "pointrend": 500}


def model_setup(model: str, root: Path, n: int) -> list[str]:
    """The data (written under root) and the arguments that pick the source for `model`."""
    if model == "superpoint":
        from om_pipeline.data.synth_hpatches import synthesize

        return ["--data", str(synthesize(root / "hpatches", sequences=math.ceil(n / 6), seed=0)), *_source("SUPERPOINT")]
    if model == "centernet":
        from om_pipeline.data.centernet_tinycoco import write_tiny_coco

        return ["--data", str(write_tiny_coco(root / "coco", images=n, seed=0, sizes=((480, 640),))), *_source("CENTERNET")]
    if model == "gfocalv2":
        from om_pipeline.data.gfocalv2_tinycoco import write_tiny_coco

        # ais_bench, as the other four (the recipe's guide tool is msame, which has no in-memory API for --stream)
        return ["--data", str(write_tiny_coco(root / "coco", images=n, seed=0, sizes=((480, 640),))), "--export-path", "native",
                "--runtime", "ais_bench"]
    if model == "transpose":
        from om_pipeline.data.transpose_synth import synthesize

        return ["--data", str(synthesize(root / "coco", images=n, seed=0)), *_source("TRANSPOSE")]
    if model == "pointrend":
        from om_pipeline.data.pointrend_synth import synthesize

        return ["--data", str(synthesize(root / "cityscapes", images=n, seed=0)), "--export-path", "native"]
    raise SystemExit(f"unknown model {model}")


def _source(name: str) -> list[str]:
    path = os.environ.get(f"OMPIPE_UPSTREAM_{name}")
    if not path:
        raise SystemExit(f"set OMPIPE_UPSTREAM_{name} to a clone or mirror")
    return ["--source", path]


def guide_fps(model: str) -> tuple[int, float, dict]:
    """(best bs, its fps, the chip's table) from the recipe's reference table."""
    from om_pipeline.recipe import find_recipe

    table = find_recipe(model).recipe.reference.fps[CHIP]
    best = max(table, key=lambda bs: table[bs])
    return best, table[best], table


def cpu_probe_ms() -> float:
    """A fixed pure-Python workload's time (median of 3): this VM's CPU speed has varied 2x from
    one hour to the next with nothing else running, so each model's row says what it was."""
    def once() -> float:
        started = time.perf_counter()
        sum(i * i for i in range(2_000_000))
        return (time.perf_counter() - started) * 1e3
    return statistics.median(once() for _ in range(3))


def passes(model: str) -> int:
    """Model executions per sample: the plugin's views (TransPose's flip test: 2)."""
    import importlib

    from om_pipeline.plugin import plugin_views

    return len(plugin_views(importlib.import_module(f"om_pipeline.models.{model}")))


class Bench:
    def __init__(self, model: str, root: Path, n: int, record: int, workers: int | None):
        self.model, self.n, self.root = model, n, root
        self.bs, self.fps, table = guide_fps(model)
        self.recording = root / "recording"
        self.workdir = root / "work"
        self.common = ["--weights", "random", "--toolchain", "fake", "--soc-version", CHIP, "--bs", str(self.bs),
                       "--workdir", str(self.workdir), *model_setup(model, root / "data", n)]
        self.workers = [] if workers is None else ["--workers", str(workers)]
        self.mode = "paced" if record >= n else "cyclic"
        self.env = {**os.environ, "OMPIPE_FAKE_NPU_DIR": str(self.recording), "OMPIPE_FAKE_NPU": "record",
                    # ompipe passes the guide's table; the fake picks the compiled bs's rate
                    "OMPIPE_FAKE_NPU_GUIDE_FPS": json.dumps({str(bs): fps for bs, fps in table.items()})}
        started = time.perf_counter()
        if not any(path.name != "busy" for path in self.recording.glob("*")):  # kept from an earlier --keep run
            self.ompipe("run", "--limit", str(min(record, n)), "--stream", "--workers", "0", "--to", "eval")  # builds and records
        self.env["OMPIPE_FAKE_NPU"] = self.mode
        from om_pipeline.recipe import find_recipe

        before_infer = "compare" if find_recipe(model).recipe.stages.compare is not None else "atc"
        self.ompipe("run", "--limit", str(n), "--to", before_infer)  # the shared stages, under the replaying NPU
        self.setup_seconds = time.perf_counter() - started

    def ompipe(self, command: str, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "om_pipeline.cli", command, self.model, *args, "-q", *self.common],
                       check=True, env=self.env, stdout=subprocess.DEVNULL)

    def measured(self, label: str, *commands: list[str]) -> dict:
        """Time to metric of `commands` run one after the other from a clean slate (preprocess,
        infer and eval records removed), with the NPU's busy intervals."""
        from om_pipeline.testing import fake_paced_npu

        stages = self.workdir / self.model / ".ompipe/stages"
        self.clear_sample_outputs()
        shutil.rmtree(self.recording / "busy", ignore_errors=True)
        load = os.getloadavg()[0]
        started = time.time()
        for command in commands:
            self.ompipe(*command)
        ended = time.time()
        print(f"  {self.model}: {label} {ended - started:.1f} s", flush=True)
        npu = fake_paced_npu.utilisation(fake_paced_npu.busy_intervals(self.recording))
        records = {path.stem: json.loads(path.read_text()) for path in stages.glob("*.json")}
        return {"seconds": ended - started, "startup_s": npu["first_start"] - started, "tail_s": ended - npu["last_end"],
                "npu_busy_fraction": npu["busy_fraction"], "npu_span_s": npu["span_s"], "batches": npu["batches"],
                "load": load, "stage_seconds": {key: record["seconds"] for key, record in records.items()
                                                if key.startswith(("preprocess", "infer-", "eval-"))}}

    def clear_sample_outputs(self) -> None:
        """The preprocess, infer and eval stages' records and files: the next run starts from a
        clean slate, and the .bin files of one run (GFocalV2's 2070 inputs: 24 GB) are not kept
        beside the next run's staging copy."""
        model_dir = self.workdir / self.model
        for pattern in ("preprocess.json", "infer-*.json", "eval-*.json"):
            for path in (model_dir / ".ompipe/stages").glob(pattern):
                path.unlink()
        for directory in ("inputs", "infer"):
            shutil.rmtree(model_dir / directory, ignore_errors=True)

    def run_all(self, repeats: int, scaling: list[int]) -> dict:
        run = ["run", "--limit", str(self.n), "--to", "eval"]
        guide = self.measured("guide's way", ["stage", "preprocess", "--limit", str(self.n), "--workers", "0"],
                              ["stage", "infer", "--limit", str(self.n)], ["stage", "eval", "--limit", str(self.n)])
        files = self.measured("files", [*run, *self.workers])
        streams = [self.measured(f"stream {k + 1}/{repeats}", [*run, *self.workers, "--stream"]) for k in range(repeats)]
        stream = sorted(streams, key=lambda r: r["seconds"])[len(streams) // 2]  # the median run, whole
        by_workers = {str(count): self.measured(f"stream --workers {count}", [*run, "--stream", "--workers", str(count)])
                      for count in scaling}
        self.clear_sample_outputs()
        return {"guide": guide, "files": files, "stream": stream, "stream_runs": [r["seconds"] for r in streams],
                "stream_by_workers": by_workers}

    def host_costs(self, samples_measured: int = 32) -> dict:
        """Seconds per sample of preprocessing (decode included) and of postprocessing with the
        metric's update (means over `samples_measured`: evaluators that decode in batches, as
        CenterNet's every 16, pay it on some adds only), in this process on recorded outputs;
        and of the final metric over those samples."""
        from om_pipeline.commands import make_run
        from om_pipeline.context import Options
        from om_pipeline.plugin import reduced
        from om_pipeline.stages.dataset import load_samples
        from om_pipeline.stages.preprocess import model_inputs
        from om_pipeline.testing import fake_paced_npu
        from om_pipeline.testing.fake_om import read_fake_om
        from om_pipeline.ui import Printer

        options = Options(bs=self.bs, toolchain="fake", soc_version=CHIP, workdir=self.workdir, quiet=True, limit=self.n)
        run = make_run(self.model, options, [], Printer(quiet=True))
        data, samples = load_samples(run.model_dir)
        evaluator = run.plugin.evaluator(data, run.settings("eval"))
        _, onnx_bytes = read_fake_om(run.path(run.om_name))
        recorded = fake_paced_npu.Recording(fake_paced_npu.model_recording(self.recording, onnx_bytes), cyclic=True)
        model_inputs(run, samples[0])  # imports and caches warm
        pre, post = [], []
        for sample in samples[:samples_measured]:
            started = time.perf_counter()
            inputs = model_inputs(run, sample)
            pre.append(time.perf_counter() - started)
            outputs = {view: recorded.outputs_of_sample(arrays) for view, arrays in inputs.items()}
            started = time.perf_counter()
            evaluator.add(sample, reduced(run.plugin, outputs[None] if run.views == (None,) else outputs))
            post.append(time.perf_counter() - started)
        started = time.perf_counter()
        evaluator.result()
        final = time.perf_counter() - started
        return {"preprocess_s": statistics.mean(pre), "postprocess_and_update_s": statistics.mean(post),
                "final_metric_s_for_measured": final, "samples_measured": len(pre), "passes": len(run.views)}


def summarise(model: str, bench: Bench, runs: dict, costs: dict) -> dict:
    passes = costs["passes"]
    floor = bench.n * passes / bench.fps
    npu_rate = bench.fps / passes  # samples per second the NPU can take
    per_sample = costs["preprocess_s"] + costs["postprocess_and_update_s"]
    guide_stages = runs["guide"]["stage_seconds"]
    guide_host = sum(seconds for key, seconds in guide_stages.items() if not key.startswith("infer-"))
    stream = runs["stream"]
    stream_busy = stream["seconds"] - stream["startup_s"] - stream["tail_s"]
    full = FULL_SET[model]

    def extrapolated(run: dict) -> float:  # start-up fixed, the rest linear in N
        return run["startup_s"] + (run["seconds"] - run["startup_s"]) * full / bench.n

    return {
        "model": model, "n": bench.n, "bs": bench.bs, "guide_fps": bench.fps, "passes": passes, "replay": bench.mode,
        "floor_s": floor, "runs": runs, "host": costs,
        "host_serial_rate": 1 / per_sample, "cores_to_match_npu": npu_rate * per_sample,
        "guide_host_rate": bench.n / guide_host if guide_host else None,
        "stream_host_rate": bench.n / stream_busy if stream_busy > 0 else None,
        "ratio_guide_over_stream": runs["guide"]["seconds"] / stream["seconds"],
        "stream_over_floor": stream["seconds"] / floor,
        "full_set": full, "full_floor_s": full * passes / bench.fps,
        "full_extrapolated_s": {way: extrapolated(runs[way]) for way in ("guide", "files", "stream")},
        "setup_s": bench.setup_seconds,
        "stream_host_rate_by_workers": {count: bench.n / (r["seconds"] - r["startup_s"] - r["tail_s"])
                                        for count, r in runs["stream_by_workers"].items()},
    }


def markdown(rows: list[dict], machine: str) -> str:
    lines = [f"Measured on: {machine}. NPU: the fake toolchain's paced emulator at the guide's {CHIP} fps "
             "(outputs replayed from an ONNX Runtime run; cyclic replay: the metric is meaningless).", "",
             "| model | N | bs | fps (guide) | floor | guide's way | files | stream (median) | guide / stream | stream / floor | "
             "NPU busy (stream) | start-up | tail | load | target |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, f, s = (r["runs"][way] for way in ("guide", "files", "stream"))
        lines.append(f"| {r['model']} | {r['n']} | {r['bs']} | {r['guide_fps']:g}{' x2 passes' if r['passes'] > 1 else ''} | "
                     f"{r['floor_s']:.1f} s | {g['seconds']:.1f} s | {f['seconds']:.1f} s | {s['seconds']:.1f} s | "
                     f"{r['ratio_guide_over_stream']:.2f}x | {r['stream_over_floor']:.2f} | {s['npu_busy_fraction']:.1%} | "
                     f"{s['startup_s']:.1f} s | {s['tail_s']:.2f} s | {s['load']:.1f} | {verdict(r)} |")
    lines += ["", "| model | preprocess / sample | postprocess + metric update / sample | host serial rate | NPU rate | "
              "cores to match the NPU | guide's host rate | stream host rate | full set: floor / guide / stream | CPU probe |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        full = r["full_extrapolated_s"]
        lines.append(f"| {r['model']} | {r['host']['preprocess_s'] * 1000:.1f} ms | {r['host']['postprocess_and_update_s'] * 1000:.1f} ms | "
                     f"{r['host_serial_rate']:.1f}/s | {r['guide_fps'] / r['passes']:.1f}/s | {r['cores_to_match_npu']:.2f} | "
                     f"{_rate(r['guide_host_rate'])} | {_rate(r['stream_host_rate'])} | "
                     f"{r['full_set']}: {_minutes(r['full_floor_s'])} / {_minutes(full['guide'])} / {_minutes(full['stream'])} | "
                     f"{' / '.join(f'{ms:.0f} ms' for ms in r.get('cpu_probe_ms', [])) or 'n/a'} |")
    lines += ["", "CPU probe: `cpu_probe_ms`, a fixed pure-Python loop, before / after the model's runs (host costs "
              "scale with it; this VM's speed has varied 2x between hours)."]
    scaling = [r for r in rows if r["stream_host_rate_by_workers"]]
    if scaling:
        lines += ["", "| model | stream host rate by --workers | per core |", "|---|---|---|"]
        for r in scaling:
            rates = r["stream_host_rate_by_workers"]
            lines.append(f"| {r['model']} | " + ", ".join(f"{count}: {rate:.1f}/s" for count, rate in rates.items()) + " | "
                         + ", ".join(f"{rate / int(count):.1f}/s" for count, rate in rates.items() if int(count)) + " |")
    return "\n".join(lines)


DEFAULT_RECORD = {"pointrend": 2}


def recorded_samples(entries: list[str], model: str) -> int:
    """--record R applies to every model, --record MODEL=R to one (the last given wins)."""
    chosen = DEFAULT_RECORD.get(model, 32)
    for entry in entries:
        name, _, count = entry.rpartition("=")
        if name in ("", model):
            chosen = int(count)
    return chosen


NPU_BOUND = ("centernet", "gfocalv2", "pointrend")  # issue 16's models whose NPU 2 cores should keep busy


def verdict(r: dict) -> str:
    """Issue 16's target for the row, met or not, and if not, the host stage that holds it back
    (the dearer of preprocessing and postprocessing + metric update, per sample) and the cores
    the floor needs (the host's serial cost per sample x the NPU's sample rate)."""
    stream = r["runs"]["stream"]
    at_floor = stream["npu_busy_fraction"] >= 0.9 and r["stream_over_floor"] <= 1.15
    if r["model"] in NPU_BOUND or at_floor:
        met = at_floor
        target = "busy >= 90 %, <= 1.15x floor"
    else:
        met = (r["stream_host_rate"] or 0) >= 2 * (r["guide_host_rate"] or float("inf"))
        target = "host rate >= 2x the guide's"
    if met:
        return f"met ({target})"
    if stream["npu_busy_fraction"] >= 0.9:  # the host kept up: the excess is before and after the NPU's run
        return (f"not met ({target}): the NPU kept busy; above the floor are start-up {stream['startup_s']:.1f} s "
                f"and the tail (the metric after the last batch) {stream['tail_s']:.1f} s")
    host = r["host"]
    stage, cost = max((("preprocessing", host["preprocess_s"]), ("postprocessing + metric", host["postprocess_and_update_s"])),
                      key=lambda item: item[1])
    return (f"not met ({target}): host-bound, {stage} {cost * 1000:.1f} ms a sample; "
            f"the floor needs {r['cores_to_match_npu']:.2f} cores of host work")


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}/s"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"any of {sorted(FULL_SET)}")
    parser.add_argument("--combine", nargs="+", type=Path, default=[], help="only write one table and chart from these JSONs")
    parser.add_argument("--n", action="append", default=[], metavar="MODEL=N",
                        help="samples for MODEL (default: N for a --floor seconds floor)")
    parser.add_argument("--floor", type=float, default=60.0, help="choose N so the floor is this many seconds")
    parser.add_argument("--record", action="append", default=[], metavar="[MODEL=]R",
                        help="samples recorded for the replay (>= N: exact); default 32, PointRend 2 (a minute of "
                             "ONNX Runtime each at 1024 x 2048)")
    parser.add_argument("--repeats", type=int, default=3, help="stream runs (median)")
    parser.add_argument("--workers", type=int, default=None, help="--workers for ompipe's files and stream runs")
    parser.add_argument("--scaling", default="", help="also one stream run per --workers count, e.g. 1,2")
    parser.add_argument("--scaling-for", default="transpose,superpoint",
                        help="the models --scaling applies to (default: those whose NPU rate may exceed what 2 cores feed)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also write the tables into this README between its time-to-metric markers, "
                             "and the chart to docs/images/ beside it")
    parser.add_argument("--out", type=Path, default=Path("bench-time-to-metric"))
    parser.add_argument("--keep", type=Path, default=None, help="work under this directory and keep it (a rerun reuses it)")
    parser.add_argument("--setup-only", action="store_true", help="build, record and stop (with --keep: measure later)")
    options = parser.parse_args()
    from om_pipeline import bench as ompipe_bench

    if options.combine:
        parts = [json.loads(path.read_text()) for path in options.combine]
        rows, machine = [row for part in parts for row in part["rows"]], "; ".join(dict.fromkeys(part["machine"] for part in parts))
        write(options.out, rows, machine)
        if options.readme:
            write_readme(options.readme, rows, machine, " ".join(["python", *sys.argv]))
        return
    unknown = [model for model in options.models if model not in FULL_SET]
    if unknown or not options.models:
        parser.error(f"models: give some of {', '.join(sorted(FULL_SET))}")
    rows = []
    root = options.keep or Path(tempfile_dir())
    for model in options.models:
        bs, fps, _ = guide_fps(model)
        chosen = dict(entry.split("=", 1) for entry in options.n)
        n = int(chosen[model]) if model in chosen else math.ceil(options.floor * fps / passes(model))
        started, probe = time.perf_counter(), cpu_probe_ms()
        bench = Bench(model, root / model, n, recorded_samples(options.record, model), options.workers)
        print(f"{model}: N {n}, bs {bs}, set up in {bench.setup_seconds:.0f} s", flush=True)
        if options.setup_only:
            continue
        scaling = [int(count) for count in options.scaling.split(",") if count] if model in options.scaling_for.split(",") else []
        runs = bench.run_all(options.repeats, scaling)
        row = summarise(model, bench, runs, bench.host_costs())
        row["cpu_probe_ms"] = [probe, cpu_probe_ms()]  # before and after this model's runs
        rows.append(row)
        write(options.out, rows, f"{ompipe_bench.host_cpu()}, load average {os.getloadavg()[0]:.1f}", quiet=True)  # kept if a later model fails
        print(f"{model}: guide {runs['guide']['seconds']:.1f} s, files {runs['files']['seconds']:.1f} s, stream "
              f"{runs['stream']['seconds']:.1f} s, floor {row['floor_s']:.1f} s ({time.perf_counter() - started:.0f} s)", flush=True)
    if options.setup_only:
        return
    machine = f"{ompipe_bench.host_cpu()}, load average {os.getloadavg()[0]:.1f} at the end"
    write(options.out, rows, machine)
    if options.readme:
        write_readme(options.readme, rows, machine, " ".join(["python", *sys.argv]))
    if not options.keep:
        shutil.rmtree(root, ignore_errors=True)


def write(out: Path, rows: list[dict], machine: str, quiet: bool = False) -> None:
    from om_pipeline import plots

    out.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine, "chip": CHIP, "rows": rows, "provenance": ["fake toolchain", "random weights", "paced emulator"]}
    (out / "time_to_metric.json").write_text(json.dumps(data, indent=1))
    text = markdown(rows, machine)
    (out / "time_to_metric.md").write_text(text + "\n")
    plots.save(plots.time_to_metric(rows, machine), out / "time_to_metric")
    if not quiet:
        print(text)


README_START = "<!-- time-to-metric: written by benchmarks/bench_time_to_metric.py --readme -->"
README_END = "<!-- end of time-to-metric -->"


def write_readme(readme: Path, rows: list[dict], machine: str, command: str) -> None:
    """The tables, the command that made them and the chart, between the README's markers."""
    from om_pipeline import plots

    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme}: no time-to-metric markers ({README_START} ... {README_END})")
    images = readme.parent / "docs/images"
    images.mkdir(parents=True, exist_ok=True)
    plots.save(plots.time_to_metric(rows, machine), images / "time_to_metric")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = "\n".join([README_START, "", f"Written {when} by:", "", f"    {command}", "", markdown(rows, machine), "",
                        "![time to metric](docs/images/time_to_metric.png)", "", README_END])
    before, rest = text.split(README_START, 1)
    readme.write_text(before + block + rest.split(README_END, 1)[1])


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="ompipe-ttm-")


if __name__ == "__main__":
    main()
