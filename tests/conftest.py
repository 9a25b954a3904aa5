"""Shared fixtures: the toy upstream/recipe/dataset, an isolated cache, and a CLI runner."""
from __future__ import annotations

import http.server
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from om_pipeline.cli import main
from om_pipeline.testing.toy import Toy, make_toy
from om_pipeline import toolchains


REPOSITORY = Path(__file__).resolve().parents[1]
UPSTREAM_FIXTURES = {"pointrend_upstream"}  # fixtures that skip without an OMPIPE_UPSTREAM_<MODEL> checkout


def pytest_collection_modifyitems(config, items):
    """Every test gated on an upstream checkout carries the `upstream` marker (tests/README.md
    lists them; `-m upstream` selects them): a gate without it is a collection error."""
    unmarked = [item.nodeid for item in items if item.get_closest_marker("upstream") is None and (
        any("OMPIPE_UPSTREAM" in str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif"))
        or UPSTREAM_FIXTURES & set(getattr(item, "fixturenames", ())))]
    if unmarked:
        raise pytest.UsageError("gated on OMPIPE_UPSTREAM_* without the `upstream` marker: " + ", ".join(unmarked))
TOOL_LITTER = {".pytest_cache", "__pycache__", ".coverage"}  # pytest's and coverage's own


@pytest.fixture(scope="session", autouse=True)
def repository_root_stays_clean():
    """No test, and no tool a test runs, writes into the repository root (a fake atc once left
    fusion_result.json there): the session fails at teardown naming what appeared."""
    before = {p.name for p in REPOSITORY.iterdir()}
    yield
    appeared = {p.name for p in REPOSITORY.iterdir()} - before - TOOL_LITTER
    assert not appeared, f"tests wrote into the repository root: {sorted(appeared)}"


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """No test reads the user's cache, recipes or toolchain choice, or leaks the fake toolchain."""
    monkeypatch.setenv("OMPIPE_CACHE", str(tmp_path_factory.mktemp("cache")))
    for name in ("OMPIPE_RECIPES", "OMPIPE_TOOLCHAIN", "ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH", "ASCEND_OPP_PATH"):
        monkeypatch.delenv(name, raising=False)
    yield
    toolchains.activate(toolchains.RealToolchain())


@pytest.fixture(scope="session")
def toy_template(tmp_path_factory) -> Toy:
    return make_toy(tmp_path_factory.mktemp("toy-template"))


@pytest.fixture
def toy(toy_template, tmp_path) -> Toy:
    """A private copy per test (tests edit the recipe and the dataset)."""
    root = tmp_path / "toy"
    shutil.copytree(toy_template.root, root, symlinks=True)
    recipe = root / "recipes" / "toy.yaml"
    recipe.write_text(recipe.read_text().replace(toy_template.upstream.as_uri(), (root / "upstream").as_uri()))
    return Toy(root, root / "upstream", toy_template.commit, root / "recipes", root / "toyset", root / "upstream" / "weights" / "toy.pt")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def ompipe(capsys, monkeypatch, tmp_path):
    """Run the CLI in-process from tmp_path; returns exit code, stdout and stderr."""
    monkeypatch.chdir(tmp_path)

    def invoke(*argv: str) -> Result:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture(scope="session")
def pointrend_upstream(tmp_path_factory):
    """(patched detectron2 checkout, export-environment python), once per session: installing
    the checkout compiles detectron2/_C (minutes). Skips without OMPIPE_UPSTREAM_POINTREND."""
    from om_pipeline.testing.upstream import export_env_python, patched_upstream, upstream_source

    source = upstream_source("pointrend")
    if not source:
        pytest.skip("OMPIPE_UPSTREAM_POINTREND is not set (a detectron2 clone or mirror)")
    root = tmp_path_factory.mktemp("pointrend-upstream")
    checkout = patched_upstream("pointrend", source, root / "detectron2")
    return checkout, export_env_python("pointrend", "upstream", checkout, root / "env.log")


@dataclass
class Loopback:
    """A local HTTP server on 127.0.0.1 standing in for the internet: serves `files` (path ->
    bytes) with Range support and records each request's (path, Range header)."""
    root: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.root}/{path}"


@pytest.fixture
def loopback():
    state = Loopback("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            path, ranged = self.path.lstrip("/"), self.headers.get("Range")
            state.requests.append((path, ranged))
            if path not in state.files:
                self.send_error(404)
                return
            start = int(ranged.split("=")[1].rstrip("-")) if ranged else 0
            body = state.files[path][start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.root = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
