"""Recipes: the versioned schema, loading with file:line errors, discovery and templating.

A recipe is data: what a guide says, nothing else. One file per model; every stage the guide
runs is listed under `stages:` in the guide's order. Unknown keys are errors, commands are argv
lists, and every `{variable}` must be one ompipe knows (checked at load time, not at run time).
"""
from __future__ import annotations

import functools
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError

SCHEMA_VERSION = 1
RECIPES_ENV = "OMPIPE_RECIPES"

# Every variable a recipe may use, with what it expands to. A closed set: a typo is a load error.
TEMPLATE_VARIABLES = {
    "bs": "the batch size of this run",
    "model": "the recipe name",
    "work": "the model's work directory",
    "recipe_dir": "the directory holding the recipe (for files shipped beside it, e.g. a fusion switch file)",
    "source": "the patched upstream checkout",
    "data": "the dataset directory",
    "soc_version": "the Ascend chip, e.g. Ascend310P3 (from npu-smi unless --soc-version)",
    "onnx": "the ONNX file given to atc (simplified when the recipe simplifies)",
    "om_stem": "atc --output: the .om path without its suffix",
    "om": "the compiled .om model",
    "inputs": "the preprocessed input directories, comma-separated in model input order",
    "output": "the directory the inference tool writes its results into",
    "input_shape": "atc --input_shape from model.inputs at this batch size, e.g. image:{bs},1,240,320 (';' between inputs)",
    "weights": "the checkpoint file an export path's command reads (--weights random: the plugin's random_checkpoint)",
    "export_onnx": "the ONNX file an export path's command writes",
}
# Flags whose value is a path the tool writes: they must come from ompipe's variables.
OUTPUT_FLAGS = ("--output", "-o")
# A directory name under --output (ais_bench): a plain name, no path.
NAME_FLAGS = ("--output_dirname",)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_path(value: str) -> str:
    """Recipe-given paths stay inside the directory they are relative to."""
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value.strip():
        raise ValueError(f"must be a relative path without '..' (got {value!r})")
    return value


class TensorSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
    shape: list[int] = Field(description="per-sample shape, without the batch axis")
    dtype: Literal["float32", "float16", "int32", "int64", "uint8", "bool"] = "float32"

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: list[int]) -> list[int]:
        if not shape or any(d <= 0 for d in shape):
            raise ValueError("every dimension must be a positive integer")
        return shape


class ModelIO(Strict):
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1, description="the outputs of the graph atc compiles (target ascend)")
    target_outputs: dict[Literal["onnxruntime"], list[TensorSpec]] = Field(
        {}, description="outputs of another target's graph when they differ (e.g. before an Ascend-only NMS op)")

    def outputs_for(self, target: str) -> list[TensorSpec]:
        return self.target_outputs.get(target, self.outputs)


class CloneStage(Strict):
    repo: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$", description="the full 40-hex commit the guide resets to")


class PatchStage(Strict):
    files: list[str] = Field(min_length=1, description="unified diffs, relative to a patches directory")
    strip: int = Field(1, ge=0, description="-p level for git apply / patch")
    fuzz: int = Field(0, ge=0, description="fuzz for the GNU patch fallback (some guides' patches need it)")

    _paths = field_validator("files")(lambda cls, v: [_relative_path(p) for p in v])


class Download(Strict):
    url: str
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$")
    # Shown by the dry run ("would download URL (X MB)"); informative: the stages leave it out of their fingerprints.
    size: Optional[int] = Field(None, gt=0, description="bytes, for the dry run's 'would download' line")


