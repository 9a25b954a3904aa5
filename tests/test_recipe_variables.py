"""Recipe variables derived from the recipe itself: {input_shape} from model.inputs; an export
path's command is checked and rendered like atc args; the toy's export path as a command runs
through the seam, in its environment, writing to the stage log."""
from __future__ import annotations

import sys

import pytest

from om_pipeline.context import Options, Run
from om_pipeline.errors import UserError
from om_pipeline.recipe import LoadedRecipe, builtin_recipe_dir, load_recipe_file, parse_recipe, render
from om_pipeline.tools import execute


def loaded_with(tmp_path, old: str, new: str, name: str = "superpoint") -> LoadedRecipe:
    text = (builtin_recipe_dir() / f"{name}.yaml").read_text()
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new))
    return load_recipe_file(path)


def test_input_shape_renders_every_input_at_the_runs_batch_size(tmp_path):
    loaded = loaded_with(tmp_path, "    - {name: image, shape: [1, 240, 320], dtype: float32}\n",
                         "    - {name: image, shape: [1, 240, 320], dtype: float32}\n"
                         "    - {name: mask, shape: [240, 320], dtype: uint8}\n")
    run = Run(loaded, Options(), "ais_bench", 8, tmp_path / "work")
    assert render("--input_shape={input_shape}", run.variables()) == "--input_shape=image:8,1,240,320;mask:8,240,320"
    shipped = Run(load_recipe_file(builtin_recipe_dir() / "superpoint.yaml"), Options(), "ais_bench", 1, tmp_path / "work")
    assert shipped.variables()["input_shape"] == "image:1,1,240,320"  # the guide's --input_shape="image:1,1,240,320"


def test_an_export_command_with_an_unknown_variable_is_a_file_line_error(tmp_path):
    text = (builtin_recipe_dir() / "gfocalv2.yaml").read_text().replace('"{export_onnx}"', '"{export_out}"')
    with pytest.raises(UserError) as error:
        parse_recipe(text, tmp_path / "gfocalv2.yaml")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "{export_out}" in l)
    assert error.value.details == [f"{tmp_path / 'gfocalv2.yaml'}:{line} stages.export.paths.upstream.command[5]: "
                                   "unknown variable {export_out}"]


def test_a_variable_without_a_value_in_its_place_is_a_user_error():
    with pytest.raises(UserError, match=r"\{weights\} has no value here"):
        render("--model={weights}", {"bs": 1})


TOY_COMMAND = """\
    path: script
    paths:
      script:
        env: {requirements: [torch==1.8.0]}
        command: [python, export.py, "{weights}", "{export_onnx}", "{bs}"]
"""


def test_the_toys_export_as_a_command_runs_in_its_environment_with_the_stage_log(ompipe, toy, tmp_path):
    """The toy recipe's export as a `command:` (a script standing in for a guide's): venv and
    pip stubbed, the script really run (this interpreter standing in for the environment's)."""
    recipe = toy.recipes / "toy.yaml"
    recipe.write_text(recipe.read_text().replace("    opset: 13\n", "    opset: 13\n" + TOY_COMMAND))
    script = ("import sys, torch\nfrom om_pipeline.testing import toy_plugin\n"
              "model = toy_plugin.build_model(__import__('pathlib').Path('.'), sys.argv[1], 0)\n"
              "torch.onnx.export(model, torch.zeros(int(sys.argv[3]), 3, 16, 16), sys.argv[2], input_names=['image'],"
              " output_names=['logits'], opset_version=13, dynamo=False)\nprint('exported by the script')\n")
    calls = []
    real = execute._executor

    def env_free(request):
        calls.append(request)
        if request.argv[1:3] in (("-m", "venv"), ("-m", "pip")):
            return execute.Outcome(request.argv, 0, "")
        if request.argv[0] == "python":
            (request.cwd / "export.py").write_text(script)
            return real(execute.Request((sys.executable, *request.argv[1:]), request.cwd, {}, request.log))
        return real(request)

    with execute.swapped(env_free):
        result = ompipe("stage", "toy", "export", "--recipes", toy.recipes, "--data", toy.data, "--backend", "onnxruntime")
    assert result.code == 0, result.err
    (command,) = [c for c in calls if c.argv[0] == "python"]
    assert command.argv[1] == "export.py" and command.argv[2].endswith("weights/toy.pt") and command.argv[4] == "4"
    assert command.cwd == tmp_path / "work/toy/src" and command.env["PATH"].endswith("/bin")
    log = (tmp_path / "work/toy/logs/export-bs4-onnxruntime.log").read_text()
    assert "exported by the script" in log
    assert all(c.log == command.log for c in calls if c.argv[1:3] == ("-m", "pip"))  # pip logs there too
