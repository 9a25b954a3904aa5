"""PointRend benchmarks, measured side by side in one run (ratios, not absolute targets):

1. disk and time of the three ways to run the dataset, end to end (infer + eval, export
   shared): the guide's files mode (every input .bin and every 152 MiB logits file on disk),
   chunked files mode (infer.chunk: preprocess -> ONNX Runtime -> argmax per chunk, only
   uint8 maps kept) and --stream (nothing on disk); peak disk of the work directory above what
   the shared stages left, wall time, peak RSS;
2. parallel vs serial preprocessing of 1024 x 2048 PNGs (single-threaded PNG decoding, 24 MiB
   float32 out per image): ompipe's own code with --workers 2 vs 0, in the files mode's
   preprocess stage and in the stream's batch filling.

    python benchmarks/bench_pointrend.py [--images 6] [--chunk 2] [--repeats 2]

The native export path with random weights on a synthetic Cityscapes-format set at the real
size, ONNX Runtime CPU: no upstream checkout, no NPU, no download.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import directory_bytes, ompipe, preprocessing_rates, speedups  # noqa: E402  (same measuring code)


def recipe_with_chunk(directory: Path, chunk: int | None) -> Path:
    from om_pipeline.recipe import find_recipe

    text = find_recipe("pointrend").path.read_text()
    assert "    chunk: 8" in text
    text = text.replace("    chunk: 8", f"    chunk: {chunk}" if chunk else "")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pointrend.yaml").write_text(text)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="medians over this many alternating runs")
    parser.add_argument("--preprocessing-images", type=int, default=16,
                        help="images for the preprocessing figures (a pool's start is paid once per run)")
    options = parser.parse_args()
    from om_pipeline.data.pointrend_synth import synthesize

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        root = Path(tmp)
        data = synthesize(root / "cityscapes", images=options.images, size=(1024, 2048), seed=0)
        recipes = {"files": recipe_with_chunk(root / "recipes-files", None),
                   "chunked": recipe_with_chunk(root / "recipes-chunked", options.chunk)}
        recipes["stream"] = recipes["chunked"]
        common = ["--export-path", "native", "--weights", "random", "--data", str(data), "--runtime", "onnxruntime"]
        # The shared stages once (dataset, export), so every mode times the same work.
        subprocess.run([sys.executable, "-m", "om_pipeline.cli", "stage", "pointrend", "export", "-q", "--recipes",
                        str(recipes["files"]), *common, "--workdir", str(root / "warm")], check=True, stdout=subprocess.DEVNULL)
        shared = directory_bytes(root / "warm")
        runs: dict[str, list] = {"files": [], "chunked": [], "stream": []}
        for repeat in range(options.repeats):  # alternate the modes, so a busy moment hits all
            for mode in runs:
                workdir = root / f"{mode}-{repeat}"
                subprocess.run(["cp", "-a", str(root / "warm"), str(workdir)], check=True)
                extra = ["--stream"] if mode == "stream" else []
                measured = ompipe(["pointrend", "--recipes", str(recipes[mode]), *common, *extra, "--workdir", str(workdir),
                                   "--to", "eval"], workdir, command="run")
                measured["peak_disk_mib"] -= shared / 2**20
                runs[mode].append(measured)
                shutil.rmtree(workdir)
        results = {mode: {key: statistics.median(r[key] for r in measured) for key in measured[0]} for mode, measured in runs.items()}
        many = synthesize(root / "cityscapes-preprocessing", images=options.preprocessing_images, size=(1024, 2048), seed=1)
        rates = preprocessing_rates("pointrend", ["--data", str(many)], root, options.repeats, recipes=recipes["files"])
    print(f"machine: {os.cpu_count()} CPU cores, {sys.platform}; PointRend R-101 FPN 1024x2048, random weights (native path), "
          f"{options.images} synthetic images, bs 1, ONNX Runtime CPU; medians of {options.repeats}")
    print(f"   load average during the run: {os.getloadavg()[0]:.1f} (other work on the machine skews every figure)")
    per_image = {mode: r["peak_disk_mib"] / options.images for mode, r in results.items()}
    for mode, r in results.items():
        print(f"1. {mode:<8} {r['seconds']:6.1f}s  peak disk above the shared stages {r['peak_disk_mib']:8.1f} MiB "
              f"({per_image[mode]:.1f} MiB per image)  peak RSS {r['peak_rss_mib']:.0f} MiB")
    files, chunked, stream = (results[m] for m in ("files", "chunked", "stream"))
    print(f"   chunked vs files: {files['seconds'] / chunked['seconds']:.2f}x the speed, "
          f"{files['peak_disk_mib'] / max(chunked['peak_disk_mib'], 1e-9):.1f}x less peak disk; "
          f"stream vs files: {files['seconds'] / stream['seconds']:.2f}x the speed")
    print(f"   for Cityscapes val (500 images), by these figures: files mode ~{500 * per_image['files'] / 1024:.0f} GiB, "
          f"chunked ~{(500 * 2 + chunked['peak_disk_mib'] - options.images * 2) / 1024:.1f} GiB (the 2 MiB maps kept plus one chunk of "
          f"{options.chunk}; the recipe's 8 hold ~1.4 GiB at a time)")
    print(f"2. preprocessing {options.preprocessing_images} images, --workers 2 vs 0: {speedups(rates)}")


if __name__ == "__main__":
    main()
