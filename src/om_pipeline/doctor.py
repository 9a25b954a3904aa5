"""`ompipe doctor`: is this box ready? Each failing check comes with its fix."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import versions
from .context import Options
from .errors import UserError
from .recipe import LoadedRecipe
from .tools import execute
from .ui import Printer

SET_ENV = "source /usr/local/Ascend/ascend-toolkit/set_env.sh (CANN 8.5+: /usr/local/Ascend/cann/set_env.sh)"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def check_cann_env() -> Check:
    env = execute.subprocess_env()
    home = env.get("ASCEND_TOOLKIT_HOME") or env.get("ASCEND_HOME_PATH")
    opp = env.get("ASCEND_OPP_PATH")
    ok = bool(home and opp)
    detail = f"ASCEND_TOOLKIT_HOME={home or 'unset'}, ASCEND_OPP_PATH={opp or 'unset'}"
    return Check("CANN environment", ok, detail, SET_ENV, required=False)


def check_program(program: str, fix: str) -> Check:
    found = execute.which(program)
    return Check(program, found is not None, found or "not on PATH", fix)


def check_atc() -> Check:
    check = check_program("atc", SET_ENV)
    if check.ok:
        check.detail += f" (CANN {versions.cann()})"
    return check


def check_ais_bench() -> Check:
    from .runtimes.ais_bench import ais_bench_argv

    python = ais_bench_argv()[0]
    # The fake toolchain has no aclruntime; `import ais_bench` is what `python -m ais_bench` needs.
    outcome = execute.execute([python, "-c", "import ais_bench"])
    if outcome.ok:
        return Check("ais_bench", True, f"importable by {python}")
    return Check("ais_bench", False, f"not importable by {python}",
                 "install the aclruntime and ais_bench wheels (msit install benchmark), or set OMPIPE_AIS_BENCH_PYTHON to the Python that has them")


def check_soc(options: Options) -> Check:
    if options.soc_version != "auto":
        return Check("soc_version", True, f"{options.soc_version} (from --soc-version)")
    from .tools.npu_smi import detect_soc_version

    try:
        return Check("soc_version", True, f"{detect_soc_version()} (from npu-smi info)")
    except UserError as exc:
        return Check("soc_version", False, exc.message, exc.hint or "")


def check_workdir_path(options: Options) -> Check:
    """Current ais_bench refuses paths with characters outside [A-Za-z0-9_/.-] (ascend-tools.md 2.2)."""
    from .tools.ais_bench import illegal_path_characters

    path = str(options.workdir.resolve())
    bad = illegal_path_characters(path)
    return Check("work dir path", not bad, path + (f" has {bad!r}" if bad else ""),
                 "use a --workdir whose path has only letters, digits, _ / . -")


def check_packages() -> Check:
    found = versions.packages("torch", "onnx", "onnxruntime", "onnxsim", "numpy", "opencv-python-headless", "pycocotools")
    missing = [name for name, version in found.items() if version == "absent"]
    detail = ", ".join(f"{k} {v}" for k, v in found.items())
    return Check("python packages", not missing, detail, f"pip install {' '.join(missing)}" if missing else "")


def check_disk(loaded: LoadedRecipe, options: Options) -> Check:
    """Files mode writes every input and output as .bin: estimate it per sample (and for the
    dataset when its size is known) against the free space of the work directory. Chunked
    (infer.chunk) holds one chunk's files at a time, plus the reduced outputs it keeps."""
    recipe = loaded.recipe
    per_sample = sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in [*recipe.model.inputs, *recipe.model.outputs])
    samples = options.limit or _count_samples(loaded, options)
    workdir = options.workdir.resolve()
    probe = next((p for p in [workdir, *workdir.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    chunk = recipe.stages.infer.chunk if recipe.stages.infer else None
    if samples:
        need = per_sample * (min(samples, chunk) if chunk else samples)
        what = (f"~{_gib(need)} at a time for {samples} samples in chunks of {chunk}, plus the reduced outputs kept"
                if chunk else f"~{_gib(need)} for {samples} samples")
        return Check("disk", need < free, f"{what}, {_gib(free)} free at {probe}",
                     "free disk or use --limit / another --workdir")
    return Check("disk", True, f"{_gib(per_sample)} per sample, {_gib(free)} free at {probe}", required=False)


def check_shard_variables() -> Check:
    """What `--shard auto` would read here (information, never a failure)."""
    from .shard import parse_shard, visible_shard_variables

    seen = visible_shard_variables()
    if not seen:
        return Check("shard variables", True, "none set (no job array): --shard auto needs JOB_COMPLETION_INDEX or "
                     "SLURM_ARRAY_TASK_ID/_COUNT", required=False)
    shown = ", ".join(f"{name}={value}" for name, value in seen.items())
    try:
        return Check("shard variables", True, f"{shown} -> --shard auto is shard {parse_shard('auto')}", required=False)
    except UserError as exc:
        return Check("shard variables", False, f"{shown}: {exc.message}", exc.hint or "", required=False)


def _count_samples(loaded: LoadedRecipe, options: Options) -> int | None:
    if not options.data:
        return None
    from .plugin import load_plugin, stage_settings

    plugin = load_plugin(loaded.recipe.plugin, loaded.directory)
    return len(plugin.list_samples(Path(options.data), stage_settings(loaded, plugin, "dataset")))


def check_atc_graph(loaded: LoadedRecipe, options: Options) -> tuple[Check, list[str]]:
    """The exported Ascend graph (at --bs, default the recipe's) against ATC's gate with the
    recipe's flags, and its lint rows (atc_lint): what atc will refuse, and what it will take badly."""
    import onnx

    from .atc_lint import format_rows, lint
    from .atc_ops import atc_problems, chosen_cann
    from .context import Run
    from .stages.atc import planned_flags

    bs = options.bs or loaded.recipe.bs
    run = Run(loaded, options, "ais_bench", bs, options.workdir)
    path = run.path(run.model_onnx)
    if not path.is_file():
        return Check("atc graph", True, f"no Ascend graph exported yet ({path.name}); run `ompipe stage "
                     f"{loaded.recipe.name} export --bs {bs}` to check it", required=False), []
    cann = chosen_cann(options.cann)
    model = onnx.load(str(path), load_external_data=False)
    flags = planned_flags(run)
    problems = atc_problems(model, flags, cann)
    rows = lint(model, flags, cann)
    table = f"CANN {cann} op table"
    if problems:
        detail = f"{path.name}: atc would refuse it ({table}): " + "; ".join(f"{p.code} {p.message}" for p in problems)
        return Check("atc graph", False, detail, problems[0].hint or ""), format_rows(rows) if rows else []
    detail = f"{path.name} passes ATC's parse gate ({table}); {len(rows)} lint warning(s)"
    return Check("atc graph", True, detail), format_rows(rows) if rows else []


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def run_checks(loaded: LoadedRecipe | None, options: Options, printer: Printer) -> int:
    checks = [check_cann_env(), check_atc(), check_ais_bench(),
              check_program("npu-smi", "install the Ascend driver; npu-smi ships with it"), check_soc(options),
              check_packages(), check_workdir_path(options), check_shard_variables()]
    lint_rows: list[str] = []
    if loaded:
        checks.append(check_disk(loaded, options))
        graph_check, lint_rows = check_atc_graph(loaded, options)
        checks.append(graph_check)
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        printer.info(f"{mark}  {check.name:<16} {check.detail}")
        if not check.ok and check.fix:
            printer.info(f"      fix: {check.fix}")
    for line in lint_rows:  # msit analyze's columns
        printer.info(f"      {line}")
    failed = [c for c in checks if not c.ok and c.required]
    if failed:
        printer.info(f"{len(failed)} check(s) failed; without an NPU, --runtime onnxruntime still runs every model")
    return 1 if failed else 0

