"""Several NPUs on one host (`ompipe run M --devices 0,1,...`) against one, with the fake
toolchain's paced NPU (om_pipeline/testing/fake_paced_npu.py) standing in for each 310P device at
the guide's fps: every device process sleeps its own bs/fps per batch, as separate chips would.

For one model at the guide's best batch size and N synthetic samples, from a clean slate each
time (the sample stages' records removed, the shards' directories too), median of --repeats:
  - one device: `ompipe run M --to eval` (no sharding)
  - `--devices 0,1,...,K-1` for each K in --devices (default 1 and 4: `--devices 0` is the
    sharded machinery on one device, its own cost)
and the floor N x passes / (K x fps). Prints the wall time of each and its ratio to one device
(issue 17's target for PointRend: 4 devices <= 0.3x one). The outputs are replayed from a
recorded subset (cyclic unless --record >= N), so the metric means nothing; random weights.

    python benchmarks/bench_devices.py pointrend --n 480 --record 2 --devices 4 --stream --out bench-devices

Writes OUT/devices_<model>[_stream].{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_time_to_metric import Bench, passes, tempfile_dir  # noqa: E402  (a sibling script)


def clean_slate(bench: Bench) -> None:
    """Remove what the sample stages made, unsharded and sharded, and the NPU's busy record."""
    model_dir = bench.workdir / bench.model
    for pattern in ("preprocess.json", "infer-*.json", "eval-*.json"):
        for path in (model_dir / ".ompipe" / "stages").glob(pattern):
            path.unlink()
    shutil.rmtree(model_dir / "shards", ignore_errors=True)
    shutil.rmtree(bench.recording / "busy", ignore_errors=True)


def timed(bench: Bench, *args: str) -> float:
    clean_slate(bench)
    started = time.perf_counter()
    bench.ompipe("run", "--limit", str(bench.n), "--to", "eval", *args)
    return time.perf_counter() - started


def measure(bench: Bench, device_counts: list[int], repeats: int, mode: list[str]) -> list[dict]:
    configurations = [("one device, unsharded", [])] + [(f"--devices {','.join(map(str, range(k)))}",
                                                          ["--devices", ",".join(map(str, range(k)))]) for k in device_counts]
    rows = []
    for label, args in configurations:
        seconds = [timed(bench, *args, *mode) for _ in range(repeats)]
        count = len(args[1].split(",")) if args else 1
        rows.append({"configuration": label, "devices": count, "seconds": statistics.median(seconds), "runs": seconds,
                     "floor_s": bench.n * passes(bench.model) / (count * bench.fps), "load": os.getloadavg()[0]})
    one = rows[0]["seconds"]
    for row in rows:
        row["ratio_to_one"] = row["seconds"] / one
    return rows


def markdown(model: str, bench: Bench, rows: list[dict], mode: list[str]) -> str:
    lines = [f"{model} ({' '.join(mode) or 'files mode'}): N={bench.n}, bs {bench.bs}, paced NPU at the guide's {bench.fps:g} fps per device "
             f"({bench.mode} replay, random weights); median of {len(rows[0]['runs'])}; {os.cpu_count()} host CPUs", "",
             "| configuration | floor | wall (median) | runs | vs one device |", "|---|---|---|---|---|"]
    for row in rows:
        runs = ", ".join(f"{s:.1f}" for s in row["runs"])
        lines.append(f"| {row['configuration']} | {row['floor_s']:.1f} s | {row['seconds']:.1f} s | {runs} | {row['ratio_to_one']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="pointrend, centernet, gfocalv2, transpose or superpoint (sources: OMPIPE_UPSTREAM_<MODEL>)")
    parser.add_argument("--n", type=int, required=True, help="samples")
    parser.add_argument("--record", type=int, default=2, help="samples recorded for the replay (>= N: exact)")
    parser.add_argument("--devices", default="1,4", help="device counts to run besides the unsharded one, e.g. 1,2,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream", action="store_true", help="every configuration with --stream (host work behind the NPU)")
    parser.add_argument("--out", type=Path, default=Path("bench-devices"))
    parser.add_argument("--keep", type=Path, default=None, help="work under this directory and keep it")
    options = parser.parse_args()
    root = options.keep or Path(tempfile_dir())
    try:
        bench = Bench(options.model, root, options.n, options.record, workers=None)
        mode = ["--stream"] if options.stream else []
        rows = measure(bench, [int(k) for k in options.devices.split(",") if k], options.repeats, mode)
        text = markdown(options.model, bench, rows, mode)
        options.out.mkdir(parents=True, exist_ok=True)
        name = f"devices_{options.model}{'_stream' if options.stream else ''}"
        (options.out / f"{name}.md").write_text(text + "\n")
        (options.out / f"{name}.json").write_text(json.dumps(
            {"model": options.model, "n": bench.n, "bs": bench.bs, "fps": bench.fps, "replay": bench.mode, "mode": mode or ["files"],
             "setup_s": bench.setup_seconds, "rows": rows}, indent=1))
        print(text)
    finally:
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
