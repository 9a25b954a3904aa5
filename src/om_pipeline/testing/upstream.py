"""Upstream checkouts for parity tests and benchmarks: the pinned commit with our patches, made
exactly as the clone and patch stages make it (so these tests also prove the patch applies).

Tests find upstream through OMPIPE_UPSTREAM_<MODEL> (any clone or mirror) and skip without it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..recipe import builtin_patch_dirs, find_recipe
from ..tools.git import apply_patch, clone_at_commit


def upstream_source(model: str) -> str | None:
    return os.environ.get(f"OMPIPE_UPSTREAM_{model.upper()}")


def patched_upstream(model: str, source: str, destination: Path) -> Path:
    """Clone `source` at the recipe's commit into `destination` and apply the recipe's patches."""
    stages = find_recipe(model).recipe.stages
    log = destination.parent / f"{destination.name}.log"
    clone_at_commit(source, stages.clone.commit, destination, log)
    for name in stages.patch.files if stages.patch else []:
        patch = next(d / name for d in builtin_patch_dirs() if (d / name).is_file())
        if apply_patch(destination, patch, stages.patch.strip, stages.patch.fuzz, log).status == "conflict":
            raise UserError(f"{name} does not apply to {stages.clone.commit}", hint=f"see {log}")
    return destination


@contextmanager
def shared_env_cache(fallback: Path | None = None) -> Iterator[None]:
    """OMPIPE_TEST_CACHE, when set, as ompipe's cache: export environments take gigabytes and
    minutes to build, so gated tests may share one directory kept for them. Else `fallback`
    (a temporary directory), or, without one, the test's own isolated cache. Never the user's
    ompipe cache (OMPIPE_CACHE as the user set it, ~/.cache/ompipe): tests do not write there."""
    chosen = os.environ.get("OMPIPE_TEST_CACHE") or (str(fallback) if fallback else None)
    previous = os.environ.get("OMPIPE_CACHE")
    if chosen:
        os.environ["OMPIPE_CACHE"] = chosen
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("OMPIPE_CACHE", None)
        else:
            os.environ["OMPIPE_CACHE"] = previous


def export_env_python(model: str, path: str, checkout: Path, log: Path) -> Path:
    """The interpreter of the recipe's export environment (export path `path`) as the export
    stage makes it, in the shared test cache (shared_env_cache; else a cache beside `log`), with
    `checkout` installed into it (install_source)."""
    from ..envs import ensure_env, install_source

    env = find_recipe(model).recipe.stages.export.paths[path].env
    with shared_env_cache(fallback=log.parent / "env-cache"):
        python = ensure_env(env, log)
        install_source(python, checkout, log)
    return python
