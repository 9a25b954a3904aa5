"""`--devices 0,1,...`: one shard per NPU of this host, run at the same time, merged at the end.

The shared stages (clone ... atc) are built first, once, by this process; then one process per
device runs `--shard i/N` with `--device <id>` (ais_bench's `--device`, the InferSession's
device) in its own shard directory, and is told the shared stages are built
(`Options.shared_built`): it checks they are up to date and never builds or locks them, so the
devices never wait for each other, nor for this process, which keeps the model directory
for the whole command. Each device process logs to `<shard>/logs/device<id>.log` and leaves
`<shard>/device.json` (its device, pid, start and end time, samples, infer throughput).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from .context import Options, Run
from .errors import StageFailed, UserError
from .shard import Shard
from .state import read_json, write_json_atomic
from .ui import Printer

DEVICE_RECORD = "device.json"


def parse_devices(spec: str) -> tuple[int, ...]:
    """`0,1,2,3` -> (0, 1, 2, 3): distinct ACL device ids 0..255, as ais_bench takes them."""
    try:
        devices = tuple(int(part) for part in spec.split(","))
    except ValueError:
        raise UserError(f"--devices {spec}: expected device ids separated by commas, e.g. 0,1,2,3") from None
    if len(set(devices)) != len(devices) or any(not 0 <= d <= 255 for d in devices):
        raise UserError(f"--devices {spec}: each device id once, each 0..255")
    return devices


def device_options(options: Options, index: int, devices: tuple[int, ...]) -> Options:
    return replace(options, shard=Shard(index, len(devices)), device=devices[index], shared_built=True, devices=None, executor=None)


def run_devices(model: str, options: Options, recipe_dirs: list[Path], run: Run) -> list[dict]:
    """One process per device, concurrently; their device records, in device order. A failed
    device is named with its log."""
    devices = options.devices
    context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited locks or sessions
    processes = []
    for index, device in enumerate(devices):
        shard_options = device_options(options, index, devices)
        log = run.shard_dir(shard_options.shard) / "logs" / f"device{device}.log"
        process = context.Process(target=device_main, args=(model, shard_options, recipe_dirs, str(log)),
                                  name=f"ompipe-device{device}")
        process.start()
        processes.append((device, shard_options.shard, log, process))
    failed = []
    for device, shard, log, process in processes:
        process.join()
        if process.exitcode != 0:
            failed.append(f"device {device} (shard {shard}) exited {process.exitcode}: log {log}")
    if failed:
        raise StageFailed(f"{len(failed)} of {len(devices)} device runs failed", details=failed,
                          hint="fix the cause, then rerun the same command: finished shards are CACHED")
    return [read_json(run.shard_dir(Shard(i, len(devices))) / DEVICE_RECORD) or {} for i in range(len(devices))]


def device_main(model: str, options: Options, recipe_dirs: list[Path], log: str) -> None:
    """A device process: the shard's run, its output in its log file."""
    sys.exit(run_shard_logged(model, options, recipe_dirs, Path(log)))


def run_shard_logged(model: str, options: Options, recipe_dirs: list[Path], log: Path) -> int:
    """The shard's run in this process with its output (and its tools') in `log`, then its
    device record; the exit code. For a process of its own (a device process, a Ray task)."""
    from . import commands

    with output_to(log):
        started = time.time()
        try:
            code = commands.run(model, options, recipe_dirs)
        except UserError as exc:
            print(exc.render(), flush=True)
            code = exc.exit_code
        if code == 0:
            record_device(model, options, recipe_dirs, started)
    return code


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr (file descriptors too: the tools it starts inherit them)
    into `log`, and back afterwards: a Ray worker lives on after the task and reports a task's
    error on its own stderr, which must not be a closed file (it killed the worker)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    with open(log, "w", encoding="utf-8") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        sys.stdout = sys.stderr = handle
        try:
            yield
        finally:
            handle.flush()
            sys.stdout, sys.stderr = streams
            for fd, original in zip((1, 2), saved):
                os.dup2(original, fd)
                os.close(original)


def record_device(model: str, options: Options, recipe_dirs: list[Path], started: float) -> None:
    from .commands import make_run
    from .plan import build_stages

    run = make_run(model, options, recipe_dirs, Printer(quiet=True))
    stages = {stage.kind: stage for stage in build_stages(run)}
    evaluation = run.state.record(stages["eval"].key) or {}
    # The infer stage's time; with --stream inference happens inside eval (with preprocessing and the metric).
    timed = evaluation if options.stream else (run.state.record(stages["infer"].key) or {})
    samples, seconds = evaluation.get("info", {}).get("samples"), timed.get("seconds")
    write_json_atomic(run.path(DEVICE_RECORD), {
        "device": options.device, "shard": str(options.shard), "pid": os.getpid(), "host": socket.gethostname(),
        "visible_devices": os.environ.get("ASCEND_RT_VISIBLE_DEVICES"), "started": started, "finished": time.time(),
        "samples": samples, "timed_stage": timed.get("key"), "seconds": seconds,
        "throughput": round(samples / seconds, 3) if samples and seconds else None,  # samples/s of that stage (wall)
    })


def device_table(records: list[dict], printer: Printer) -> None:
    """Per-device throughput and the sum, said to be a sum over devices."""
    printer.info(f"{'device':>6}  {'shard':>6}  {'samples':>7}  {'start':>12}  {'end':>12}  {'samples/s':>9}")
    for r in records:
        printer.info(f"{r.get('device')!s:>6}  {r.get('shard')!s:>6}  {r.get('samples')!s:>7}  "
                     f"{_clock(r.get('started')):>12}  {_clock(r.get('finished')):>12}  {r.get('throughput')!s:>9}")
    total = sum(r.get("throughput") or 0 for r in records)
    printer.info(f"{'sum':>6}  {'':>6}  {sum(r.get('samples') or 0 for r in records):>7}  {'':>12}  {'':>12}  {round(total, 3):>9}"
                 f"   ({len(records)} devices together: not comparable with a one-device guide figure)")


def _clock(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp % 1 * 1000):03d}"
