"""Plugin settings: every `params:` block of a recipe is checked against its plugin's Settings.

A typo in a key, or a value that does not convert, is a `file:line` error naming the key, the
closest known field and all of them: in `ompipe validate`, and in `ompipe run` before any stage
runs (one test per shipped plugin, and the toy's). The plugin functions get the parsed Settings,
built once per run and stage.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from om_pipeline.context import Options, Run
from om_pipeline.errors import UserError
from om_pipeline.plugin import NoSettings, check_settings, settings_from_params
from om_pipeline.recipe import builtin_recipe_dir, load_recipe_file, parse_recipe

SHIPPED = ("superpoint", "centernet", "transpose", "gfocalv2", "pointrend")


def misspelt(key: str) -> str:
    """The key with its second and third letters swapped (`nms_radius` -> `nsm_radius`)."""
    return key[0] + key[2] + key[1] + key[3:]


def with_typo(text: str, key: str) -> tuple[str, int]:
    """The recipe text with the first top-level `params:` key `key` misspelt, and its 1-based line."""
    lines = text.splitlines(keepends=True)
    start = lines.index("params:\n")
    index = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(f"  {key}:"))
    lines[index] = lines[index].replace(f"  {key}:", f"  {misspelt(key)}:", 1)
    return "".join(lines), index + 1


def first_param(text: str) -> str:
    return next(iter(yaml.safe_load(text)["params"]))


def copy_with_typo(source: Path, directory: Path) -> tuple[Path, str, int]:
    text = source.read_text()
    key = first_param(text)
    broken, line = with_typo(text, key)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / source.name
    path.write_text(broken)
    return path, key, line


@pytest.mark.parametrize("name", SHIPPED)
def test_a_typo_in_a_shipped_recipes_params_is_a_file_line_error(ompipe, tmp_path, name):
    path, key, line = copy_with_typo(builtin_recipe_dir() / f"{name}.yaml", tmp_path / "recipes")
    validated = ompipe("validate", path)
    assert validated.code == 1
    assert f"{name}.yaml:{line} params.{misspelt(key)}: unknown setting" in validated.err
    assert f"(did you mean {key}?)" in validated.err
    assert f"known settings of om_pipeline.models.{name}" in validated.err and key in validated.err.split("hint:")[1]
    # `run` (a dry run here) refuses it before any stage: no stage row is printed
    run = ompipe("run", name, "--recipes", tmp_path / "recipes", "--dry-run", "--toolchain", "fake",
                 "--workdir", tmp_path / "work")
    assert run.code == 1 and f"{name}.yaml:{line} params.{misspelt(key)}" in run.err
    assert "Traceback" not in run.err and "RUN" not in run.out and not (tmp_path / "work" / name).exists()


def test_a_typo_in_the_toy_recipes_params_is_a_file_line_error(ompipe, toy):
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace("plugin: ", "params:\n  lables: labels.json\nplugin: ", 1))
    line = recipe.read_text().splitlines().index("  lables: labels.json") + 1
    result = ompipe("validate", recipe)
    assert result.code == 1
    assert f"toy.yaml:{line} params.lables: unknown setting of om_pipeline.testing.toy_plugin (did you mean labels?)" in result.err


def test_all_shipped_recipes_validate_with_their_plugins(ompipe):
    result = ompipe("validate")
    assert result.code == 0, result.err
    assert all(f"ok      {builtin_recipe_dir() / name}.yaml" in result.out for name in SHIPPED)


def test_stage_params_and_export_path_params_are_checked_too(tmp_path):
    text = (builtin_recipe_dir() / "centernet.yaml").read_text()
    text = text.replace("      onnxruntime_opset: 19", "      onnxruntime_opset: nineteen")
    text = text.replace("  eval: {}", "  eval: {params: {max_per_imag: 50}}")
    path = tmp_path / "centernet.yaml"
    path.write_text(text)
    lines = text.splitlines()
    with pytest.raises(UserError) as error:
        check_settings(load_recipe_file(path), load_plugin_of(path))
    details = "\n".join(error.value.details)
    opset_line = next(i for i, l in enumerate(lines, 1) if "onnxruntime_opset: nineteen" in l)
    eval_line = next(i for i, l in enumerate(lines, 1) if "max_per_imag:" in l)
    assert f"centernet.yaml:{opset_line} stages.export.params.onnxruntime_opset: 'nineteen' is not valid" in details
    assert f"centernet.yaml:{eval_line} stages.eval.params.max_per_imag: unknown setting" in details
    assert "did you mean max_per_image?" in details


def test_checks_across_fields_point_at_the_params_block(tmp_path):
    text = (builtin_recipe_dir() / "transpose.yaml").read_text().replace("  blur_kernel: 11", "  blur_kernel: 4")
    path = tmp_path / "transpose.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        check_settings(load_recipe_file(path), load_plugin_of(path))
    params_line = text.splitlines().index("params:") + 1
    assert error.value.details == [f"{error.value.details[0].split(':')[0]}:{params_line} params: "
                                   "params.blur_kernel = 4: an odd kernel size >= 3"]


def test_values_convert_to_the_fields_types():
    from om_pipeline.models import gfocalv2, transpose

    settings = settings_from_params(gfocalv2.Settings, {"input_size": [128, 192], "mean": [1, 2, 3], "nms_pre": "50"})
    assert settings.input_size == (128, 192) and settings.mean == (1.0, 2.0, 3.0) and settings.nms_pre == 50
    with pytest.raises(UserError, match="flip_test = 'no' is not valid: expected true or false"):
        settings_from_params(transpose.Settings, {"flip_test": "no"})
    with pytest.raises(UserError, match="mean = 0.5 is not valid: expected a list"):
        settings_from_params(transpose.Settings, {"mean": 0.5})


def test_a_plugin_without_settings_takes_no_params(tmp_path):
    (tmp_path / "bare.py").write_text("def list_samples(d, s): return []\ndef preprocess(s, t): return []\n"
                                      "def export(ctx): pass\ndef evaluator(d, s): return None\n")
    text = (builtin_recipe_dir() / "superpoint.yaml").read_text().replace("plugin: om_pipeline.models.superpoint",
                                                                          "plugin: file:bare.py")
    path = tmp_path / "superpoint.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="params") as error:
        check_settings(load_recipe_file(path), load_plugin_of(path))
    assert "known settings of file:bare.py (its Settings): none" in error.value.hint
    assert settings_from_params(NoSettings, {}) == NoSettings()


def test_the_run_builds_each_stages_settings_once(tmp_path):
    from om_pipeline.models import centernet

    loaded = load_recipe_file(builtin_recipe_dir() / "centernet.yaml")
    run = Run(loaded, Options(), "onnxruntime", 1, tmp_path)
    export = run.settings("export")
    assert isinstance(export, centernet.Settings) and export.onnxruntime_opset == 19 and export.input_h == 512
    assert run.settings("export") is export and run.settings("preprocess") == centernet.Settings(**loaded.recipe.params)


def test_where_gives_file_line_and_field(tmp_path):
    text = "schema_version: 1\nparams:\n  a: 1\n  b: 2\n"
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(UserError):
        parse_recipe(text, path)  # not a whole recipe; LoadedRecipe.where needs only the text
    from om_pipeline.recipe import LoadedRecipe

    loaded = LoadedRecipe(None, path, text)
    assert loaded.where(("params", "b")).endswith("x.yaml:4 params.b")
    assert loaded.where(("params", "c")).endswith("x.yaml:2 params.c")  # a missing key: its parent's line


def load_plugin_of(path: Path):
    from om_pipeline.plugin import load_plugin

    loaded = load_recipe_file(path)
    return load_plugin(loaded.recipe.plugin, loaded.directory)
