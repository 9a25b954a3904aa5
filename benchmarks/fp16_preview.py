"""The fp16 preview, measured per model: each model with random weights on a small synthetic set
through `ompipe run --runtime onnxruntime` at fp32 and with `--precision fp16` (ATC's
force_fp16 emulated, om_pipeline.fp16), printing the metric at both precisions and the compare
stage's cosine for the "onnx (fp16 emulated)" rung (the worst output). Not a test: minutes.

    python benchmarks/fp16_preview.py --models gfocalv2,pointrend \\
        [--upstream superpoint=/mirror/pytorch-superpoint.git,centernet=...,transpose=...]

GFocalV2 and PointRend run their native export paths at the small input sizes of their e2e
tests; SuperPoint, CenterNet and TransPose need an upstream clone or mirror (--upstream).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "recipes"))


def data_and_args(model: str, work: Path, upstream: dict[str, str]) -> tuple[list[str], str]:
    """(extra ompipe args, the metric to show) for one model at a small size."""
    if model == "gfocalv2":
        from om_pipeline.data.gfocalv2_tinycoco import write_tiny_coco
        from test_gfocalv2_e2e import small_recipe

        recipes = small_recipe(work / "recipes")
        return ["--recipes", str(recipes), "--data", str(write_tiny_coco(work / "coco", images=8, seed=0)), "--limit", "8"], "ap_all_images"
    if model == "pointrend":
        from om_pipeline.data.pointrend_synth import synthesize
        from test_pointrend_e2e import SMALL, small_recipe

        recipes = small_recipe(work / "recipes")
        data = synthesize(work / "cityscapes", images=3, size=SMALL, seed=1)
        return ["--recipes", str(recipes), "--data", str(data), "--limit", "3", "--export-path", "native"], "miou"
    if model == "superpoint":
        from om_pipeline.data.synth_hpatches import synthesize

        return ["--source", upstream[model], "--data", str(synthesize(work / "hpatches", sequences=2)), "--limit", "10"], "nn_map"
    if model == "centernet":
        from om_pipeline.data.centernet_tinycoco import write_tiny_coco

        return ["--source", upstream[model], "--data", str(write_tiny_coco(work / "coco", images=8, seed=2)), "--limit", "8"], "ap"
    if model == "transpose":
        from om_pipeline.data.transpose_synth import synthesize

        return ["--source", upstream[model], "--data", str(synthesize(work / "coco", images=8, seed=0)), "--limit", "8"], "ap"
    raise SystemExit(f"unknown model {model}")


def ompipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "om_pipeline.cli", *args], capture_output=True, text=True)


def read_results(work: Path, model: str, precision: str) -> dict:
    suffix = "_fp16" if precision == "fp16" else ""
    (path,) = [p for p in (work / "work" / model / "results").glob(f"{model}_onnxruntime_bs*.json")
               if p.name.endswith("_fp16.json") == bool(suffix)]
    return json.loads(path.read_text())


def measure(model: str, work: Path, upstream: dict[str, str]) -> dict:
    extra, metric = data_and_args(model, work, upstream)
    common = [model, "--weights", "random", "--runtime", "onnxruntime", "--workdir", str(work / "work"), *extra]
    row = {"model": model, "metric": metric}
    for precision in ("fp32", "fp16"):
        started = time.perf_counter()
        outcome = ompipe("run", *common, "--to", "eval", "--precision", precision)
        row[f"{precision}_seconds"] = round(time.perf_counter() - started, 1)
        if outcome.returncode != 0:
            row[f"{precision}_error"] = (outcome.stderr or outcome.stdout).strip().splitlines()[-6:]
            continue
        result = read_results(work, model, precision)
        row[precision] = (result["metrics"] or {}).get(metric)
        compare = (result.get("compare") or {}).get("stats", {})
        if precision == "fp16" and "onnx (fp16 emulated)" in compare:
            row["cosine"] = min(v["cosine"] for v in compare["onnx (fp16 emulated)"].values())
            row["max_abs"] = max(v["max_abs"] for v in compare["onnx (fp16 emulated)"].values())
    if "cosine" not in row:
        row.update(outputs_similarity(work / "work" / model / "infer"))
    if model == "gfocalv2" and "fp32" in row:  # a random model finds nothing real: score against fp32's own boxes
        from test_gfocalv2_e2e import ground_truth_from_detections

        data = Path(extra[extra.index("--data") + 1])
        ground_truth_from_detections(work, data, keep_empty=set(), infer_name="onnxruntime_bs1")
        for precision in ("fp32", "fp16"):
            ompipe("stage", *common, "eval", "--force", "--precision", precision)
            row[f"{precision} vs fp32 boxes"] = read_results(work, model, precision)["metrics"].get("ap")
    return row


def outputs_similarity(infer: Path) -> dict:
    """Worst cosine and max abs error of the fp16 run's raw outputs against the fp32 run's, over
    every sample (for recipes without a compare stage)."""
    import numpy as np

    from om_pipeline.stages.compare import similarity

    fp32 = next((d for d in infer.glob("onnxruntime_bs*") if not d.name.endswith("_fp16")), None)
    if fp32 is None or not (fp32.parent / f"{fp32.name}_fp16").is_dir():
        return {}
    stats = [similarity(np.fromfile(path, np.float32), np.fromfile(fp32.parent / f"{fp32.name}_fp16" / path.name, np.float32))
             for path in sorted(fp32.glob("*.bin"))]
    if not stats:
        return {}
    return {"cosine": min(s["cosine"] for s in stats), "max_abs": max(s["max_abs"] for s in stats), "cosine_from": "raw outputs"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gfocalv2,pointrend")
    parser.add_argument("--upstream", default="", help="model=path,... (clones or mirrors)")
    args = parser.parse_args(argv)
    upstream = dict(item.split("=", 1) for item in args.upstream.split(",") if item)
    print("| model | metric | fp32 | emulated fp16 | delta | compare cosine (worst output) | max abs |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix=f"fp16-{model}-") as tmp:
            row = measure(model, Path(tmp), upstream)
        delta = row["fp16"] - row["fp32"] if isinstance(row.get("fp16"), float) and isinstance(row.get("fp32"), float) else None
        print(f"| {model} | {row['metric']} | {row.get('fp32')} | {row.get('fp16')} | {delta} | {row.get('cosine')} | {row.get('max_abs')} |",
              flush=True)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
