"""The model plugin interface: what a recipe's `plugin:` module must export.

A plugin is a plain module (as pre-commit's language modules are): no base class, no registry.
The runner calls these functions; everything model-specific lives behind them, everything
generic (files, batching, tools, caching) lives in the runner.

    Settings
        A frozen dataclass: the `params:` the plugin reads, each field with its default. The
        framework checks every `params:` block of the recipe against it (an unknown key or a bad
        value is a file:line error, in `ompipe validate` and before any stage runs), and builds
        it once per run and stage: the recipe's `params:` merged with the stage's own `params:`
        (and, for export, the chosen export path's). Checks across fields go in `__post_init__`.
        A plugin without one takes no params.
    list_samples(data: Path, settings: Settings) -> list[Sample]
        The dataset in a stable order. `--limit N` keeps the first N (a named, stable subset).
    preprocess(sample: Sample, settings: Settings) -> list[np.ndarray]
        One array per model input, shaped as the recipe's input shape without the batch axis.
    export(ctx: ExportContext) -> None
        Writes ctx.out (ONNX) for ctx.target ("ascend" or "onnxruntime") at batch size ctx.bs.
    evaluator(data: Path, settings: Settings) -> Evaluator
        Accumulates per-sample outputs and computes the metrics.

Optional: `torch_forward(ctx: ExportContext) -> callable(list[np.ndarray]) -> list[np.ndarray]`,
the PyTorch model as exported, the first rung of the golden comparison (the compare stage).

Optional: `random_checkpoint(ctx: ExportContext) -> Path`, the seeded random weights
(`--weights random`) written beside ctx.out as the checkpoint file an export path's `command:`
reads (the export stage deletes it after), so that command exports the same network as the
plugin's own export.

Optional: `reduce_outputs(outputs: list[np.ndarray]) -> list[np.ndarray]`, what the evaluator
needs of one sample's outputs when that is much smaller than the outputs (PointRend: the argmax
of 19 x 1024 x 2048 float logits, 152 MiB, is a 2 MiB uint8 map). It is applied before the
evaluator in every mode, so the evaluator always sees reduced outputs; with `infer.chunk` the
infer stage keeps only them (`<id>_<i>.npy`) and deletes each chunk's raw outputs.

Views (optional): a plugin whose guide runs inference more than once per sample, e.g.
TransPose's flip test (normal and flipped inputs, two ais_bench runs), sets
`VIEWS = ("normal", "flip")`. Then `preprocess` returns {view: [arrays]}, the infer stage runs
once per view (`inputs/<view>/...`, `infer/<backend>_bs<N>/<view>/`), and the evaluator's
`add` receives {view: [outputs]}.

Shards (`--shard I/N`, `ompipe merge`): every evaluator is mergeable (see `Evaluator`), and
a plugin whose metric needs several samples together (HPatches scores pairs of images of one
sequence) exports `shard_key(sample) -> str`, the name samples are partitioned by (default:
the sample id), so those samples land in one shard.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import sys
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from .errors import UserError
from .state import JsonText  # noqa: F401  (plugin API: an artifact already serialised)

SAMPLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
REQUIRED_FUNCTIONS = ("list_samples", "preprocess", "export", "evaluator")


@dataclass(frozen=True)
class Sample:
    """One dataset item. `id` names its files (`<id>.bin`, `<id>_<i>.bin`), so it must be unique,
    stable and file-name safe: letters, digits, `_` and `-`, no dot (ais_bench cuts the stem at
    the first dot)."""

    id: str
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not SAMPLE_ID.match(self.id):
            raise ValueError(f"sample id {self.id!r} is not file-name safe ([A-Za-z0-9_-], no dot)")


@dataclass(frozen=True)
class ExportContext:
    source: Path  # the patched upstream checkout
    weights: Path | None  # None means random weights (`--weights random`)
    target: str  # "ascend" or "onnxruntime"
    bs: int
    out: Path  # write the ONNX file here
    opset: int
    input_names: Sequence[str]
    output_names: Sequence[str]
    settings: Any  # the plugin's Settings for the export stage
    seed: int = 0  # for random weights: the same seed gives the same model
    export_path: str | None = None  # which of the recipe's export paths runs (None: it declares none)


class Evaluator(Protocol):
    def add(self, sample: Sample, outputs: list[np.ndarray]) -> None: ...

    def result(self) -> dict[str, float]: ...

    # Mergeable, for shards: state() is the partial state of the samples added so far, JSON-ready
    # (numbers exact through a JSON round trip: `encode_array` for arrays); merge() takes in the
    # states of shards as if add() had been called for every sample they hold, in `order` (the
    # dataset's sample ids), so result() then equals one run's over all samples digit for digit.
    # Order-free partial results (confusion matrices) are summed; order-dependent ones (COCO
    # result lists, float sums) are kept per sample and replayed in `order`.
    def state(self) -> dict[str, Any]: ...

    def merge(self, states: Sequence[dict[str, Any]], order: Sequence[str]) -> None: ...

    # Optional, called after result(): JSON-ready things worth keeping, e.g. {"coco_results": [...]},
    # written to results/eval_<tool>_bs<N>/<name>.json; a JsonText value is written as it is.
    # def artifacts(self) -> dict[str, Any]: ...


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """An array as JSON-ready values that decode to the same array, dtype and bits included
    (float32 values are exact as Python floats)."""
    array = np.asarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "values": array.ravel().tolist()}


def decode_array(encoded: dict[str, Any]) -> np.ndarray:
    return np.array(encoded["values"], dtype=np.dtype(encoded["dtype"])).reshape(encoded["shape"])


def per_sample_entries(states: Sequence[dict[str, Any]], key: str, order: Sequence[str]) -> list[tuple[str, Any]]:
    """The per-sample entries `state[key]` ({sample id: entry}) of several partial states, in
    `order`. A sample held by two states, or one `order` does not know, is a ValueError."""
    entries: dict[str, Any] = {}
    for state in states:
        for sample_id, entry in state[key].items():
            if sample_id in entries:
                raise ValueError(f"sample {sample_id} is in two partial states")
            entries[sample_id] = entry
    unknown = set(entries) - set(order)
    if unknown:
        raise ValueError(f"partial states hold samples outside the merge order: {', '.join(sorted(unknown)[:5])}")
    return [(sample_id, entries[sample_id]) for sample_id in order if sample_id in entries]


def shard_key(plugin: ModuleType, sample: Sample) -> str:
    """What `plugin`'s samples are partitioned by: its `shard_key(sample)`, else the sample id."""
    key = getattr(plugin, "shard_key", None)
    return str(key(sample)) if key else sample.id


