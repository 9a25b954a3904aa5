"""`--executor ray`: the shards of a run as Ray tasks on a cluster (`pip install om-pipeline[ray]`).

The shared stages (clone ... atc) run once, here, before any task; each task then runs one
shard (`--shard i/N`) told that they are built, and the metric is merged here as `ompipe merge`
does. Results come back through the work directory, which every node must see at the same path
(a shared filesystem: NFS, a Kubernetes volume); the task's return value carries only its
device record, to name and check it.

Each task of the ais_bench backend requests `{"NPU": 1}`, Ray's own Ascend resource: Ray then
sets ASCEND_RT_VISIBLE_DEVICES to the one NPU it assigned, so inside the task that NPU is ACL
device 0 and ais_bench runs with `--device 0`. Ray releases before MIN_RAY set another variable
(ASCEND_VISIBLE_DEVICES, ray-project/ray#41256) that the ACL runtime does not read, so every
task would run on device 0 of its node: those are refused. With the ONNX Runtime backend a
task requests CPUs only. A failed task is retried once (Ray's `max_retries`), then named.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .context import Options, Run
from .errors import StageFailed, UserError
from .shard import Shard

# ray-project/ray#42030 (merged 2023-12) switched Ray's NPU support to ASCEND_RT_VISIBLE_DEVICES;
# 2.10.0 (2024-03) is the first release cut after it (docs/scale-out.md: derived from the PR
# and release dates, not from the release notes).
MIN_RAY = (2, 10)
CPUS_PER_ORT_TASK = 1


def require_ray():
    """The ray module, or one clear error: not installed, or too old to set the NPU variable."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray", hint="pip install 'om-pipeline[ray]'") from None
    if version_tuple(ray.__version__) < MIN_RAY:
        raise UserError(f"Ray {ray.__version__} is too old for --executor ray: before {'.'.join(map(str, MIN_RAY))} Ray "
                        "sets ASCEND_VISIBLE_DEVICES, which the ACL runtime ignores, so every task would run on device 0",
                        hint=f"pip install 'ray>={'.'.join(map(str, MIN_RAY))}'")
    return ray


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def absolute(options: Options, recipe_dirs: list[Path]) -> tuple[Options, list[Path]]:
    """Paths as every node sees them: a Ray worker's working directory is not ours."""
    resolved = {name: Path(value).resolve() for name in ("workdir", "data", "source")
                if (value := getattr(options, name)) is not None}
    if options.weights not in (None, "random"):
        resolved["weights"] = str(Path(options.weights).resolve())
    return replace(options, **resolved), [Path(d).resolve() for d in recipe_dirs]


# What one shard asks of Ray, by the runtime's resource: an NPU (Ray's accelerator resource,
# ascend-tools: one visible device), or CPUs for ONNX Runtime.
TASK_RESOURCES = {"NPU": {"resources": {"NPU": 1}, "num_cpus": 0}, "CPU": {"num_cpus": CPUS_PER_ORT_TASK}}
PER_TASK = {"NPU": 1, "CPU": CPUS_PER_ORT_TASK}


def task_resources(resource: str) -> dict:
    return TASK_RESOURCES[resource]


def shard_count(ray, resource: str, asked: int | None) -> int:
    if asked:
        return asked
    count = int(ray.cluster_resources().get(resource, 0) // PER_TASK[resource])
    if count < 1:
        raise UserError(f"the Ray cluster has no {resource} to run shards on",
                        hint="start the Ray nodes on the NPU hosts (Ray detects their NPUs), or pass --shards N")
    return count


def run_shard_task(model: str, options: Options, recipe_dirs: list[Path], shard_dir: Path) -> dict:
    """Inside a Ray task: one shard, logged under its shard directory; its device record."""
    from .devices import DEVICE_RECORD, run_shard_logged
    from .state import read_json

    code = run_shard_logged(model, options, recipe_dirs, shard_dir / "logs" / "ray-task.log")
    if code != 0:
        raise RuntimeError(f"shard {options.shard} exited {code}; log: {shard_dir / 'logs' / 'ray-task.log'}")
    return read_json(shard_dir / DEVICE_RECORD) or {}


def run_on_ray(model: str, options: Options, recipe_dirs: list[Path], run: Run, count: int | None, address: str | None) -> list[dict]:
    """Every shard as a Ray task (the shared stages must be built); their device records."""
    ray = require_ray()
    options, recipe_dirs = absolute(options, recipe_dirs)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    resource = run.runtime.ray_resource
    count = shard_count(ray, resource, count)
    task = ray.remote(max_retries=1, retry_exceptions=True, **task_resources(resource))(run_shard_task)
    device = 0 if run.runtime.runs_om else None  # the one NPU Ray made visible
    pending = {}
    for index in range(count):
        shard = Shard(index, count)
        shard_options = replace(options, shard=shard, device=device, shared_built=True, executor=None)
        pending[index] = task.remote(model, shard_options, recipe_dirs, run.shard_dir(shard))
    records, failed = [], []
    for index, reference in pending.items():
        try:
            records.append(ray.get(reference))
        except Exception as exc:  # a RayTaskError after the retry, or a lost node
            failed.append(f"shard {index}/{count}: {str(exc).strip().splitlines()[-1]}")
    if failed:
        raise StageFailed(f"{len(failed)} of {count} Ray tasks failed twice", details=failed,
                          hint="fix the cause, then rerun: finished shards are CACHED")
    return records
