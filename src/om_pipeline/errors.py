"""Error types and how they reach the user.

UserError: the user can fix it (bad recipe, missing tool or file, failed stage): one clear
message, a hint, exit 1, no traceback. Anything else is our bug: exit 3 with a traceback and
versions, ready to paste into an issue.
"""
from __future__ import annotations


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
