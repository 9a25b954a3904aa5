"""Recipe schema, file:line errors, templating, discovery."""
from __future__ import annotations

from pathlib import Path

import pytest

from om_pipeline.errors import UserError
from om_pipeline.recipe import TEMPLATE_VARIABLES, discover, find_recipe, load_recipe_file, parse_recipe, render


def write(tmp_path: Path, text: str, name: str = "toy") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def error_of(toy, text: str) -> UserError:
    with pytest.raises(UserError) as info:
        parse_recipe(text, toy.recipes / "toy.yaml")
    return info.value


def rendered(error: UserError) -> str:
    return error.render()


def test_the_toy_recipe_loads(toy):
    loaded = load_recipe_file(toy.recipes / "toy.yaml")
    assert loaded.recipe.name == "toy"
    assert loaded.recipe.bs == 4
    assert [t.name for t in loaded.recipe.model.inputs] == ["image"]


def test_syntax_error_names_file_and_line(toy):
    text = (toy.recipes / "toy.yaml").read_text().replace("batch_sizes: [1, 4, 8]", "batch_sizes: [1, 4, 8")
    message = rendered(error_of(toy, text))
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("batch_sizes"))
    assert "toy.yaml:" in message and "not valid YAML" in message
    assert any(f"toy.yaml:{n}" in message for n in (line, line + 1, line + 2))


def test_missing_key_names_the_field(toy):
    text = (toy.recipes / "toy.yaml").read_text().replace("title: Toy classifier (test fixture)\n", "")
    message = rendered(error_of(toy, text))
    assert "toy.yaml:1 title: required key is missing" in message


def test_unknown_key_names_line_and_path(toy):
    text = (toy.recipes / "toy.yaml").read_text().replace("    strip: 1\n", "    strip: 1\n    stirp: 2\n")
    line = text.splitlines().index("    stirp: 2") + 1
    message = rendered(error_of(toy, text))
    assert f"toy.yaml:{line} stages.patch.stirp: unknown key" in message


def test_wrong_type_says_what_was_expected(toy):
    text = (toy.recipes / "toy.yaml").read_text().replace("opset: 13", "opset: thirteen")
    line = text.splitlines().index("    opset: thirteen") + 1
    message = rendered(error_of(toy, text))
    assert f"toy.yaml:{line} stages.export.opset: Input should be a valid integer" in message
    assert "'thirteen'" in message


def test_unknown_template_variable_is_a_load_error(toy):
    text = (toy.recipes / "toy.yaml").read_text().replace("--batchsize={bs}\"]\n  eval", "--batchsize={batch}\"]\n  eval")
    message = rendered(error_of(toy, text))
    assert "stages.infer.args[4]: unknown variable {batch}" in message
    assert "{bs}" in message  # the hint lists the known ones


def test_output_path_leaving_the_work_directory(toy):
    text = (toy.recipes / "toy.yaml").read_text().replace("--output={om_stem}", "--output=/tmp/elsewhere/model")
    assert "stages.atc.args[2]: --output must be one of ompipe's paths" in rendered(error_of(toy, text))
    text = (toy.recipes / "toy.yaml").read_text().replace("toy/0001-cpu-only.patch", "../../etc/passwd")
    assert "stages.patch.files: Value error, must be a relative path without '..'" in rendered(error_of(toy, text))


def test_schema_version_is_checked(toy):
    text = (toy.recipes / "toy.yaml").read_text().replace("schema_version: 1", "schema_version: 2")
    assert "schema_version: this ompipe reads schema_version 1; got 2" in rendered(error_of(toy, text))


def test_unpinned_weights_are_rejected(toy):
    text = (toy.recipes / "toy.yaml").read_text()
    text = "\n".join(l for l in text.splitlines() if "git_blob:" not in l and "sha256:" not in l)
    assert "weights need a sha256 or a git_blob" in rendered(error_of(toy, text))


def test_name_must_match_file(tmp_path, toy):
    path = write(tmp_path, (toy.recipes / "toy.yaml").read_text(), name="other")
    with pytest.raises(UserError, match="must match the file name"):
        load_recipe_file(path)


@pytest.mark.parametrize("cli_args", [["validate"], ["run"]])
def test_cli_reports_one_clear_message_and_exit_1(toy, ompipe, cli_args):
    bad = toy.recipes / "toy.yaml"
    bad.write_text(bad.read_text().replace("    strip: 1\n", "    strip: 1\n    stirp: 2\n"))
    result = ompipe(*cli_args, bad)
    assert result.code == 1
    assert "stages.patch.stirp: unknown key" in result.err
    assert "Traceback" not in result.err + result.out


