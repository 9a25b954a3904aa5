"""eval: the plugin's evaluator over every sample's outputs, matched by sample id."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..progress import progress
from ..state import Fingerprint, read_json, write_json_atomic
from .base import Stage, StageResult
from .dataset import load_samples


class EvalStage(Stage):
    kind = "eval"
    per_bs = True

    @property
    def variant(self) -> str:
        return f"{self.run.tool}{self.run.mode_suffix.replace('_', '-')}"

    def needs(self) -> list[str]:
        if not self.run.options.stream:
            return ["dataset", "infer"]
        return ["dataset", self.run.model_stage]

    def outputs(self) -> list[str]:
        return [self.run.result_name("eval")]

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "recipe params": self.run.recipe.params}
        if self.run.options.stream:  # preprocessing happens here too, so its settings count
            params.update(bs=self.run.bs, preprocess=self.run.recipe.stage_params("preprocess"),
                          inputs=[s.model_dump() for s in self.run.recipe.model.inputs])
        return Fingerprint(params=params, inputs={"plugin": self.run.plugin_source_digest()})

    def execute(self, staging: Path) -> StageResult:
        data, samples = load_samples(self.run.model_dir)
        metrics = self.evaluate_stream(data, samples) if self.run.options.stream else self.evaluate_files(data, samples)
        weights = read_json(self.run.path("weights.json")) or {}
        record = {"metrics": metrics, "samples": len(samples), "tool": self.run.tool, "bs": self.run.bs,
                  "mode": "stream" if self.run.options.stream else "files", "weights": weights.get("mode", "none")}
        write_json_atomic(self.staged(staging, self.run.result_name("eval")), record)
        return StageResult(info=record)

    def evaluate_stream(self, data: Path, samples: list) -> dict[str, float]:
        from .. import stream

        return stream.evaluate(self.run, samples, data, self.run.options.workers)

    def evaluate_files(self, data: Path, samples: list) -> dict[str, float]:
        outputs_dir = self.run.path(self.run.infer_name)
        evaluator = self.run.plugin.evaluator(data, self.run.recipe.stage_params("eval"))
        specs = self.run.result_outputs
        views = self.run.views
        for sample in progress(samples, f"eval {self.run.name}", quiet=self.run.options.quiet):
            if views == (None,):
                evaluator.add(sample, read_outputs(outputs_dir, sample.id, specs))
            else:
                evaluator.add(sample, {view: read_outputs(outputs_dir / view, sample.id, specs) for view in views})
        return {name: float(value) for name, value in evaluator.result().items()}


def read_outputs(directory: Path, sample_id: str, specs) -> list[np.ndarray]:
    arrays = []
    for index, spec in enumerate(specs):
        path = directory / f"{sample_id}_{index}.bin"
        text = path.with_suffix(".txt")  # msame --outfmt TXT, as the GFocalV2 guide runs it
        if not path.is_file() and not text.is_file():
            raise UserError(f"no output {path.name} for sample {sample_id} in {directory}", hint="rerun the infer stage (--force)")
        array = np.fromfile(path, dtype=spec.dtype) if path.is_file() else np.array(text.read_text().split(), dtype=np.float64).astype(spec.dtype)
        if array.size != int(np.prod(spec.shape)):
            raise UserError(f"{path} holds {array.size} values; output {spec.name} has shape {spec.shape}")
        arrays.append(array.reshape(spec.shape))
    return arrays