@contextmanager
def imported_from(source: Path, marker: str) -> Iterator[None]:
    """Import upstream's top-level modules (`models`, `utils`, `lib`, ...) from the checkout
    `source`, and leave sys.path and sys.modules as they were afterwards: those names are
    generic, and another checkout (or another model's) must not get these. `marker` is a file
    the checkout must have (a clear error instead of an ImportError deep inside)."""
    source = Path(source)
    if not (source / marker).is_file():
        raise UserError(f"{source} is not the expected upstream checkout (no {marker})")
    top_level = {p.stem for p in source.iterdir() if p.is_dir() or p.suffix == ".py"}

    def ours(name: str) -> bool:
        return name.split(".")[0] in top_level

    shadowed = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in shadowed:
        del sys.modules[name]
    sys.path.insert(0, str(source))
    try:
        yield
    finally:
        sys.path.remove(str(source))
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(shadowed)


@dataclass(frozen=True)
class NoSettings:
    """The settings of a plugin that declares none: its recipe takes no `params:`."""


def settings_type(plugin: ModuleType) -> type:
    """The plugin's Settings dataclass (NoSettings when it declares none)."""
    return getattr(plugin, "Settings", NoSettings)


def setting_names(cls) -> list[str]:
    return [spec.name for spec in fields(cls)]


def converted_setting(cls, name: str, value: Any) -> Any:
    """`value` as the type of the field's default (a list to a tuple, its items to float where
    the default's are); TypeError / ValueError when it does not convert."""
    default = next(spec.default for spec in fields(cls) if spec.name == name)
    if isinstance(default, tuple):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"expected a list like {list(default)}")
        items = tuple(value)
        return tuple(float(v) for v in items) if default and isinstance(default[0], float) else items
    if isinstance(default, bool) and not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value if default is None or default is MISSING else type(default)(value)


def settings_from_params(cls, params: dict[str, Any]):
    """A plugin's Settings from a merged `params` mapping: an unknown key or a value that does not
    convert is a UserError naming the key (the recipe checks give the same with file:line)."""
    names = setting_names(cls)
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise UserError(f"params.{unknown[0]}: unknown setting", hint=f"known settings: {', '.join(names) or 'none'}")
    values = {}
    for name, value in params.items():
        try:
            values[name] = converted_setting(cls, name, value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"params.{name} = {value!r} is not valid: {exc}") from exc
    return cls(**values)


def stage_settings(loaded, plugin: ModuleType, kind: str, export_path=None):
    """The plugin's Settings for one stage kind of a loaded recipe: the recipe's `params:` merged
    with the stage's own (and, for export, with `export_path`'s)."""
    params = loaded.recipe.stage_params(kind)
    if export_path is not None:
        params = {**params, **export_path.params}
    return settings_from_params(settings_type(plugin), params)


