"""For tests: no network, in this process and in every Python subprocess it starts.

    block_network(monkeypatch, tmp_path)

In-process, name resolution and TCP/UDP connects raise OSError; for subprocesses a
`sitecustomize.py` doing the same goes first on PYTHONPATH (Python imports it at start-up, the
fake toolchain's wrappers included). Unix sockets stay usable (nothing here reaches a network
through them).
"""
from __future__ import annotations

import socket
from pathlib import Path

MESSAGE = "network blocked by the test (om_pipeline.testing.offline)"
FUNCTIONS = f'''import socket

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _refused(*args, **kwargs):
    raise OSError({MESSAGE!r})


def _connect_guarded(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refused()
    return _connect(self, address)


def _connect_ex_guarded(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refused()
    return _connect_ex(self, address)
'''
INSTALL = '''
socket.socket.connect = _connect_guarded
socket.socket.connect_ex = _connect_ex_guarded
socket.getaddrinfo = _refused
socket.gethostbyname = _refused
socket.create_connection = _refused
'''


def block_network(monkeypatch, directory: Path) -> None:
    """Block the network for this test (undone with `monkeypatch`) and for the subprocesses it
    starts (their PYTHONPATH gets the guard, written under `directory`)."""
    namespace: dict = {}
    exec(compile(FUNCTIONS, "<offline guard>", "exec"), namespace)  # the functions the subprocesses install
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, namespace[f"_{name}_guarded"])
    for name in ("getaddrinfo", "gethostbyname", "create_connection"):
        monkeypatch.setattr(socket, name, namespace["_refused"])
    guard = Path(directory) / "offline-guard"
    guard.mkdir(parents=True, exist_ok=True)
    (guard / "sitecustomize.py").write_text(FUNCTIONS + INSTALL, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(guard))
