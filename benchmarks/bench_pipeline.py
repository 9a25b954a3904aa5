"""Pipeline benchmarks, measured side by side in one run (ratios, not absolute targets):

1. runner overhead: ompipe's infer stage (files mode, ONNX Runtime) vs a bare ONNX Runtime
   loop over the same model and the same input files;
2. stream vs files mode, end to end (preprocess + infer + eval) on the same model, data and
   backend: wall time, input .bin bytes written, peak resident memory, peak disk of the work dir;
3. parallel vs serial preprocessing: ompipe's own code with --workers 2 vs 0, in the files mode
   (the preprocess stage, which writes the .bin files) and the stream (the ring of batch
   buffers the workers fill), for a cheap (SuperPoint) and a heavier (CenterNet: JPEG decode +
   affine) preprocessing.

    python benchmarks/bench_pipeline.py --source /path/to/pytorch-superpoint [--sequences 8] [--bs 4]

SuperPoint with random weights on a synthetic HPatches set: no NPU, no download. Each ompipe
run is its own process, so peak RSS is that run's alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


MEASURED_RUN = """
import contextlib, io, resource, sys
from om_pipeline.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
assert code == 0, code
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(max(own, workers))
"""


def ompipe(args: list[str], workdir: Path, command: str = "run superpoint") -> dict:
    """Run `ompipe <command> ...` in a child; wall time, peak RSS and peak disk of workdir."""
    peak_disk = [0]
    done = threading.Event()

    def watch_disk() -> None:
        while not done.is_set():
            peak_disk[0] = max(peak_disk[0], directory_bytes(workdir))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch_disk, daemon=True)
    watcher.start()
    started = time.perf_counter()
    # A fresh interpreter per run, reporting its own peak (and its worker processes'), so one
    # mode's memory is never read as the other's.
    completed = subprocess.run([sys.executable, "-c", MEASURED_RUN, *command.split(), "-q", *args], check=True,
                               capture_output=True, text=True)
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    peak_kib = int(completed.stdout.strip().splitlines()[-1])
    return {"seconds": seconds, "peak_rss_mib": peak_kib / 1024, "peak_disk_mib": peak_disk[0] / 2**20}


def directory_bytes(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(directory, name)).st_size
            except OSError:
                pass  # renamed or deleted while we looked
    return total


def bare_onnxruntime(work: Path, bs: int) -> float:
    """Samples per second of a plain ONNX Runtime loop over ompipe's own input files, session
    creation included (the infer stage's time includes it too)."""
    import onnxruntime

    started = time.perf_counter()
    session = onnxruntime.InferenceSession(str(work / f"onnx/superpoint_bs{bs}.onnxruntime.sim.onnx"), providers=["CPUExecutionProvider"])
    files = sorted((work / "inputs/image").glob("*.bin"))
    for start in range(0, len(files), bs):
        chunk = files[start:start + bs]
        chunk += [chunk[0]] * (bs - len(chunk))
        batch = np.stack([np.fromfile(f, np.float32).reshape(1, 240, 320) for f in chunk])
        for index, output in enumerate(session.run(None, {"image": batch})):
            for position in range(min(bs, len(files) - start)):
                output[position].tofile(work / f"bare_{position}_{index}.bin")  # the same writes ompipe does
    return len(files) / (time.perf_counter() - started)


def preprocessing_rates(model: str, args: list[str], root: Path, repeats: int, recipes: Path | None = None,
                        workers: tuple[int, ...] = (0, 2)) -> dict[tuple[str, int], float]:
    """Samples per second of ompipe's own preprocessing with each --workers: the files mode's
    preprocess stage (its recorded time: preprocessing and writing the .bin files) and the
    stream's batch filling (stream.preprocessed_batches with no model behind it). Medians of
    alternating runs, keyed (mode, workers)."""
    from om_pipeline.commands import make_run
    from om_pipeline.context import Options
    from om_pipeline.stages.dataset import load_samples
    from om_pipeline.stream import preprocessed_batches
    from om_pipeline.ui import Printer

    recipe_args = ["--recipes", str(recipes)] if recipes else []
    workdir = root / f"{model}-preprocessing"
    cli = [sys.executable, "-m", "om_pipeline.cli", "stage", model]
    subprocess.run([*cli, "dataset", "-q", *recipe_args, *args, "--workdir", str(workdir)], check=True, stdout=subprocess.DEVNULL)
    measured: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for count in workers:
            subprocess.run([*cli, "preprocess", "-q", "--force", "--workers", str(count), *recipe_args, *args,
                            "--workdir", str(workdir)], check=True, stdout=subprocess.DEVNULL)
            record = json.loads((workdir / model / ".ompipe/stages/preprocess.json").read_text())
            measured.setdefault(("files", count), []).append(record["info"]["samples"] / record["seconds"])
            run = make_run(model, Options(workdir=workdir, quiet=True), [recipes] if recipes else [], Printer(quiet=True))
            _, samples = load_samples(run.model_dir)
            started = time.perf_counter()
            with preprocessed_batches(run, samples, count) as batches:
                for _ in batches:
                    pass
            measured.setdefault(("stream", count), []).append(len(samples) / (time.perf_counter() - started))
    return {key: statistics.median(values) for key, values in measured.items()}


def speedups(rates: dict[tuple[str, int], float], workers: int = 2) -> str:
    return "; ".join(f"{mode} {rates[(mode, workers)]:.1f} vs {rates[(mode, 0)]:.1f} img/s -> {rates[(mode, workers)] / rates[(mode, 0)]:.2f}x"
                     for mode in ("files", "stream"))


def coco_data(root: Path) -> Path:
    """48 VGA JPEGs in COCO layout: CenterNet's preprocessing (JPEG decode, affine to 512x512, normalise)."""
    from om_pipeline.data.centernet_tinycoco import write_tiny_coco

    write_tiny_coco(root / "coco", images=48, sizes=((480, 640),))
    return root / "coco"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="pytorch-superpoint clone or mirror")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--bs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="medians over this many alternating runs")
    options = parser.parse_args()
    from om_pipeline.data.synth_hpatches import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = synthesize(root / "hpatches", sequences=options.sequences, seed=0)
        common = ["--source", options.source, "--weights", "random", "--data", str(data), "--runtime", "onnxruntime",
                  "--bs", str(options.bs)]
        # Build the shared stages once (clone, patch, export, simplify), so both modes time the same work.
        subprocess.run([sys.executable, "-m", "om_pipeline.cli", "stage", "superpoint", "simplify", "-q", *common,
                        "--workdir", str(root / "warm")], check=True, stdout=subprocess.DEVNULL)
        runs = {"files": [], "stream": []}
        rates = {"ompipe": [], "bare": []}
        for repeat in range(options.repeats):  # alternate the modes, so a busy moment hits both
            for mode, extra in (("files", []), ("stream", ["--stream"])):
                workdir = root / f"{mode}-{repeat}"
                subprocess.run(["cp", "-a", str(root / "warm"), str(workdir)], check=True)
                measured = ompipe([*common, *extra, "--workdir", str(workdir), "--to", "eval"], workdir)
                inputs = workdir / "superpoint/inputs"
                measured["input_bin_mib"] = sum(p.stat().st_size for p in inputs.rglob("*.bin")) / 2**20 if inputs.exists() else 0.0
                runs[mode].append(measured)
            work = root / f"files-{repeat}/superpoint"
            record = json.loads((work / f".ompipe/stages/infer-bs{options.bs}-onnxruntime.json").read_text())
            rates["ompipe"].append(record["info"]["samples"] / record["seconds"])
            rates["bare"].append(bare_onnxruntime(work, options.bs))
        results = {mode: {key: statistics.median(r[key] for r in measured) for key in measured[0]} for mode, measured in runs.items()}
        ompipe_rate, bare_rate = statistics.median(rates["ompipe"]), statistics.median(rates["bare"])
        superpoint_rates = preprocessing_rates("superpoint", ["--data", str(data)], root, options.repeats)
        centernet_rates = preprocessing_rates("centernet", ["--data", str(coco_data(root))], root, options.repeats)
    n_images = options.sequences * 6
    print(f"machine: {os.cpu_count()} CPU cores, {sys.platform}; SuperPoint 240x320, random weights, "
          f"{n_images} images, bs {options.bs}, ONNX Runtime CPU")
    print(f"   load average during the run: {os.getloadavg()[0]:.1f} (other work on the machine skews every figure)")
    print(f"1. runner overhead: ompipe infer stage {ompipe_rate:.1f} img/s vs bare ONNX Runtime loop {bare_rate:.1f} img/s "
          f"-> ratio {ompipe_rate / bare_rate:.3f} (target >= 0.97)")
    f, s = results["files"], results["stream"]
    print(f"2. stream vs files end to end: stream {s['seconds']:.1f}s, files {f['seconds']:.1f}s -> stream {f['seconds'] / s['seconds']:.2f}x faster; "
          f"input .bin written {s['input_bin_mib']:.1f} vs {f['input_bin_mib']:.1f} MiB; "
          f"peak RSS {s['peak_rss_mib']:.0f} vs {f['peak_rss_mib']:.0f} MiB; peak disk {s['peak_disk_mib']:.1f} vs {f['peak_disk_mib']:.1f} MiB "
          f"(medians of {options.repeats})")
    print("3. preprocessing, 2 workers vs in process (--workers 2 vs 0; target >= 1.8x on 2 cores):")
    print(f"   SuperPoint (48 PNGs 240x320): {speedups(superpoint_rates)}")
    print(f"   CenterNet (48 JPEGs 640x480 -> 512x512): {speedups(centernet_rates)}")


if __name__ == "__main__":
    main()
