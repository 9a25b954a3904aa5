"""Ctrl-C, SIGTERM and SIGHUP (what a terminal, `timeout`, a CI cancel, `docker stop`, `kill` and a
closed terminal send) all stop ompipe the same way: a KeyboardInterrupt unwinds the run, the
tool's process group is killed (tools/execute.py), the stage in progress is discarded, and the
exit status is the shell's 128 + the signal number (130, 143, 129).

Python runs a signal handler between two bytecodes of whatever the main thread executes, and
an exception raised there is dropped ("Exception ignored in ...") when that code is a
finalizer or an at-fork hook (starting a subprocess runs logging's). So the signal is also
remembered, and `raise_if_stopping()` raises it again where it is safe to act on: before a
stage starts, before and after a tool runs. Python would also print that dropped exception with a
traceback; since it is raised again, that report is silenced (`_quiet_dropped_interrupt`).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received: list[int] = []  # the signal ompipe is stopping for, if any


def received() -> int | None:
    return _received[0] if _received else None


def raise_if_stopping() -> None:
    """Raise the KeyboardInterrupt of a signal whose first raise Python may have dropped."""
    if _received:
        raise KeyboardInterrupt


def _stop(signum: int, frame) -> None:
    """A repeat while unwinding is ignored, so the cleanup (killing the tool, removing the
    staging directory) is not cut short; SIGKILL remains for the impatient."""
    if _received:
        return
    _received.append(signum)
    raise KeyboardInterrupt


def _quiet_dropped_interrupt(original):
    """An unraisable-exception hook that stays silent about our own dropped KeyboardInterrupt
    (it is raised again by `raise_if_stopping`) and reports everything else as before."""
    def hook(unraisable) -> None:
        if _received and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        original(unraisable)
    return hook


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the duration of one command (the main thread only may)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {signum: signal.signal(signum, _stop) for signum in SIGNALS}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _quiet_dropped_interrupt(sys.unraisablehook)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        sys.unraisablehook = previous_hook
        _received.clear()
