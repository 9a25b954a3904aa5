"""THE subprocess seam. Every external command ompipe runs (git, patch, atc, ais_bench, msame,
npu-smi, an export environment's python) goes through `execute()`, as tox's `Execute` does.

- argv lists only, never a shell;
- output is streamed to the stage log (argv at its top) and kept for the parsers;
- Ctrl-C, SIGTERM and SIGHUP (turned into KeyboardInterrupt by the CLI) kill the child's whole
  process group, so no orphaned atc keeps writing; if ompipe itself is killed with SIGKILL, the
  kernel kills the child (PR_SET_PDEATHSIG on Linux; the child's own children are its business);
- `timeout` (a recipe's per-stage `timeout:`) kills the group when it expires: ToolTimeout;
- tests swap the executor with `swapped(fn)` and see every request.

The toolchain (`real` or `fake`) is an environment overlay applied to every request: the fake
puts `om_pipeline.testing`'s atc / ais_bench / npu-smi first on PATH and PYTHONPATH.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from .. import interrupts
from ..errors import UserError


@dataclass(frozen=True)
class Request:
    argv: tuple[str, ...]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # on top of os.environ + toolchain
    log: Path | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Outcome:
    argv: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, interleaved as the tool wrote them
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


Executor = Callable[[Request], Outcome]

_toolchain_env: dict[str, str] = {}


def set_toolchain_env(overlay: Mapping[str, str]) -> None:
    """Environment applied to every subprocess (the fake toolchain's PATH/PYTHONPATH)."""
    _toolchain_env.clear()
    _toolchain_env.update(overlay)


def subprocess_env(extra: Mapping[str, str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in {**_toolchain_env, **dict(extra)}.items():
        if key in ("PATH", "PYTHONPATH") and env.get(key):
            value = f"{value}{os.pathsep}{env[key]}"  # overlays go first
        env[key] = value
    return env


def which(program: str) -> str | None:
    """`shutil.which` over the PATH the subprocesses will see (fake toolchain included)."""
    import shutil

    return shutil.which(program, path=subprocess_env().get("PATH"))


def format_argv(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def run_subprocess(request: Request) -> Outcome:
    interrupts.raise_if_stopping()  # no new tool once ompipe is stopping
    started = time.monotonic()
    log = open(request.log, "a", encoding="utf-8") if request.log else None
    if log:
        log.write(f"$ {format_argv(request.argv)}\n")
        if request.cwd:
            log.write(f"# cwd: {request.cwd}\n")
        log.flush()
    chunks: list[str] = []
    try:
        try:
            proc = subprocess.Popen(
                list(request.argv),
                cwd=request.cwd,
                env=subprocess_env(request.env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,  # its own process group, so Ctrl-C can take it all down
                preexec_fn=_die_with(os.getpid()) if _can_die_with_parent() else None,
            )
        except FileNotFoundError:
            raise UserError(
                f"{request.argv[0]} not found on PATH",
                hint="source the CANN set_env.sh (atc, ais_bench), install the tool, or use --toolchain fake",
            ) from None
        # The output is read until the tool closes it, so a tool that hangs silently is stopped
        # from another thread; the read then ends.
        timed_out = threading.Event()
        timer = threading.Timer(request.timeout, _stop_on_timeout, (proc, timed_out)) if request.timeout else None
        try:
            # A signal that came while the tool started may have been dropped (an at-fork hook).
            interrupts.raise_if_stopping()
            if timer:
                timer.start()
            for line in proc.stdout:
                chunks.append(line)
                if log:
                    log.write(line)
                    log.flush()
            returncode = proc.wait()
            interrupts.raise_if_stopping()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if timer:
                timer.cancel()
                timer.join()
        if timed_out.is_set():
            raise ToolTimeout(f"{request.argv[0]} did not finish within its timeout of {request.timeout:g} s and was stopped",
                              hint="the recipe's `timeout:` for this stage sets the limit (recipes/README.md)"
                                   + (f"; log: {request.log}" if request.log else ""))
    finally:
        if log:
            log.close()
    return Outcome(tuple(request.argv), returncode, "".join(chunks), time.monotonic() - started)


class ToolTimeout(UserError):
    """A tool ran past the timeout its stage gives it and was killed."""


def _stop_on_timeout(proc: subprocess.Popen, timed_out: threading.Event) -> None:
    timed_out.set()
    _kill_group(proc)


def _can_die_with_parent() -> bool:
    # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: only the main thread
    # lives as long as ompipe.
    return _prctl is not None and threading.current_thread() is threading.main_thread()


def _die_with(parent: int) -> Callable[[], None]:
    def set_parent_death_signal() -> None:  # runs in the child, between fork and exec
        die_with_parent()
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return set_parent_death_signal


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (a SIGKILLed ompipe
    cannot stop its tools or workers itself). Elsewhere: nothing."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1
_prctl = None
if sys.platform.startswith("linux"):
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_executor: Executor = run_subprocess


def execute(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    timeout: float | None = None,
) -> Outcome:
    if isinstance(argv, str):  # a shell string would be a bug: we never go through a shell
        raise TypeError("execute() takes an argv list, not a string")
    return _executor(Request(tuple(str(a) for a in argv), cwd, dict(env or {}), log, timeout))


def python_argv(*args: str) -> list[str]:
    """argv for `python -m ...` with the interpreter ompipe runs under."""
    return [sys.executable, *args]


@contextlib.contextmanager
def swapped(executor: Executor) -> Iterator[None]:
    """Tests: replace the executor (see the fake toolchain for a faithful alternative)."""
    global _executor
    previous, _executor = _executor, executor
    try:
        yield
    finally:
        _executor = previous
