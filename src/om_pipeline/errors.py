"""Error types and how they reach the user.

UserError: the user can fix it (bad recipe, missing tool or file, failed stage): one clear
message, a hint, exit 1, no traceback. Anything else is our bug: exit 3 with a traceback and
versions, ready to paste into an issue.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class UserError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []

    def __reduce__(self):
        # Raised in a preprocessing worker, it reaches the parent with its hint and details.
        return _restore, (type(self), self.args, self.__dict__)

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        lines += [f"  {line}" for line in self.details]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


def _restore(cls: type, args: tuple, state: dict) -> UserError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class StageFailed(UserError):
    """A stage ran and failed: its message carries the tool's own error lines and the log path."""


class UsageError(UserError):
    """Options that contradict each other (exit 2, as Typer's own usage errors)."""

    exit_code = 2


DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def disk_full_error(exc: BaseException, writing_under: Path | None = None) -> StageFailed | None:
    """A StageFailed naming the path and the free space when `exc` (or what it was raised from)
    is a full disk or quota, else None. `writing_under` names where the write went when the
    error does not (a failed write() carries no file name)."""
    cause = None if isinstance(exc, UserError) else _disk_full_cause(exc)  # a UserError already says what happened
    if cause is None:
        return None
    path = Path(cause.filename) if getattr(cause, "filename", None) else writing_under
    what = DISK_FULL.get(getattr(cause, "errno", None), "no space left on device")
    where = f" writing {path}" if path else ""
    free = _free_space(path)
    return StageFailed(f"{what}{where}" + (f" ({free} free there)" if free else ""),
                       hint="free some space (or use a --workdir on a larger disk), then rerun: nothing incomplete was kept")


def _disk_full_cause(exc: BaseException | None) -> BaseException | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        if any(text in str(exc) for text in ("No space left on device", "Disk quota exceeded")):
            return exc  # a library that wrapped the OSError in its own error (onnx, torch)
        exc = exc.__cause__ or exc.__context__
    return None


def _free_space(path: Path | None) -> str | None:
    if path is None:
        return None
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    try:
        free = shutil.disk_usage(existing or os.getcwd()).free
    except OSError:
        return None
    return f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{free // 1024} KiB"
