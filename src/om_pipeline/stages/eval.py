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
        return self.run.backend

    def needs(self) -> list[str]:
        return ["dataset", "infer"]

    def outputs(self) -> list[str]:
        return [self.run.result_name("eval")]

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "recipe params": self.run.recipe.params}
        return Fingerprint(params=params, inputs={"plugin": self.run.plugin_source_digest()})

    def execute(self, staging: Path) -> StageResult:
        data, samples = load_samples(self.run.model_dir)
        outputs_dir = self.run.path(self.run.infer_name)
        evaluator = self.run.plugin.evaluator(data, self.run.recipe.stage_params("eval"))
        specs = self.run.recipe.model.outputs
        views = self.run.views
        for sample in progress(samples, f"eval {self.run.name}", quiet=self.run.options.quiet):
            if views == (None,):
                evaluator.add(sample, read_outputs(outputs_dir, sample.id, specs))
            else:
                evaluator.add(sample, {view: read_outputs(outputs_dir / view, sample.id, specs) for view in views})
        metrics = {name: float(value) for name, value in evaluator.result().items()}
        weights = read_json(self.run.path("weights.json")) or {}
        record = {"metrics": metrics, "samples": len(samples), "backend": self.run.backend, "bs": self.run.bs,
                  "weights": weights.get("mode", "none")}
        write_json_atomic(self.staged(staging, self.run.result_name("eval")), record)
        return StageResult(info=record)


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
