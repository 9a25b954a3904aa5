"""compare: the golden ladder. A few fixed real inputs (the first samples of the dataset)
through PyTorch -> ONNX -> simplified ONNX -> the target model (the .om, or ONNX Runtime),
with cosine similarity, max abs error and relative L2 error per output at each rung. A broken
tolerance fails the run here, in seconds, before any dataset-wide evaluation (ATC's fp16
default has wrecked accuracy silently: Ascend/pytorch#125).

PyTorch is the first rung when the plugin offers `torch_forward(ctx) -> callable(arrays) ->
outputs`; otherwise the exported ONNX is the reference, and the report says so.

The rungs that compute at fp16 are named so and held to the recipe's `fp16_tolerance`: the fake
.om under ATC's force_fp16 ("om (fp16 emulated)", om_pipeline.fp16), ONNX Runtime with
`--precision fp16` ("onnx (fp16 emulated)"), and a real .om whose precision_mode reduces. A
value fp16 cannot hold (above 65504: inf, or NaN after it) stops the run naming the output.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import fp16
from ..errors import StageFailed
from ..runtimes.ais_bench import AisBench
from ..runtimes.onnxruntime import OnnxModel
from ..state import Fingerprint, write_json_atomic
from .base import Stage, StageResult, write_log_header
from .dataset import load_samples
from .preprocess import model_inputs


OM_FP16 = "om (fp16 emulated)"
ONNX_FP16 = "onnx (fp16 emulated)"


def similarity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Cosine, max abs and relative L2 error over the values finite in both, and how many values
    the candidate lost to inf / NaN where the reference is finite (`nonfinite`)."""
    a = np.asarray(reference, np.float64).ravel()
    b = np.asarray(candidate, np.float64).ravel()
    lost = np.isfinite(a) & ~np.isfinite(b)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return {
        "cosine": float(a @ b / norms) if norms else float(np.array_equal(a, b)),
        "max_abs": float(np.max(np.abs(a - b))) if a.size else 0.0,
        "rel_l2": float(np.linalg.norm(a - b) / np.linalg.norm(a)) if np.linalg.norm(a) else float(np.linalg.norm(b)),
        "nonfinite": int(lost.sum()),
    }