def params_blocks(recipe) -> Iterator[tuple[tuple, dict[str, Any]]]:
    """(location, mapping) of every `params:` block in a recipe."""
    yield ("params",), recipe.params
    for kind in ("preprocess", "eval", "export"):
        stage = getattr(recipe.stages, kind)
        if stage is not None:
            yield ("stages", kind, "params"), stage.params
    for name, path in recipe.stages.export.paths.items():
        yield ("stages", "export", "paths", name, "params"), path.params


def check_settings(loaded, plugin: ModuleType) -> None:
    """Every `params:` block of the recipe against the plugin's Settings: each unknown key or bad
    value one `file:line` problem, then the merged settings of each stage (the checks across
    fields in Settings.__post_init__). `loaded` is a recipe.LoadedRecipe."""
    cls = settings_type(plugin)
    names = setting_names(cls)
    problems = []
    for loc, block in params_blocks(loaded.recipe):
        for key, value in block.items():
            where = loaded.where((*loc, key))
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                problems.append(f"{where}: unknown setting of {loaded.recipe.plugin}"
                                + (f" (did you mean {close[0]}?)" if close else ""))
                continue
            try:
                converted_setting(cls, key, value)
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}: {value!r} is not valid: {exc}")
    if not problems:
        export = loaded.recipe.stages.export
        paths = list(export.paths.values()) or [None]
        for kind, path in [(k, None) for k in ("dataset", "preprocess", "eval")] + [("export", p) for p in paths]:
            try:
                stage_settings(loaded, plugin, kind, path)
            except UserError as exc:
                problems.append(f"{loaded.where(('params',))}: {exc.message}")
    if problems:
        problems = list(dict.fromkeys(problems))  # a check across fields fails for every stage alike
        raise UserError(f"{loaded.where()}: {len(problems)} problem(s) in the recipe's params", details=problems,
                        hint=f"known settings of {loaded.recipe.plugin} (its Settings): {', '.join(names) or 'none'}")


def chosen_export_path(ctx: "ExportContext", known: tuple[str, ...], default: str = "native") -> str:
    """The export path the recipe chose, checked against the paths this plugin implements."""
    path = ctx.export_path or default
    if path not in known:
        raise UserError(f"export_path {path!r} is not one of {', '.join(known)}")
    return path


def tuple_outputs(network, pick):
    """Wrap an upstream network whose forward returns a dict or list of heads so the ONNX
    exporter sees a tuple: `pick(forward output) -> tuple`, in the recipe's output order."""
    import torch  # only export paths call this

    class TupleOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, *inputs):
            return tuple(pick(self.network(*inputs)))

    return TupleOutputs()


def numpy_forward(model):
    """A torch module as the compare stage calls a rung: numpy arrays (one per model input) in,
    a list of numpy outputs out, no autograd. What a plugin's `torch_forward(ctx)` returns."""
    import torch

    def forward(arrays: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            outputs = model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return [o.numpy() for o in (outputs if isinstance(outputs, (tuple, list)) else [outputs])]

    return forward


def reduced(plugin: ModuleType, outputs):
    """`outputs` (a list of arrays, or {view: list} for a plugin with views) through the plugin's
    optional `reduce_outputs`."""
    reduce = getattr(plugin, "reduce_outputs", None)
    if reduce is None:
        return outputs
    if isinstance(outputs, dict):
        return {view: [np.asarray(a) for a in reduce(per_view)] for view, per_view in outputs.items()}
    return [np.asarray(a) for a in reduce(outputs)]


def plugin_views(plugin: ModuleType) -> tuple[str | None, ...]:
    """The plugin's views, or (None,) for the usual single pass."""
    views = tuple(getattr(plugin, "VIEWS", ()) or ())
    for view in views:
        if not SAMPLE_ID.match(view):
            raise UserError(f"plugin view {view!r} is not a file-name safe name")
    return views or (None,)


def load_plugin(spec: str, recipe_dir: Path | None = None) -> ModuleType:
    """`spec` is a module path (`om_pipeline.models.superpoint`) or a file next to the recipe
    (`file:my_model.py`), so users can add models without forking ompipe."""
    if spec.startswith("file:"):
        path = (recipe_dir or Path.cwd()) / spec[len("file:"):]
        if not path.is_file():
            raise UserError(f"plugin file {path} does not exist", hint="plugin: file:<name>.py is relative to the recipe")
        module_spec = importlib.util.spec_from_file_location(f"ompipe_plugin_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module  # dataclasses (a plugin's Settings) look their module up there
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            raise UserError(f"plugin module {spec!r} cannot be imported: {exc}") from exc
    missing = [name for name in REQUIRED_FUNCTIONS if not callable(getattr(module, name, None))]
    if missing:
        raise UserError(f"plugin {spec!r} lacks {', '.join(missing)}", hint=f"a plugin exports {', '.join(REQUIRED_FUNCTIONS)}")
    return module
