"""One writer per model work directory: an flock on `<workdir>/<model>/.ompipe/lock`, held for
the whole command by every command that writes there (run, stage, bench), as DVC's repository
lock. Readers (status, show, report, --dry-run, --check) take none and never wait.

The kernel drops an flock when the last descriptor of its open file goes away, so a holder
killed with SIGKILL leaves nothing to clean up. That is also why no other process may keep a
copy of the descriptor: tools are exec'd with close_fds (and the descriptor is close-on-exec),
and forked preprocessing workers close their inherited copy first thing (`close_inherited`),
so a worker that outlives a killed owner does not keep the lock. Only the process that took
the lock releases it.

The lock file holds who has it (PID, host, command line, start time), for the refusal line.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError

LOCK_FILE = Path(".ompipe") / "lock"

_command_line: list[str] = []  # what the CLI was asked, for the holder's description
_held: dict[int, "WorkdirLock"] = {}  # descriptor -> lock, of this process


def set_command_line(argv: list[str]) -> None:
    _command_line[:] = argv


class Busy(UserError):
    """Another process holds the lock."""


class WorkdirLock:
    def __init__(self, model_dir: Path):
        self.model_dir = model_dir
        self.path = model_dir / LOCK_FILE
        self._fd: int | None = None
        self._owner: int | None = None

    def acquire(self, wait: bool, on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock, or raise Busy naming the holder; with `wait`, block until it is free
        (after calling `on_wait` with the holder's description). Ctrl-C or SIGTERM interrupts
        the wait."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = describe_holder(self.path)
                if not wait:
                    raise Busy(f"{self.model_dir} is in use by another ompipe ({holder})",
                               hint="wait for it to finish, or pass --wait to queue behind it") from None
                if on_wait:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            _write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._owner = fd, os.getpid()
        _held[fd] = self

    def release(self) -> None:
        """Free the lock; a no-op in any process but the one that took it (a forked child
        unwinding its parent's code must not free the parent's lock)."""
        if self._fd is None or self._owner != os.getpid():
            return
        fd, self._fd = self._fd, None
        _held.pop(fd, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no stale holder line for the next reader
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_holder(fd: int) -> None:
    command = shlex.join(["ompipe", *_command_line] if _command_line else sys.argv)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    data = json.dumps(holder).encode()
    with contextlib.suppress(OSError):  # who holds it is for messages only: a full disk must not stop the run
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"PID {holder['pid']} on {holder['host']}, started {holder['started']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


@contextlib.contextmanager
def holding(model_dir: Path, wait: bool, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    lock = WorkdirLock(model_dir)
    lock.acquire(wait, on_wait)
    try:
        yield
    finally:
        lock.release()


def close_inherited() -> None:
    """In a forked child: close the copies of this process's lock descriptors (closing a copy
    never frees the lock; only the owner's release or death does)."""
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()

