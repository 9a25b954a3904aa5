"""The run context: one recipe, one batch size, one runtime, resolved options and paths.

Everything a stage needs to know about "this run" is here, so stages stay small and the
planner can compute fingerprints without executing anything.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from . import runtimes, toolchains
from .errors import UserError
from .plugin import load_plugin, plugin_views, stage_settings
from .recipe import LoadedRecipe, Recipe
from .shard import Shard
from .state import StateStore, digest_of

PRECISIONS = ("fp32", "fp16")
# Stages only the Ascend path has: `ompipe stage M atc` names that path, it never means "skip atc".
ASCEND_ONLY_STAGES = ("atc",)


@dataclass(frozen=True)
class Options:
    """What the user chose on the command line (or the Python API), before resolution."""

    bs: int | None = None
    # What runs the model (runtimes.RUNTIMES): onnxruntime, ais_bench or msame. None: the recipe's
    # runtime for the .om when the Ascend tools are here (CANN, or the fake toolchain), else onnxruntime.
    runtime: str | None = None
    backend: str | None = None  # the old spelling: onnxruntime, or ais_bench for the recipe's .om runtime
    infer_tool: str | None = None  # the old spelling of --runtime ais_bench|msame
    export_path: str | None = None  # one of the recipe's export paths; None: the recipe's choice
    toolchain: str = "real"
    soc_version: str = "auto"
    source: Path | None = None
    weights: str | None = None  # a path, "random", or None for the recipe's own
    data: Path | None = None
    limit: int | None = None
    workdir: Path = Path("work")
    from_stage: str | None = None
    to_stage: str | None = None
    only: str | None = None  # `ompipe stage MODEL STAGE`: that stage and what it needs
    force: bool = False
    dry_run: bool = False
    check: bool = False
    wait: bool = False  # another writer holds the model's work directory: wait instead of stopping
    quiet: bool = False
    seed: int = 0
    stream: bool = False  # preprocess -> model -> evaluator in memory, no .bin files
    workers: int | None = None  # preprocessing processes (None: workers.workers_for decides)
    shard: Shard | None = None  # run only this shard's samples, under <model>/shards/<I>-of-<N>/
    device: int | None = None  # the NPU (ACL device id) ais_bench runs on; None: the recipe's (0)
    # The shared stages were built by the process that started this one, which holds the model
    # directory's lock (`--devices`): check that they are up to date, never build them.
    shared_built: bool = False
    devices: tuple[int, ...] | None = None  # `--devices`: one shard per device, concurrently, then merged
    executor: str | None = None  # "ray": the shards as Ray tasks (ray_executor), then merged
    ray_address: str | None = None  # the cluster to join; None: a local one (or RAY_ADDRESS)
    shards: int | None = None  # --executor ray: how many shards (default: the cluster's NPUs or CPUs)
    cann: str | None = None  # ATC op table generation ("8", "5"); None: the installed CANN's, else 8
    # fp32, or fp16: with --runtime onnxruntime, the model computes as the .om would under the
    # recipe's atc precision_mode (ATC's default force_fp16), emulated (om_pipeline.fp16)
    precision: str = "fp32"

    @property
    def plans_only(self) -> bool:
        """--dry-run / --check: execute nothing, fetch nothing."""
        return self.dry_run or self.check


def choose_runtime(options: Options, recipe: Recipe) -> tuple[str, str | None]:
    """(runtime name, note to print once): --runtime (or its old spellings), else the recipe's
    .om runtime when the active toolchain has the Ascend tools, else ONNX Runtime."""
    if options.precision not in PRECISIONS:
        raise UserError(f"unknown precision {options.precision!r}", hint=f"choose one of {', '.join(PRECISIONS)}")
    asked = asked_runtime(options, recipe)
    om_runtime = recipe_om_runtime(recipe)
    ascend_stage = options.only if options.only in ASCEND_ONLY_STAGES else None
    if asked:
        runtime = runtimes.runtime_class(asked)
        if ascend_stage and not runtime.runs_om:
            raise UserError(f"stage {ascend_stage} is on the Ascend path; --runtime {asked} runs the ONNX model without it",
                            hint=f"drop --runtime (or pass --runtime {om_runtime}) to run it")
        check_precision(options, runtime)
        return asked, None
    found = toolchains.active().found()
    if found:
        check_precision(options, runtimes.runtime_class(om_runtime))
        return om_runtime, f"runtime: {om_runtime} ({found})"
    if ascend_stage:
        raise UserError(f"stage {ascend_stage} runs Ascend's atc, and no CANN environment was found "
                        "(ASCEND_TOOLKIT_HOME unset or atc not on PATH)",
                        hint="source CANN's set_env.sh, or pass --toolchain fake to run it with the fake atc (no NPU needed)")
    return "onnxruntime", f"runtime: onnxruntime (no CANN environment found; pass --runtime {om_runtime} after sourcing set_env.sh)"


def asked_runtime(options: Options, recipe: Recipe) -> str | None:
    """--runtime, or what its old spellings meant: --infer-tool T, --backend onnxruntime, and
    --backend ais_bench for the .om run by the recipe's tool."""
    old_spellings = {"onnxruntime": "onnxruntime", "ais_bench": options.infer_tool or recipe_om_runtime(recipe), "": options.infer_tool}
    if (options.backend or "") not in old_spellings:
        raise UserError(f"unknown backend {options.backend!r}", hint=f"choose a --runtime: {', '.join(runtimes.RUNTIMES)}")
    return options.runtime or old_spellings[options.backend or ""]


