"""preprocess: the plugin turns each sample into model inputs, written as raw `.bin` files
(`inputs/<input name>/<sample id>.bin`), the layout `ais_bench --input` reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..progress import progress
from ..state import Fingerprint
from ..workers import for_each_sample
from .base import Stage, StageResult
from .dataset import load_samples


class PreprocessStage(Stage):
    kind = "preprocess"

    def skip_reason(self) -> str | None:
        if self.run.options.stream:
            return "--stream: preprocessing runs in memory inside eval"
        if self.run.chunked:
            return "infer.chunk: inputs are written chunk by chunk inside infer"
        return None

    def needs(self) -> list[str]:
        return ["dataset"]

    def outputs(self) -> list[str]:
        return ["inputs"]

    def fingerprint(self) -> Fingerprint:
        params = {**self.params(), "recipe params": self.run.recipe.params,
                  "inputs": [s.model_dump() for s in self.run.recipe.model.inputs]}
        return Fingerprint(params=params, inputs={"plugin": self.run.plugin_source_digest()})

    def execute(self, staging: Path) -> StageResult:
        _, samples = load_samples(self.run.model_dir)
        write_inputs(self.run, samples, staging, label=f"preprocess {self.run.name}")
        return StageResult(info={"samples": len(samples), "views": [v for v in self.run.views if v]})


def preprocessing_params(run) -> dict:
    """What decides the preprocessed inputs, for the fingerprint of a stage that preprocesses in
    passing (infer when chunked, eval when streaming)."""
    return {"preprocess": run.recipe.stage_params("preprocess"), "inputs": [s.model_dump() for s in run.recipe.model.inputs]}


def write_inputs(run, samples, root: Path, label: str | None = None) -> None:
    """Each sample's model inputs as `<root>/<inputs dir of its view>/<input name>/<id>.bin`,
    the layout `ais_bench --input` reads, by worker processes that write the files themselves
    when that pays (workers.for_each_sample); `label` shows progress."""
    specs = run.recipe.model.inputs
    directories = {view: [root / run.inputs_dir(view) / spec.name for spec in specs] for view in run.views}
    for directory in (d for per_view in directories.values() for d in per_view):
        directory.mkdir(parents=True, exist_ok=True)

    def write(sample) -> None:
        for view, arrays in model_inputs(run, sample).items():
            for directory, array in zip(directories[view], arrays):
                array.tofile(directory / f"{sample.id}.bin")

    written = for_each_sample(write, samples, run.options.workers)
    for _ in progress(written, label, quiet=run.options.quiet, total=len(samples)) if label else written:
        pass


def model_inputs(run, sample) -> dict:
    """One sample's model inputs per view (None when the plugin has no views), as the plugin
    made them and checked against the recipe's declared inputs."""
    arrays = by_view(run.plugin.preprocess(sample, run.settings("preprocess")), run.views, sample.id)
    return {view: check_inputs(per_view, run.recipe.model.inputs, sample.id) for view, per_view in arrays.items()}


def by_view(result, views: tuple[str | None, ...], sample_id: str) -> dict:
    """A single-pass plugin returns a list of arrays; a plugin with VIEWS a dict per view."""
    if views == (None,):
        return {None: result}
    if not isinstance(result, dict) or set(result) != set(views):
        raise UserError(f"preprocess of {sample_id} must return a dict with the plugin's views {list(views)}")
    return result


def check_inputs(arrays: list[np.ndarray], specs, sample_id: str) -> list[np.ndarray]:
    """The plugin's arrays must be exactly what the recipe declares: a wrong shape or dtype
    here would surface as a confusing size error inside ais_bench much later."""
    if len(arrays) != len(specs):
        raise UserError(f"preprocess of {sample_id} returned {len(arrays)} arrays for {len(specs)} model inputs")
    checked = []
    for spec, array in zip(specs, arrays):
        array = np.asarray(array)
        if list(array.shape) != list(spec.shape) or array.dtype != np.dtype(spec.dtype):
            raise UserError(
                f"preprocess of {sample_id}: input {spec.name} is {array.dtype}{list(array.shape)}, "
                f"the recipe declares {spec.dtype}{list(spec.shape)}"
            )
        checked.append(np.ascontiguousarray(array))
    return checked