class CompareStage(Stage):
    kind = "compare"
    per_bs = True

    @property
    def variant(self) -> str:
        return self.run.tool_variant

    def needs(self) -> list[str]:
        stages = self.run.recipe.stages
        return [kind for kind in ("dataset", "export", "simplify", self.run.model_stage) if getattr(stages, kind)]

    def outputs(self) -> list[str]:
        return [self.run.result_name("compare")]

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "bs": self.run.bs, "tool": self.run.runtime.name}
        params.update(self.run.precision_params())
        return Fingerprint(params=params, inputs={"plugin": self.run.plugin_source_digest()})

    def tools_used(self) -> list[str]:
        return list(AisBench.tools) if self.run.runtime.runs_om else []  # the .om rung runs in ais_bench's InferSession

    def execute(self, staging: Path) -> StageResult:
        feeds = self.golden_inputs()
        rungs = self.rungs()
        write_log_header(self.log, f"golden comparison on {len(feeds)} batch(es): {' -> '.join(name for name, _ in rungs)}")
        outputs = {name: [forward(batch) for batch in feeds] for name, forward in rungs}
        reference_name = rungs[0][0]
        table = {name: self.stats(outputs[reference_name], outputs[name]) for name, _ in rungs[1:]}
        tolerances = {name: self.tolerance(name).model_dump() for name, _ in rungs[1:]}
        record = {"reference": reference_name, "rungs": [name for name, _ in rungs], "stats": table,
                  "samples": self.config.samples, "tolerance": self.config.tolerance.model_dump(),
                  "tolerances": tolerances, "precision": self.run.numerics}
        write_json_atomic(self.staged(staging, self.run.result_name("compare")), record)
        write_log_header(self.log, "golden comparison: " + json.dumps({"stats": table, "tolerances": tolerances}, sort_keys=True))
        broken = self.broken(table)
        if broken:  # a failed stage's outputs are discarded: its numbers stay in the log
            raise StageFailed("golden comparison out of tolerance, before any dataset-wide evaluation", details=broken,
                              hint="check atc's --precision_mode (default force_fp16; must_keep_origin_dtype keeps fp32, "
                                   f"--keep_dtype keeps named nodes) or the simplifier; every output's numbers in {self.log}")
        return StageResult(info=record)

    def golden_inputs(self) -> list[list[np.ndarray]]:
        """The first `samples` samples, batched to the compiled batch size (padded with the first)."""
        _, samples = load_samples(self.run.model_dir)
        view = self.run.views[0]
        arrays = [model_inputs(self.run, s)[view] for s in samples[: self.config.samples]]
        bs = self.run.bs
        batches = []
        for start in range(0, len(arrays), bs):
            chunk = arrays[start:start + bs]
            chunk += [chunk[0]] * (bs - len(chunk))
            batches.append([np.stack(column) for column in zip(*chunk)])
        return batches

    def rungs(self) -> list[tuple[str, object]]:
        from .atc import nonstandard_ops
        from .export import ExportStage

        model_io = self.run.recipe.model
        rungs = []
        torch_forward = getattr(self.run.plugin, "torch_forward", None)
        if torch_forward:
            rungs.append(("pytorch", torch_forward(ExportStage(self.run).context(Path("unused.onnx"), self.run.target))))
        graphs = [("onnx", self.run.onnx_name(simplified=False))]
        if self.run.recipe.stages.simplify:
            graphs.append(("simplified onnx", self.run.onnx_name(simplified=True)))
        for name, relative in graphs:
            # The Ascend target's graph may hold ops only atc knows (DeformableConv2D): not a rung.
            if not nonstandard_ops(self.run.path(relative)):
                rungs.append((name, OnnxModel(self.run.path(relative), model_io)))
        precision = self.run.emulated_precision
        if precision and precision.reduces:
            rungs.append((ONNX_FP16, OnnxModel(self.run.path(self.run.model_onnx), model_io, precision)))
        if self.run.runtime.runs_om:  # through ais_bench's Python API, whichever tool runs the dataset
            name = OM_FP16 if self.run.numerics == "fp16-emulated" else "om"
            rungs.append((name, AisBench(self.run).session()))
        if len(rungs) < 2:
            raise StageFailed("nothing to compare: the plugin has no torch_forward and the graph has Ascend-only ops",
                              hint="add torch_forward(ctx) to the plugin, or drop the compare stage from the recipe")
        return rungs

    def stats(self, reference: list, candidate: list) -> dict[str, dict[str, float]]:
        """Per output, the worst value over the golden batches."""
        result = {}
        for index, spec in enumerate(self.run.runtime.outputs()):
            values = [similarity(ref[index], cand[index]) for ref, cand in zip(reference, candidate)]
            result[spec.name] = {"cosine": min(v["cosine"] for v in values), "max_abs": max(v["max_abs"] for v in values),
                                 "rel_l2": max(v["rel_l2"] for v in values), "nonfinite": sum(v["nonfinite"] for v in values)}
        return result

    def computes_fp16(self, rung: str) -> bool:
        """The emulated rungs, and a real .om whose precision_mode reduces (ATC's default does)."""
        atc = self.run.recipe.stages.atc
        npu_om = rung == "om" and self.run.numerics.startswith("npu")  # as atc compiled it, not as an emulator says
        return rung in (OM_FP16, ONNX_FP16) or (npu_om and fp16.reduces(atc.precision_mode if atc else fp16.DEFAULT_MODE))

    def tolerance(self, rung: str):
        return (self.config.fp16_tolerance if self.computes_fp16(rung) else None) or self.config.tolerance

    def broken(self, table: dict) -> list[str]:
        problems = []
        for rung, outputs in table.items():
            tolerance = self.tolerance(rung)
            for output, stats in outputs.items():
                if stats["nonfinite"]:
                    problems.append(f"{rung} {output}: {stats['nonfinite']} value(s) inf or NaN where the reference is "
                                    "finite: fp16 overflow (|x| > 65504) in this output or before it")
                    continue
                if stats["cosine"] < tolerance.cosine:
                    problems.append(f"{rung} {output}: cosine {stats['cosine']:.6f} < {tolerance.cosine}")
                if tolerance.rel_l2 is not None and stats["rel_l2"] > tolerance.rel_l2:
                    problems.append(f"{rung} {output}: relative L2 {stats['rel_l2']:.3g} > {tolerance.rel_l2}")
        return problems
