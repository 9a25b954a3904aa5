"""The model plugin interface: what a recipe's `plugin:` module must export.

A plugin is a plain module (as pre-commit's language modules are): no base class, no registry.
The runner calls these functions; everything model-specific lives behind them, everything
generic (files, batching, tools, caching) lives in the runner.

    list_samples(data: Path, params: dict) -> list[Sample]
        The dataset in a stable order. `--limit N` keeps the first N (a named, stable subset).
    preprocess(sample: Sample, params: dict) -> list[np.ndarray]
        One array per model input, shaped as the recipe's input shape without the batch axis.
    export(ctx: ExportContext) -> None
        Writes ctx.out (ONNX) for ctx.target ("ascend" or "onnxruntime") at batch size ctx.bs.
    evaluator(data: Path, params: dict) -> Evaluator
        Accumulates per-sample outputs and computes the metrics.

`params` is the recipe's `params:` mapping merged with the stage's own `params:`.

Optional: `torch_forward(ctx: ExportContext) -> callable(list[np.ndarray]) -> list[np.ndarray]`,
the PyTorch model as exported, the first rung of the golden comparison (the compare stage).

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

import importlib
import importlib.util
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from .errors import UserError

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
    params: dict[str, Any]
    seed: int = 0  # for random weights: the same seed gives the same model


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
    # written to results/eval_<tool>_bs<N>/<name>.json.
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


def settings_from_params(cls, params: dict[str, Any], model: str):
    """A plugin's settings dataclass from `params`: known keys only (`params` also carries other
    stages' settings), each converted to its default's type (a list to a tuple), a bad value a
    UserError naming the key."""
    values = {}
    for spec in fields(cls):
        if spec.name not in params:
            continue
        default, value = getattr(cls, spec.name), params[spec.name]
        try:
            values[spec.name] = tuple(value) if isinstance(default, tuple) else type(default)(value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"params.{spec.name} = {value!r} is not valid for {model}: {exc}") from exc
    return cls(**values)


def chosen_export_path(ctx: "ExportContext", known: tuple[str, ...], default: str = "native") -> str:
    """The export path the recipe chose (the export stage puts its name in params), checked
    against the paths this plugin implements."""
    path = ctx.params.get("export_path", default)
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