def recipe_om_runtime(recipe: Recipe) -> str:
    """The tool the recipe's guide runs the .om with (its infer stage's `tool`)."""
    infer = recipe.stages.infer or recipe.stages.perf
    return infer.tool if infer else "ais_bench"


def check_precision(options: Options, runtime) -> None:
    if options.precision != "fp32" and runtime.runs_om:
        raise UserError(f"--precision {options.precision} previews the .om's numerics with --runtime onnxruntime",
                        hint="add --runtime onnxruntime; the .om itself computes as the recipe's atc precision_mode says")


@dataclass
class Run:
    loaded: LoadedRecipe
    options: Options
    runtime_name: str  # runtimes.RUNTIMES
    bs: int
    workdir: Path
    extra_patch_dirs: list[Path] = field(default_factory=list)

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    @property
    def name(self) -> str:
        return self.recipe.name

    @functools.cached_property
    def runtime(self) -> runtimes.Runtime:
        """What runs the model; stages ask it instead of comparing names."""
        return runtimes.for_run(self.runtime_name, self)

    @property
    def target(self) -> str:
        """The export target: "ascend" (the graph atc compiles) or "onnxruntime"."""
        return self.runtime.target

    @property
    def tool_variant(self) -> str:
        """The runtime, and `-fp16` for the emulated-fp16 preview: names the per-runtime stage records."""
        return f"{self.runtime.name}{self.precision_suffix.replace('_', '-')}"

    @property
    def emulated_precision(self):
        """The fp16.Precision ONNX Runtime computes with (--precision fp16: the recipe's atc
        precision_mode, emulated), or None for plain fp32. Only ONNX Runtime takes --precision
        fp16 (choose_runtime)."""
        if self.options.precision == "fp32":
            return None
        from .fp16 import Precision

        atc = self.recipe.stages.atc
        return Precision(atc.precision_mode if atc else "force_fp16")

    @property
    def numerics(self) -> str:
        """How the model's numbers are made: fp32, fp16-emulated (the fake .om, or ONNX Runtime
        with --precision fp16), or `npu (<precision_mode>)` for a real .om."""
        return self.runtime.numerics()

    def precision_params(self) -> dict[str, str]:
        """What the model's numbers depend on beyond its files, for the fingerprints of the stages
        that run it (the runtime says: the emulated precision, or the fake .om's numerics)."""
        return self.runtime.precision_params()

    @property
    def model_stage(self) -> str:
        """The stage whose output the model runs from: atc's .om, or the (simplified) ONNX."""
        if self.runtime.runs_om:
            return "atc"
        return "simplify" if self.recipe.stages.simplify else "export"

    @property
    def export_path(self):
        """(name or None, ExportPath) of the export that runs."""
        return self.recipe.stages.export.chosen_path(self.options.export_path)

    @property
    def needs_source(self) -> bool:
        """Whether anything needs the upstream checkout: the export path, or weights inside it."""
        weights = self.recipe.stages.weights
        return self.export_path[1].source or bool(weights and weights.in_source)

    def output_specs(self, target: str):
        return self.recipe.model.outputs_for(target)

    @property
    def shard(self) -> Shard | None:
        return self.options.shard

    @functools.cached_property
    def shared_dir(self) -> Path:
        """The model's work directory: where the sample-independent stages (clone ... atc) put
        their outputs, once for every shard."""
        return (self.workdir / self.name).resolve()

    @functools.cached_property
    def model_dir(self) -> Path:
        """Where this run's stages write: the shared directory, or a shard's own under it."""
        return self.shard_dir(self.shard) if self.shard else self.shared_dir

    def shard_dir(self, shard: Shard) -> Path:
        """Where shard `shard` of this model writes its sample-dependent stages."""
        return self.shared_dir / "shards" / shard.name

    def for_shard(self, shard: Shard | None) -> "Run":
        """This run as shard `shard` (None: unsharded), everything else the same."""
        return Run(self.loaded, replace(self.options, shard=shard), self.runtime_name, self.bs, self.workdir, self.extra_patch_dirs)

    @functools.cached_property
    def state(self) -> StateStore:
        return StateStore(self.model_dir)

    @functools.cached_property
    def unsharded(self) -> "Run":
        """This run without the shard: the one that owns the shared stages."""
        return self.for_shard(None) if self.shard else self

    def shared_path(self, relative: str) -> Path:
        """An output of a shared stage (the model, the weights record, the checkout)."""
        return self.shared_dir / relative

    @functools.cached_property
    def plugin(self) -> ModuleType:
        return load_plugin(self.recipe.plugin, self.loaded.directory)

    @functools.cached_property
    def _settings(self) -> dict[str, Any]:
        return {}

    def settings(self, kind: str):
        """The plugin's Settings for a stage kind (dataset, preprocess, eval, export), built once
        per run: the recipe's params merged with the stage's (and the chosen export path's)."""
        if kind not in self._settings:
            path = self.export_path[1] if kind == "export" else None
            self._settings[kind] = stage_settings(self.loaded, self.plugin, kind, path)
        return self._settings[kind]

    @functools.cached_property
    def views(self) -> tuple[str | None, ...]:
        return plugin_views(self.plugin)

    def inputs_dir(self, view: str | None) -> str:
        """Relative directory of one view's preprocessed inputs (one subdirectory per model input)."""
        return f"inputs/{view}" if view else "inputs"

    def inputs_arg(self, view: str | None, root: Path | None = None) -> str:
        """`{inputs}`: one view's input directories under `root` (the model directory, or a
        chunk's), comma-separated in model input order, as ais_bench and msame take them."""
        base = (root or self.model_dir) / self.inputs_dir(view)
        return ",".join(str(base / spec.name) for spec in self.recipe.model.inputs)

    @property
    def input_shape(self) -> str:
        """`{input_shape}`: atc's --input_shape value, `name:bs,d1,d2,...` per model input, `;` between."""
        return ";".join(f"{spec.name}:{','.join(map(str, [self.bs, *spec.shape]))}" for spec in self.recipe.model.inputs)

    @property
    def chunked(self) -> bool:
        """Files mode one chunk of samples at a time (the recipe's infer.chunk)."""
        infer = self.recipe.stages.infer
        return bool(infer and infer.chunk) and not self.options.stream

    @functools.cached_property
    def soc_version(self) -> str:
        if self.options.soc_version != "auto":
            return self.options.soc_version
        from .tools.npu_smi import detect_soc_version

        return detect_soc_version()

    @functools.cached_property
    def cann(self) -> str:
        """Whose ATC op table the atc preflight and the fake atc use (atc_ops)."""
        from .atc_ops import chosen_cann

        return chosen_cann(self.options.cann)

    def stage_key(self, kind: str, variant: str | None = None) -> str:
        """A stage's record name; per-bs stages carry the bs and their variant (target or tool).
        Also a file name (logs, staging): only characters ais_bench accepts in paths."""
        return f"{kind}-bs{self.bs}-{variant}" if variant else kind

    def path(self, relative: str) -> Path:
        return self.model_dir / relative

    def log_path(self, key: str) -> Path:
        return self.model_dir / "logs" / f"{key}.log"

    def staging_dir(self, key: str) -> Path:
        """Where stage `key` writes its outputs before the runner renames them into place."""
        return self.model_dir / ".staging" / key

    def recipe_files(self, args: list[str]) -> dict[str, str]:
        """Digests of files beside the recipe that tool args name ({recipe_dir}/...): editing
        e.g. the fusion switch file must rerun atc."""
        digests = {}
        for arg in args:
            if "{recipe_dir}" in arg:
                path = arg.split("{recipe_dir}", 1)[1].lstrip("/")
                file = self.loaded.directory / path
                if not file.is_file():
                    raise UserError(f"{arg}: {file} does not exist", hint="files named with {recipe_dir} ship beside the recipe")
                digests[f"recipe_dir/{path}"] = self.state.file_digest(file)
        return digests

    def plugin_source_digest(self) -> str:
        """Plugin code is an input of the stages that call it: editing it, or a module it
        imports relatively (its postprocessing, its metric), reruns them."""
        source = getattr(self.plugin, "__file__", None)
        if not source:
            return "builtin"
        return digest_of({str(path): self.state.file_digest(path) for path in plugin_files(Path(source))})

    # Artifact names carry the batch size (and target) so a bs sweep reuses everything else.
    def onnx_name(self, simplified: bool) -> str:
        return f"onnx/{self.name}_bs{self.bs}.{self.target}{'.sim' if simplified else ''}.onnx"

    @property
    def om_name(self) -> str:
        return f"om/{self.name}_bs{self.bs}.om"

    @property
    def infer_name(self) -> str:
        return f"infer/{self.runtime.name}_bs{self.bs}{self.precision_suffix}"

    @property
    def mode_suffix(self) -> str:
        """Streaming results sit beside the files mode's, not over them."""
        return "_stream" if self.options.stream else ""

    @property
    def precision_suffix(self) -> str:
        """The emulated-fp16 preview's outputs and results sit beside the fp32 ones, not over them."""
        return "_fp16" if self.options.precision == "fp16" else ""

    def result_name(self, what: str) -> str:
        return f"results/{what}_{self.runtime.name}_bs{self.bs}{self.mode_suffix}{self.precision_suffix}.json"

    @property
    def model_onnx(self) -> str:
        """The ONNX file that atc / ONNX Runtime consume: simplified when the recipe simplifies."""
        return self.onnx_name(simplified=self.recipe.stages.simplify is not None)

    def variables(self, view: str | None = None, **extra: Any) -> dict[str, Any]:
        """Template variables for tool argv (recipe.TEMPLATE_VARIABLES), with paths as strings."""
        values = {
            "bs": self.bs,
            "model": self.name,
            "work": str(self.model_dir),
            "recipe_dir": str(self.loaded.directory),
            "source": str(self.shared_path("src")),
            "data": str(self.options.data or ""),
            "onnx": str(self.shared_path(self.model_onnx)),
            "om": str(self.shared_path(self.om_name)),
            "inputs": self.inputs_arg(view),
            "input_shape": self.input_shape,
        }
        values.update(extra)
        return values


def plugin_files(module_file: Path) -> list[Path]:
    """The plugin module and, transitively, the modules it imports with relative imports
    (`from .centernet_dcn import ...`, `from ..metrics.coco_bbox import ...`)."""
    import ast

    seen: set[Path] = set()
    todo = [module_file.resolve()]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                parts = (node.module or "").split(".") if node.module else []
                target = base.joinpath(*parts)
                candidates = [target.with_suffix(".py"), target / "__init__.py"]
                candidates += [target / f"{alias.name}.py" for alias in node.names]  # from . import x
                todo.extend(c for c in candidates if c.is_file())
    return sorted(seen)

