"""Reading `ompipe run` output in tests: the closing table's statuses, and (with --dry-run) the
planned commands and their flags, so a recipe test can compare them with the guide's flag by flag."""
from __future__ import annotations

import shlex


def planned_commands(out: str) -> list[list[str]]:
    """The argv of every `$ ...` line the dry run printed, in order."""
    return [shlex.split(line.strip()[2:]) for line in out.splitlines() if line.strip().startswith("$ ")]


def flags(argv: list[str]) -> dict[str, str]:
    """--k=v and --k v, as atc, ais_bench and msame all accept them."""
    parsed, pending = {}, None
    for token in argv:
        if pending:
            parsed[pending], pending = token, None
        elif token.startswith("--") and "=" in token:
            key, value = token[2:].split("=", 1)
            parsed[key] = value
        elif token.startswith("--"):
            pending = token[2:]
    return parsed


def closing_table(out: str) -> dict[str, str]:
    """stage key -> RUN / CACHED / SKIPPED / FAILED, from the closing table."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.replace("┃", "│").split("│")]
        if len(cells) >= 2 and cells[1] in ("RUN", "CACHED", "SKIPPED", "FAILED"):
            rows[cells[0]] = cells[1]
    return rows


def data_args(offline: bool, data, monkeypatch, tmp_path) -> list[str]:
    """The dataset arguments of a recipe test's dry run: `--data DATA`, or, offline, none at all
    with the network blocked for the process and its subprocesses (a dry run needs neither:
    the dataset's row says what it would download or that it needs --data)."""
    if not offline:
        return ["--data", str(data)]
    from .offline import block_network

    block_network(monkeypatch, tmp_path)
    return []
