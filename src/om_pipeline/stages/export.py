"""export: the plugin writes `<model>_bs<N>.<target>.onnx`; we check what it wrote.

The target matters: the graph for atc may hold Ascend-only ops (DeformableConv2D,
BatchMultiClassNMS) that ONNX Runtime cannot run, so each target has its own file. The export
can run in an environment the recipe declares (upstream stacks pin conflicting torch versions),
and an export path may be a command (the guide's own script) instead of the plugin's export.
"""
from __future__ import annotations

from pathlib import Path

from .. import versions
from ..errors import StageFailed, UserError
from ..onnx_info import describe
from ..plugin import ExportContext
from ..state import Fingerprint, read_json
from .base import Stage, StageResult, write_log_header
from .weights import WeightsStage

# {weights} in a dry run's export command under --weights random: the plugin's
# random_checkpoint(ctx) writes that file only when the export runs.
RANDOM_WEIGHTS = "<random weights>"


class ExportStage(Stage):
    kind = "export"
    per_bs = True

    def needs(self) -> list[str]:
        stages = self.run.recipe.stages
        source = ("patch" if stages.patch else "clone") if self.run.needs_source else None
        return [k for k in (source, "weights") if k and getattr(stages, k)]

    @property
    def env(self):
        return self.run.export_path[1].env or self.config.env

    def outputs(self) -> list[str]:
        return [self.run.onnx_name(simplified=False)]

    def fingerprint(self) -> Fingerprint:
        recipe = self.run.recipe
        params = {**self.params(), "recipe params": recipe.params, "bs": self.run.bs, "target": self.run.target,
                  "io": recipe.model.model_dump(), "seed": self.run.options.seed, "export path": self.run.export_path[0]}
        tools = {} if self.env else versions.packages("torch", "onnx")
        return Fingerprint(params=params, inputs={"plugin": self.run.plugin_source_digest()}, tools=tools)

    def commands(self) -> list[list[str]]:
        """An export path's `command:` (the guide's script), as it will run in the checkout."""
        path = self.run.export_path[1]
        if not path.command:
            return []  # the plugin's export, in process or in the export environment
        from ..envs import export_command

        out = self.run.staging_dir(self.key) / self.run.onnx_name(simplified=False)
        return [export_command(self.run, path, self.planned_weights(), out)]

    def planned_weights(self) -> str:
        """The checkpoint the command will read, as the weights stage will choose it."""
        weights = WeightsStage(self.run).planned_path() if self.run.recipe.stages.weights else None
        return str(weights) if weights else RANDOM_WEIGHTS

    def context(self, out: Path, target: str) -> ExportContext:
        recipe = self.run.recipe
        weights = (read_json(self.run.path("weights.json")) or {}) if recipe.stages.weights else {}
        return ExportContext(
            source=self.run.path("src"),
            weights=self.run.path(weights["path"]) if weights.get("path") else None,  # relative: inside the work dir
            target=target,
            bs=self.run.bs,
            out=out,
            opset=self.config.opset,
            input_names=[t.name for t in recipe.model.inputs],
            output_names=[t.name for t in recipe.model.outputs_for(target)],
            settings=self.run.settings("export"),
            seed=self.run.options.seed,
            export_path=self.run.export_path[0],
        )

    def execute(self, staging: Path) -> StageResult:
        out = self.staged(staging, self.run.onnx_name(simplified=False))
        self.export(out, self.run.target, self.log)
        return StageResult(info=self.check(out))

    def export(self, out: Path, target: str, log: Path) -> None:
        """The plugin's export for `target`, in the recipe's export environment when it has one."""
        context = self.context(out, target)
        write_log_header(log, f"export {self.run.name} target={context.target} bs={context.bs} opset={context.opset}"
                         + (" weights=RANDOM" if context.weights is None else f" weights={context.weights}"))
        path = self.run.export_path[1]
        if path.command:
            from ..envs import export_by_command

            export_by_command(self.run, path, self.env, context, log)
        elif self.env:
            from ..envs import export_in_env

            export_in_env(self.run, self.env, context, log)
        else:
            self.run.plugin.export(context)
        if not out.is_file():
            raise StageFailed(f"the plugin's export wrote no file at {out}")

    def check(self, path: Path) -> dict:
        info = describe(path, check=self.run.target == "onnxruntime")
        recipe = self.run.recipe
        expected_inputs = [t.name for t in recipe.model.inputs]
        expected_outputs = [t.name for t in recipe.model.outputs_for(self.run.target)]
        if info["inputs"] != expected_inputs or info["outputs"] != expected_outputs:
            raise UserError(
                f"exported graph has inputs {info['inputs']} and outputs {info['outputs']}; "
                f"the recipe declares {expected_inputs} and {expected_outputs}",
                hint="atc --input_shape and the output files are named after these; fix the plugin's export or the recipe",
            )
        for spec in recipe.model.inputs:
            shape = info["shapes"][spec.name]
            if all(isinstance(d, int) for d in shape) and shape != [self.run.bs, *spec.shape]:
                raise UserError(f"exported input {spec.name} has shape {shape}, expected {[self.run.bs, *spec.shape]}")
        return info
