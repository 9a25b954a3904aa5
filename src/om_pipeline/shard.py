"""Shards: a stable partition of a model's samples, so several processes, devices, hosts or
array-job tasks each evaluate a part, and `ompipe merge` computes the metric once over all.

A sample belongs to shard `hash(key) mod N`, where the key is the sample id (or the plugin's
`shard_key`, e.g. HPatches' sequence): the partition depends on the sample alone, never on its
position, so adding, removing or reordering other samples moves no sample between shards, and
every shard of a run agrees on it without talking to the others.

`--shard I/N` names one shard; `--shard auto` (or `auto/N`) reads it from the environment a
job array gives each task (SHARD_VARIABLES).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from .errors import UserError

# Where array jobs say "which task am I, of how many". Kubernetes' Indexed Job gives only the
# index; the count comes from --shard auto/N or OMPIPE_SHARD_COUNT (set it in the pod spec to
# the Job's `completions`).
SHARD_VARIABLES = {
    "kubernetes": ("JOB_COMPLETION_INDEX", "OMPIPE_SHARD_COUNT"),
    "slurm": ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"),
}
# Stage kinds by what they depend on: the shared ones are built once in <model>/ for every
# shard; the sample ones run per shard in <model>/shards/<I>-of-<N>/; compare and perf take
# no part in a sharded run (run them unsharded: they need no partition).
SHARED_KINDS = ("clone", "patch", "weights", "export", "simplify", "atc")
SAMPLE_KINDS = ("dataset", "preprocess", "infer", "eval")
SHARD_SPEC = re.compile(r"^(\d+)/(\d+)$")
AUTO_SPEC = re.compile(r"^auto(?:/(\d+))?$")


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UserError(f"shard {self.index}/{self.count}: the index must be 0..{self.count - 1}",
                            hint="--shard I/N takes a 0-based index I below the shard count N, e.g. --shard 0/4")

    @property
    def name(self) -> str:
        """The shard's directory name, `<I>-of-<N>`."""
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def shard_of(key: str, count: int) -> int:
    """The shard of a sample key: the first 8 bytes of its SHA-256, mod `count`."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def parse_shard(spec: str, environ: dict[str, str] | None = None) -> Shard:
    """`I/N`, `auto` or `auto/N` -> Shard."""
    spec = spec.strip()
    if match := SHARD_SPEC.match(spec):
        return Shard(int(match.group(1)), int(match.group(2)))
    if match := AUTO_SPEC.match(spec):
        return shard_from_environment(os.environ if environ is None else environ, match.group(1))
    raise UserError(f"--shard {spec}: expected I/N (e.g. 0/4), auto or auto/N")


def shard_from_environment(environ, count: str | None = None) -> Shard:
    """The shard a Kubernetes Indexed Job or a Slurm array task is."""
    index_variable, count_variable = SHARD_VARIABLES["kubernetes"]
    if environ.get(index_variable):
        count = count or environ.get(count_variable)
        if not count:
            raise UserError(f"--shard auto: {index_variable}={environ[index_variable]} gives the index, but not the count",
                            hint=f"pass --shard auto/N, or set {count_variable} to the Job's completions")
        return Shard(_number(index_variable, environ[index_variable]), _number("the shard count", count))
    index_variable, count_variable = SHARD_VARIABLES["slurm"]
    if environ.get(index_variable):
        if not environ.get(count_variable) and not count:
            raise UserError(f"--shard auto: {index_variable} is set but {count_variable} is not")
        # SLURM_ARRAY_TASK_ID is the array index as given (--array=0-3); ompipe's are 0-based.
        minimum = int(environ.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
        return Shard(_number(index_variable, environ[index_variable]) - minimum,
                     _number("the shard count", count or environ[count_variable]))
    names = ", ".join(variable for pair in SHARD_VARIABLES.values() for variable in pair)
    raise UserError("--shard auto: no job-array variable is set", hint=f"auto reads {names}; otherwise pass --shard I/N")


def _number(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name} = {value!r} is not a number") from None


def visible_shard_variables(environ=None) -> dict[str, str]:
    """The job-array variables set in this environment (for `ompipe doctor`)."""
    environ = os.environ if environ is None else environ
    names = [variable for pair in SHARD_VARIABLES.values() for variable in pair] + ["SLURM_ARRAY_TASK_MIN", "ASCEND_RT_VISIBLE_DEVICES"]
    return {name: environ[name] for name in names if environ.get(name)}