class WeightsStage(Strict):
    file: str = Field(description="file name of the checkpoint")
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$")
    in_source: Optional[str] = Field(None, description="path of the checkpoint inside the upstream checkout")
    git_blob: Optional[str] = Field(None, pattern=r"^[0-9a-f]{40}$", description="git blob id of in_source")
    urls: list[str] = []
    size: Optional[int] = Field(None, gt=0, description="bytes of the download, for the dry run's 'would download' line")
    unpinned_reason: str = Field("", description="why neither a sha256 nor a git_blob can be given (no public checksum); the file is then recorded, not verified")
    instructions: str = ""

    _file = field_validator("file", "in_source")(lambda cls, v: v if v is None else _relative_path(v))

    @model_validator(mode="after")
    def _pinned(self) -> "WeightsStage":
        if not (self.sha256 or self.git_blob or self.unpinned_reason.strip()):
            raise ValueError("weights need a sha256 or a git_blob to verify them (or unpinned_reason: why none exists)")
        if self.git_blob and not self.in_source:
            raise ValueError("git_blob verifies in_source: give in_source too")
        return self


class DatasetStage(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    required: list[str] = Field(min_length=1, description="glob patterns relative to the dataset root; each must match")
    downloads: list[Download] = []
    archive_root: Optional[str] = Field(None, description="the dataset root inside the extracted downloads")
    instructions: str = ""

    _globs = field_validator("required")(lambda cls, v: [_relative_path(p) for p in v])


class ParamsStage(Strict):
    params: dict[str, Any] = {}


class ExportEnv(Strict):
    requirements: list[str] = Field(min_length=1)
    python: str = Field("python3", description="interpreter that creates the environment")
    install_source: bool = Field(False, description="pip install --no-build-isolation -e <checkout> into it")


class ExportPath(Strict):
    """One way to export, e.g. the guide's own script in its stack, or a native re-implementation."""

    source: bool = Field(True, description="needs the patched upstream checkout; false skips clone and patch")
    env: Optional[ExportEnv] = None
    command: Optional[list[str]] = Field(
        None, min_length=1,
        description="argv of the export instead of the plugin's export(), e.g. the guide's script; run in the checkout, in env "
                    "(its bin/ first on PATH, so `python` is its interpreter); templated like atc args")
    params: dict[str, Any] = {}


class ExportStage(ParamsStage):
    opset: int = Field(11, ge=7, le=23)
    env: Optional[ExportEnv] = None
    path: Optional[str] = Field(None, description="which of `paths` runs (default: the first); --export-path overrides")
    paths: dict[str, ExportPath] = {}

    @model_validator(mode="after")
    def _path(self) -> "ExportStage":
        if self.path is not None and self.path not in self.paths:
            raise ValueError(f"path {self.path!r} is not one of paths ({', '.join(self.paths) or 'none declared'})")
        return self

    def chosen_path(self, override: str | None) -> tuple[str | None, ExportPath]:
        name = override or self.path or next(iter(self.paths), None)
        if name is None:
            return None, ExportPath(env=self.env)
        if name not in self.paths:
            raise UserError(f"export path {name!r} is not one of this recipe's: {', '.join(self.paths) or 'none'}")
        return name, self.paths[name]


class SimplifyStage(Strict):
    tool: Literal["onnxsim", "onnxslim"] = "onnxsim"


def _timeout_field():
    """A tool that hangs (atc has, for hours, on some graphs) is stopped after this many seconds
    (each time it runs). Not an input of the stage: changing it reruns nothing."""
    return Field(None, gt=0, description="seconds before the tool is stopped and the stage fails (default: no limit)")


class ToolStage(Strict):
    args: list[str] = Field(min_length=1, description="argv after the program name; no shell")
    timeout: Optional[float] = _timeout_field()


class InferTool(Strict):
    """The .om runs through ais_bench (`args`) or msame (`msame_args`); `tool` is the guide's
    choice, `--runtime` overrides it (om_pipeline.runtimes)."""

    tool: Literal["ais_bench", "msame"] = "ais_bench"
    args: list[str] = Field(min_length=1, description="python -m ais_bench argv; no shell")
    msame_args: Optional[list[str]] = Field(None, min_length=1, description="msame argv; no shell")
    timeout: Optional[float] = _timeout_field()

    @model_validator(mode="after")
    def _args_of_the_tool(self) -> "InferTool":
        field = ARGS_OF_TOOL[self.tool]
        if not getattr(self, field):
            raise ValueError(f"tool {self.tool} needs {field}")
        return self


ARGS_OF_TOOL = {"ais_bench": "args", "msame": "msame_args"}  # InferTool's field for each tool's argv


class AtcStage(ToolStage):
    precision_mode: str = Field("force_fp16", description="ATC's default; stated so it is recorded")


class Tolerance(Strict):
    cosine: float = Field(0.99, ge=-1, le=1, description="each output's cosine similarity must reach this")
    rel_l2: Optional[float] = Field(None, gt=0, description="and its relative L2 error stay below this")


class CompareStage(Strict):
    samples: int = Field(4, ge=1, description="how many dataset samples make the golden inputs")
    tolerance: Tolerance = Tolerance()
    fp16_tolerance: Optional[Tolerance] = Field(
        None, description="for the rungs that compute at fp16 (the .om under atc's force_fp16, emulated or on the "
                          "NPU; ONNX Runtime with --precision fp16); default: tolerance")


class InferStage(InferTool):
    chunk: Optional[int] = Field(
        None, ge=1,
        description="samples per chunk: preprocess, infer and reduce (the plugin's reduce_outputs) one chunk at a "
                    "time, so the inputs and raw outputs of the whole dataset never sit on disk at once")


class PerfStage(InferTool):
    loop: int = Field(20, ge=1, description="repetitions for the ONNX Runtime backend's statistics")


class Stages(Strict):
    clone: Optional[CloneStage] = None
    patch: Optional[PatchStage] = None
    weights: Optional[WeightsStage] = None
    dataset: Optional[DatasetStage] = None
    preprocess: Optional[ParamsStage] = None
    export: ExportStage
    simplify: Optional[SimplifyStage] = None
    atc: Optional[AtcStage] = None
    compare: Optional[CompareStage] = None
    infer: Optional[InferStage] = None
    eval: Optional[ParamsStage] = None
    perf: Optional[PerfStage] = None

    @model_validator(mode="after")
    def _consistent(self) -> "Stages":
        needs = {"patch": "clone", "preprocess": "dataset", "infer": "preprocess", "eval": "infer", "compare": "dataset"}
        for stage, required in needs.items():
            if getattr(self, stage) is not None and getattr(self, required) is None:
                raise ValueError(f"stage {stage} needs stage {required}")
        return self


class Reference(Strict):
    metric: str
    value: float
    chip: Optional[str] = None
    source: str
    note: str = ""


class References(Strict):
    accuracy: list[Reference] = []
    fps: dict[str, dict[int, float]] = Field({}, description="chip -> batch size -> fps, from the guide")
    fps_source: str = ""


class Recipe(Strict):
    schema_version: Literal[1]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title: str
    guide: str = Field(description="where the steps come from")
    plugin: str
    params: dict[str, Any] = {}
    model: ModelIO
    batch_sizes: list[int] = Field(min_length=1)
    default_bs: Optional[int] = None
    stages: Stages
    reference: References = References()

    @model_validator(mode="after")
    def _default_bs(self) -> "Recipe":
        if self.default_bs is not None and self.default_bs not in self.batch_sizes:
            raise ValueError(f"default_bs {self.default_bs} is not one of batch_sizes {self.batch_sizes}")
        return self

    @property
    def bs(self) -> int:
        return self.default_bs or self.batch_sizes[0]

    def stage_params(self, kind: str) -> dict[str, Any]:
        stage = getattr(self.stages, kind, None)
        return {**self.params, **(getattr(stage, "params", None) or {})}


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path
    text: str

    @property
    def directory(self) -> Path:
        return self.path.parent

    @functools.cached_property
    def _lines(self) -> dict[tuple, int]:
        node = yaml.compose(self.text, Loader=yaml.SafeLoader)
        return dict(_line_map(node)) if node is not None else {}

    def where(self, loc: tuple = ()) -> str:
        """`file:line field.path` of a place in the recipe (the file alone for the whole recipe)."""
        if not loc:
            return _display(self.path)
        return f"{_display(self.path)}:{_line_of(self._lines, loc)} {_format_loc(loc)}"


# ---------------------------------------------------------------- loading, with file:line errors


def _line_map(node: yaml.Node, path: tuple = ()) -> Iterator[tuple[tuple, int]]:
    """(field path, 1-based line) for every node, so a pydantic error location gets a line."""
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield path + (key.value,), key.start_mark.line + 1
            yield from ((p, line) for p, line in _line_map(value, path + (key.value,)) if p != path + (key.value,))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _line_map(item, path + (index,))


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    while loc and loc not in lines:
        loc = loc[:-1]  # a missing key: point at its parent
    return lines.get(loc, 1)


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# Limits of what a recipe may be (the shipped recipes have at most ~300 nodes, nested 9 deep):
# a hostile or broken file is refused while it is read, before anything walks or expands it.
MAX_NODES = 50_000
MAX_DEPTH = 64


class RecipeSyntaxError(yaml.MarkedYAMLError):
    """YAML that a recipe may not use: aliases, duplicate keys, too many nodes, deep nesting."""


class RecipeLoader(yaml.SafeLoader):
    """The safe loader, refusing while it composes what no recipe needs and what would let a
    small file grow without bound: aliases (a 2 KB 'billion laughs' file expands to GBs), more
    than MAX_NODES nodes, nesting deeper than MAX_DEPTH (the composer recurses), and duplicate
    keys (the last one would silently win)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise RecipeSyntaxError(problem=f"YAML aliases (*{event.anchor}) are not allowed in recipes: write the value out",
                                    problem_mark=event.start_mark)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RecipeSyntaxError(problem=f"more than {MAX_NODES} YAML nodes: too large for a recipe", problem_mark=event.start_mark)
        if self.depth >= MAX_DEPTH:
            raise RecipeSyntaxError(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        first_line: dict[tuple, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = first_line.setdefault((key.tag, key.value), key.start_mark.line + 1)
                if line != key.start_mark.line + 1:
                    raise RecipeSyntaxError(problem=f"duplicate key {key.value!r} (first at line {line})", problem_mark=key.start_mark)
        return node


def load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """(composed node, for line numbers; its data), read once with RecipeLoader."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def parse_recipe(text: str, path: Path) -> Recipe:
    where = _display(path)
    try:
        node, data = load_yaml(text)
    except RecipeSyntaxError as exc:
        raise UserError(f"{where}:{exc.problem_mark.line + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{where}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}:1: a recipe is a mapping (schema_version, name, stages, ...)")
    lines = dict(_line_map(node)) if node is not None else {}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(
            f"{where}: {exc.error_count()} problem(s) in the recipe",
            details=[_describe(error, lines, where) for error in exc.errors()],
            hint="see recipes/README.md for the recipe format; `ompipe validate FILE` checks a recipe",
        ) from None
    problems = [f"{where}:{_line_of(lines, loc)} {_format_loc(loc)}: {msg}" for loc, msg in _template_problems(recipe)]
    if problems:
        raise UserError(f"{where}: {len(problems)} problem(s) in the recipe", details=problems,
                        hint=f"known variables: {', '.join('{' + v + '}' for v in TEMPLATE_VARIABLES)}")
    return recipe


def _describe(error: dict, lines: dict[tuple, int], where: str) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (not part of schema version 1)"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] == "literal_error" and loc == ("schema_version",):
        message = f"this ompipe reads schema_version {SCHEMA_VERSION}; got {error.get('input')!r}"
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return f"{where}:{_line_of(lines, loc)} {_format_loc(loc)}: {message}"


def _template_problems(recipe: Recipe) -> Iterator[tuple[tuple, str]]:
    for kind in ("atc", "infer", "perf"):
        stage = getattr(recipe.stages, kind)
        for field_name in ("args", "msame_args"):
            args = getattr(stage, field_name, None) or []
            yield from _variable_problems(("stages", kind, field_name), args)
            yield from _output_flag_problems(("stages", kind, field_name), args)
    for name, path in recipe.stages.export.paths.items():
        yield from _variable_problems(("stages", "export", "paths", name, "command"), path.command or [])


def _variable_problems(where: tuple, args: list[str]) -> Iterator[tuple[tuple, str]]:
    for index, arg in enumerate(args):
        try:
            names = template_names(arg)
        except ValueError as exc:
            yield (*where, index), str(exc)
            continue
        for name in names - TEMPLATE_VARIABLES.keys():
            yield (*where, index), f"unknown variable {{{name}}}"


def _output_flag_problems(where: tuple, args: list[str]) -> Iterator[tuple[tuple, str]]:
    """`--output=X` or `--output X`: X must start with one of ompipe's path variables;
    `--output_dirname X`: X must be a plain name (no '/', no '..')."""
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if flag not in OUTPUT_FLAGS + NAME_FLAGS:
            continue
        if not equals:
            index, value = index + 1, args[index + 1] if index + 1 < len(args) else ""
        if flag in NAME_FLAGS:
            if not value or "/" in value or ".." in value:
                yield (*where, index), f"{flag} must be a plain directory name (got {value!r})"
        elif not value.startswith("{") or ".." in value:
            yield (*where, index), (
                f"{flag} must be one of ompipe's paths ({{om_stem}}, {{output}}) so outputs stay in the work directory")


def template_names(text: str) -> set[str]:
    try:
        return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as exc:
        raise ValueError(f"bad template {text!r}: {exc}") from None


def render(text: str, variables: dict[str, Any]) -> str:
    """Expand `{name}`; only plain names (no attribute or index access from a recipe)."""
    for name in template_names(text):
        if not re.fullmatch(r"[a-z_]+", name):
            raise UserError(f"template {text!r}: only plain {{name}} variables are allowed")
    try:
        return text.format_map(variables)
    except KeyError as exc:
        raise UserError(f"template {text!r}: {{{exc.args[0]}}} has no value here",
                        hint="see the variables table in recipes/README.md for where each one applies") from None


def load_recipe_file(path: Path) -> LoadedRecipe:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read recipe {path}: {exc.strerror}") from None
    text = decode_recipe(raw, path)
    recipe = parse_recipe(text, path)
    if recipe.name != path.stem:
        raise UserError(f"{_display(path)}: name {recipe.name!r} must match the file name {path.stem!r}")
    return LoadedRecipe(recipe, path.resolve(), text)


def decode_recipe(raw: bytes, path: Path) -> str:
    """Recipes are UTF-8 (a BOM is fine); anything else is a file:line error naming the byte."""
    hint = "save the recipe as UTF-8"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:4096]:
        raise UserError(f"{_display(path)}:1: the recipe is UTF-16 (or binary), not UTF-8", hint=hint)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{_display(path)}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x})", hint=hint) from None


# ---------------------------------------------------------------- discovery


def builtin_recipe_dir() -> Path:
    from . import recipes  # the top-level recipes/ directory, shipped as a package

    return Path(recipes.__path__[0])


def builtin_patch_dirs() -> list[Path]:
    from . import patches

    return [Path(p) for p in patches.__path__]


def recipe_dirs(extra: list[Path] | None = None) -> list[Path]:
    """User directories first (so a user can override a shipped recipe), then the built-ins."""
    dirs = list(extra or [])
    dirs += [Path(p) for p in os.environ.get(RECIPES_ENV, "").split(os.pathsep) if p]
    return dirs + [builtin_recipe_dir()]


def discover(extra: list[Path] | None = None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in recipe_dirs(extra):
        for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def find_recipe(name_or_path: str, extra: list[Path] | None = None) -> LoadedRecipe:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_recipe_file(candidate)
    found = discover(extra)
    if name_or_path not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UserError(
            f"no recipe named {name_or_path!r}",
            hint=f"known recipes: {known}; add directories with --recipes DIR or {RECIPES_ENV}",
        )
    return load_recipe_file(found[name_or_path])


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