def test_render_and_template_variables():
    assert render("image:{bs},1,240,320", {"bs": 8}) == "image:8,1,240,320"
    assert {"bs", "soc_version", "onnx", "om", "om_stem", "inputs", "output", "work"} <= set(TEMPLATE_VARIABLES)


def test_discovery_prefers_user_directories(tmp_path, toy, monkeypatch):
    assert discover([toy.recipes])["toy"] == toy.recipes / "toy.yaml"
    monkeypatch.setenv("OMPIPE_RECIPES", str(toy.recipes))
    assert find_recipe("toy").path == (toy.recipes / "toy.yaml").resolve()
    with pytest.raises(UserError, match="no recipe named 'nope'"):
        find_recipe("nope")


def test_builtin_recipes_are_valid(ompipe):
    result = ompipe("validate")
    assert result.code == 0, result.err


def test_output_flag_in_two_tokens_is_checked_too(toy):
    text = (toy.recipes / "toy.yaml").read_text().replace('"--output={output}"', '"--output", "/tmp/x"')
    assert "stages.infer.args[3]: --output must be one of ompipe's paths" in rendered(error_of(toy, text))


def test_output_dirname_is_a_plain_name(toy):
    base = (toy.recipes / "toy.yaml").read_text()
    ok = base.replace('"--outfmt=BIN", "--batchsize={bs}"]', '"--outfmt=BIN", "--batchsize={bs}", --output_dirname, "dumpout_bs{bs}"]')
    parse_recipe(ok, toy.recipes / "toy.yaml")
    bad = base.replace('"--outfmt=BIN", "--batchsize={bs}"]', '"--outfmt=BIN", "--batchsize={bs}", "--output_dirname=../x"]')
    assert "--output_dirname must be a plain directory name" in rendered(error_of(toy, bad))


# ---------------------------------------------------------------- loading limits (docs/reliability.md)


def error_of_file(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_recipe_file(path)
    return info.value.render()


def test_yaml_aliases_are_refused_before_anything_expands_them(tmp_path, toy):
    """A 'billion laughs' alias bomb; today's loader expands it (9 levels of 9 grow past 3 GB),
    so this one stops at 6 levels (~500 k nodes) to fail on it without eating the machine."""
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 6)]
    path = write(tmp_path, "\n".join(levels) + "\n")
    message = error_of_file(path)
    assert "toy.yaml:2" in message and "alias" in message and "*a0" in message
    plain = (toy.recipes / "toy.yaml").read_text().replace("batch_sizes: [1, 4, 8]", "batch_sizes: &sizes [1, 4, 8]\nmore: *sizes")
    assert "alias" in error_of_file(write(tmp_path, plain))


def test_duplicate_keys_are_an_error_naming_both_lines(toy, tmp_path):
    text = (toy.recipes / "toy.yaml").read_text().replace("default_bs: 4\n", "default_bs: 4\ndefault_bs: 8\n")
    first = text.splitlines().index("default_bs: 4") + 1
    message = error_of_file(write(tmp_path, text))
    assert f"toy.yaml:{first + 1}" in message and "duplicate key 'default_bs'" in message and f"line {first}" in message
    nested = (toy.recipes / "toy.yaml").read_text().replace("  simplify:\n    tool: onnxsim\n", "  simplify:\n    tool: onnxsim\n  simplify: {}\n")
    assert "duplicate key 'simplify'" in error_of_file(write(tmp_path, nested))


def test_bytes_that_are_not_utf8_name_the_line(toy, tmp_path):
    text = (toy.recipes / "toy.yaml").read_text().replace("title: Toy classifier", "title: Toy \xe9 classifier")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("title:"))
    path = tmp_path / "toy.yaml"
    path.write_bytes(text.encode("latin-1"))
    message = error_of_file(path)
    assert f"toy.yaml:{line}" in message and "UTF-8" in message and "0xe9" in message
    path.write_bytes(text.replace("\xe9", "e").encode("utf-16"))
    message = error_of_file(path)
    assert "toy.yaml:1" in message and "UTF-16" in message


def test_deep_nesting_is_an_error_with_the_line(tmp_path):
    path = write(tmp_path, "schema_version: 1\nparams: " + "[" * 5000 + "]" * 5000 + "\n")
    message = error_of_file(path)
    assert "toy.yaml:2" in message and "nest" in message


def test_a_huge_recipe_is_refused_by_its_node_count(tmp_path):
    path = write(tmp_path, "schema_version: 1\nparams: {big: [" + ", ".join(["1"] * 300_000) + "]}\n")
    message = error_of_file(path)
    assert "toy.yaml:2" in message and "nodes" in message
