"""eval: the plugin's evaluator over every sample's outputs, matched by sample id."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..plugin import reduced
from ..progress import progress
from ..samples import read_outputs, read_reduced
from ..state import Fingerprint, read_json, write_json_atomic
from .base import Stage, StageResult
from .dataset import load_samples
from .preprocess import preprocessing_params


STATE = "eval_state"  # a shard's evaluator state: results/eval_state_<tool>_bs<N>.json


class EvalStage(Stage):
    kind = "eval"
    per_bs = True

    @property
    def variant(self) -> str:
        return f"{self.run.tool_variant}{self.run.mode_suffix.replace('_', '-')}"

    def needs(self) -> list[str]:
        if not self.run.options.stream:
            return ["dataset", "infer"]
        return ["dataset", self.run.model_stage]

    def outputs(self) -> list[str]:
        if self.run.shard:
            return [self.run.result_name(STATE)]
        return [self.run.result_name("eval"), self.artifacts_dir]

    @property
    def artifacts_dir(self) -> str:
        """What the evaluator keeps besides its metrics (e.g. the COCO results JSON the guides'
        postprocess scripts write), one JSON file per name."""
        return self.run.result_name("eval").removesuffix(".json")

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "recipe params": self.run.recipe.params}
        if self.run.options.stream:  # preprocessing and inference happen here too, so their settings count
            params.update(bs=self.run.bs, **preprocessing_params(self.run))
            params.update(self.run.precision_params())
        return Fingerprint(params=params, inputs={"plugin": self.run.plugin_source_digest()})

    def tools_used(self) -> list[str]:
        """What made the outputs it scores: the runtime's tools (in a stream, its in-memory API)."""
        return list(self.run.runtime.tools)

    def execute(self, staging: Path) -> StageResult:
        data, samples = load_samples(self.run.model_dir)
        evaluator = self.run.plugin.evaluator(data, self.run.settings("eval"))
        if self.run.options.stream:
            self.evaluate_stream(evaluator, samples)
        else:
            self.evaluate_files(evaluator, samples)
        if self.run.shard:  # a part of the metric: `ompipe merge` computes it once over all shards
            return self.write_state(staging, evaluator, samples)
        metrics = {name: float(value) for name, value in evaluator.result().items()}
        artifacts = self.staged(staging, f"{self.artifacts_dir}/x").parent  # created, even if left empty
        for name, value in (evaluator.artifacts() if hasattr(evaluator, "artifacts") else {}).items():
            write_json_atomic(artifacts / f"{name}.json", value, indent=None)  # COCO results: bulk data
        weights = read_json(self.run.shared_path("weights.json")) or {}
        record = {"metrics": metrics, "samples": len(samples), "tool": self.run.runtime.name, "bs": self.run.bs,
                  "precision": self.run.numerics,
                  "mode": "stream" if self.run.options.stream else "files", "weights": weights.get("mode", "none")}
        write_json_atomic(self.staged(staging, self.run.result_name("eval")), record)
        return StageResult(info=record)

    def write_state(self, staging: Path, evaluator, samples: list) -> StageResult:
        if not callable(getattr(evaluator, "state", None)):
            raise UserError(f"the evaluator of plugin {self.run.recipe.plugin} cannot save a partial state, so it cannot be sharded",
                            hint="give it state() and merge() (om_pipeline.plugin.Evaluator), or run without --shard")
        record = {"shard": str(self.run.shard), "samples": [s.id for s in samples], "tool": self.run.runtime.name, "bs": self.run.bs,
                  "state": evaluator.state()}
        write_json_atomic(self.staged(staging, self.run.result_name(STATE)), record, indent=None)
        return StageResult(info={"shard": str(self.run.shard), "samples": len(samples)})

    def evaluate_stream(self, evaluator, samples: list) -> None:
        from .. import stream

        stream.evaluate(self.run, samples, evaluator, self.run.options.workers)

    def evaluate_files(self, evaluator, samples: list) -> None:
        outputs_dir = self.run.path(self.run.infer_name)
        views = self.run.views
        specs = self.run.runtime.outputs()  # once: the fake's .om says them from its file
        for sample in progress(samples, f"eval {self.run.name}", quiet=self.run.options.quiet):
            if views == (None,):
                evaluator.add(sample, self.sample_outputs(outputs_dir, sample.id, specs))
            else:
                evaluator.add(sample, {view: self.sample_outputs(outputs_dir / view, sample.id, specs) for view in views})

    def sample_outputs(self, directory: Path, sample_id: str, specs) -> list[np.ndarray]:
        """Reduced outputs as chunked infer kept them, else the tool's raw outputs, reduced here."""
        kept = read_reduced(directory, sample_id)
        return kept if kept is not None else reduced(self.run.plugin, read_outputs(directory, sample_id, specs))

