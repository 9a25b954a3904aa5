"""The fake toolchain lives behind the seam: a plugin found by its entry point
(toolchains.load), activated by the command layer; no production module imports om_pipeline.testing."""
from __future__ import annotations

import ast
from pathlib import Path

import om_pipeline
from om_pipeline import toolchains
from om_pipeline.testing.toolchain import FakeToolchain

PACKAGE = Path(om_pipeline.__file__).resolve().parent


def imports_of_testing(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = ("." * node.level) + (node.module or "")
            names = [alias.name for alias in node.names]
            if "testing" in module.split(".") or (module.strip(".") in ("", "om_pipeline") and "testing" in names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name.startswith("om_pipeline.testing") for a in node.names):
            lines.append(node.lineno)
    return lines


def test_no_production_module_imports_the_fake_toolchain():
    production = [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts]
    assert len(production) > 40  # the walk found the package
    offenders = {str(p.relative_to(PACKAGE)): imports_of_testing(p) for p in production}
    assert {name: lines for name, lines in offenders.items() if lines} == {}


def test_the_fake_is_found_by_its_entry_point_and_an_unknown_name_is_refused(tmp_path):
    import pytest

    from om_pipeline.errors import UserError

    fake = toolchains.load("fake", tmp_path)
    assert isinstance(fake, FakeToolchain) and fake.root == tmp_path.resolve() / ".fake-toolchain"
    assert isinstance(toolchains.load("real", tmp_path), toolchains.RealToolchain)
    with pytest.raises(UserError, match="unknown toolchain 'cann9'") as refused:
        toolchains.load("cann9", tmp_path)
    assert refused.value.hint == "choose one of real, fake"


def test_the_scan_sees_each_import_form(tmp_path):
    for text in ("from .testing import fake_om", "from ..testing.fake_om import x", "from . import testing",
                 "import om_pipeline.testing.toolchain", "from om_pipeline.testing import toy"):
        path = tmp_path / "m.py"
        path.write_text(text + "\n")
        assert imports_of_testing(path) == [1], text


def test_the_active_toolchain_supplies_the_overlay_and_the_python_path(tmp_path):
    from om_pipeline.tools import execute

    fake = FakeToolchain(tmp_path / "tc")
    toolchains.activate(fake)
    try:
        assert toolchains.active() is fake
        assert execute.subprocess_env()["PATH"].startswith(str(tmp_path / "tc" / "bin"))
        assert fake.python_path()[0] in execute.subprocess_env()["PYTHONPATH"]
    finally:
        toolchains.activate(toolchains.RealToolchain())
    assert toolchains.active().python_path() == [] and toolchains.active().om_numerics(tmp_path / "x.om") is None
