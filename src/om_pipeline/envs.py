"""Export environments: upstream stacks pin conflicting torch / mmcv versions, so a recipe may
declare the environment its export runs in. ompipe builds it once in the cache, keyed by its
requirements (as pre-commit builds hook environments), and runs the export there through the
tool seam: the plugin's export() (export_in_env), or the export path's own `command:`, e.g. the
guide's script (export_by_command). The main ompipe environment stays lean.
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from .download import cache_dir
from .errors import StageFailed, UserError
from .plugin import ExportContext
from .recipe import ExportEnv, ExportPath, render
from .state import digest_of
from .tools.execute import execute

COMPLETE = ".ompipe-complete"


def env_path(env: ExportEnv) -> Path:
    return cache_dir() / "envs" / digest_of({"requirements": env.requirements, "python": env.python})[:16]


def ensure_env(env: ExportEnv, log: Path, say: Callable[[str], None] = lambda text: None) -> Path:
    """The environment's interpreter, creating the environment when it is not complete yet
    (a half-built one, e.g. after Ctrl-C during pip, is rebuilt from scratch). `say` tells the
    user about minutes of silent work."""
    root = env_path(env)
    python = root / "bin" / "python"
    if (root / COMPLETE).exists():
        return python
    say(f"building the export environment once, in {root} (pip; minutes; log: {log})")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    _checked(execute([env.python, "-m", "venv", str(root)], log=log), "creating the export environment")
    _checked(execute([str(python), "-m", "pip", "install", "--disable-pip-version-check", *env.requirements], log=log),
             "installing the export environment's requirements (air-gapped: set PIP_INDEX_URL / PIP_FIND_LINKS to your mirror)")
    root.mkdir(exist_ok=True)
    (root / COMPLETE).write_text(json.dumps(env.requirements))
    return python


def _say(run) -> Callable[[str], None]:
    return (lambda text: None) if run.options.quiet else (lambda text: print(f"        {text}", file=sys.stderr, flush=True))


def prepared_env(run, env: ExportEnv, ctx: ExportContext, log: Path) -> Path:
    """The environment's interpreter, built (and the checkout installed, when it asks) if needed."""
    python = ensure_env(env, log, _say(run))
    if env.install_source:
        install_source(python, ctx.source, log, _say(run))
    return python


def export_by_command(run, path: ExportPath, env: ExportEnv | None, ctx: ExportContext, log: Path) -> None:
    """The export path's `command:` in the checkout, in `env` when given (its bin/ first on PATH,
    so `python` is its interpreter), with {weights} and {export_onnx} filled in. With random
    weights the plugin's `random_checkpoint(ctx)` writes them as the file the command reads."""
    overlay = {}
    if env is not None:
        python = prepared_env(run, env, ctx, log)
        overlay = {"PATH": str(python.parent), "VIRTUAL_ENV": str(python.parent.parent)}
    weights = ctx.weights
    if weights is None:
        random_checkpoint = getattr(run.plugin, "random_checkpoint", None)
        if random_checkpoint is None:
            raise UserError(f"export path {ctx.export_path} runs a command that reads a checkpoint, and plugin "
                            f"{run.recipe.plugin} has no random_checkpoint(ctx) for --weights random", hint="pass --weights PATH")
        weights = random_checkpoint(ctx)
    try:
        argv = export_command(run, path, weights, ctx.out)
        _checked(execute(argv, cwd=ctx.source, log=log, env=overlay), f"the export command ({' '.join(argv[:2])})")
    finally:
        if ctx.weights is None:
            weights.unlink(missing_ok=True)


def export_command(run, path: ExportPath, weights: Path | str, out: Path) -> list[str]:
    """The export path's `command:` as it runs (and as a dry run shows it): {weights} is the
    checkpoint it reads, {export_onnx} the ONNX file it must write."""
    variables = run.variables(weights=str(weights), export_onnx=str(out))
    return [render(arg, variables) for arg in path.command]


def export_in_env(run, env: ExportEnv, ctx: ExportContext, log: Path) -> None:
    python = prepared_env(run, env, ctx, log)
    request = ctx.out.with_suffix(".request.json")
    request.write_text(json.dumps({"plugin": run.recipe.plugin, "recipe_dir": str(run.loaded.directory),
                                   "context": asdict(ctx)}, default=str))
    package_root = Path(__file__).resolve().parent.parent  # so the env imports this very ompipe
    outcome = execute([str(python), "-m", "om_pipeline.export_worker", str(request)], log=log, env={"PYTHONPATH": str(package_root)})
    request.unlink(missing_ok=True)
    _checked(outcome, "the export in its environment")


def install_source(python: Path, source: Path, log: Path, say: Callable[[str], None] = lambda text: None) -> None:
    """`pip install --no-build-isolation -e <checkout>` (the checkout's setup.py imports torch,
    which pip's isolated build environment lacks), once per checkout: compiling detectron2's _C
    takes minutes, and the editable install picks up later edits of its Python files. A new
    clone (another directory, or the same path re-cloned) installs again."""
    root = python.parent.parent
    marker = root / ".ompipe-source.json"
    identity = json.dumps({"source": str(source), "inode": source.stat().st_ino})
    if marker.is_file() and marker.read_text() == identity:
        return
    marker.unlink(missing_ok=True)
    say(f"installing {source} into the export environment (pip install -e; compiling can take minutes; log: {log})")
    _checked(execute([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-build-isolation",
                      "-e", str(source)], log=log), f"pip install -e {source}")
    marker.write_text(identity)


def _checked(outcome, what: str) -> None:
    if not outcome.ok:
        raise StageFailed(f"{what} failed (exit {outcome.returncode})", details=outcome.output.strip().splitlines()[-10:])
