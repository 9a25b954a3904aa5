"""CI evidence for what the gated upstream tests prove (om_pipeline/testing/upstream_pins.py).

Ungated: every shipped patch touches exactly the files recorded at the pinned commit, and each
hunk's context and removed lines are the upstream lines recorded there (by digest), so a patch
edit that would no longer apply fails here; each real network's exported interface (from a
real CPU export, recorded) is what the recipe declares per target.

Gated (`upstream` marker, OMPIPE_UPSTREAM_<MODEL>): the fixtures regenerate from the checkout
unchanged. Regenerate them after a deliberate change with scripts/upstream_pins.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from om_pipeline.recipe import find_recipe
from om_pipeline.testing.upstream import patched_upstream, upstream_source
from om_pipeline.testing.upstream_pins import MODELS, TARGETS, graphs_fixture, parse_patch, patch_file, pins_fixture

FIXTURES = Path(__file__).parent / "fixtures"
REGENERATE = "if the change is deliberate, regenerate with scripts/upstream_pins.py {model} --source <upstream clone>"
# Declared output shapes are per sample; the graph adds the batch axis, except where noted.
NO_BATCH_AXIS = {("gfocalv2", "ascend"): "BatchMultiClassNMS's dets/labels (the guide's graph: dets 100x5 at bs 1)"}


def pins(model: str) -> dict:
    return json.loads((FIXTURES / "upstream-pins" / f"{model}.json").read_text())


def graphs(model: str) -> dict:
    return json.loads((FIXTURES / "exported-graphs" / f"{model}.json").read_text())


def pin_mismatches(model: str, name: str, patch: bytes) -> list[str]:
    """What in `patch` does not match the pins recorded for the recipe's patch `name`."""
    recorded = pins(model)["patches"][name]
    strip = find_recipe(model).recipe.stages.patch.strip
    touched = parse_patch(patch, strip)
    problems = [f"{path}: touched, but not recorded at the pin" for path in sorted(set(touched) - set(recorded))]
    problems += [f"{path}: recorded, but no longer touched" for path in sorted(set(recorded) - set(touched))]
    for path in sorted(set(touched) & set(recorded)):
        hunks = {h.key(): h.digest() for h in touched[path] or []}
        want = recorded[path]["hunks"]
        problems += [f"{path} hunk {key}: no upstream lines recorded for this range" for key in hunks if key not in want]
        problems += [f"{path} hunk {key}: a recorded hunk is gone" for key in want if key not in hunks]
        problems += [f"{path} hunk {key}: its context/removed lines differ from upstream's at the pin"
                     for key in hunks if key in want and hunks[key] != want[key]]
    for path, short in re.findall(rb"^diff --git a/(\S+) b/\S+\nindex ([0-9a-f]+)\.\.", patch, re.M):
        path, short = ("a/" + path.decode()).split("/", strip)[strip], short.decode()
        blob = recorded.get(path, {}).get("blob")
        if blob and not blob.startswith(short):
            problems.append(f"{path}: the patch's index line names blob {short}, the pin has {blob}")
    return problems


def shipped_patches() -> list[tuple[str, str]]:
    return [(m, name) for m in MODELS for name in (find_recipe(m).recipe.stages.patch.files if find_recipe(m).recipe.stages.patch else [])]


@pytest.mark.parametrize("model", MODELS)
def test_pins_fixture_is_for_the_recipes_repository_and_commit(model):
    recipe = find_recipe(model).recipe
    fixture = pins(model)
    assert (fixture["repo"], fixture["commit"]) == (recipe.stages.clone.repo, recipe.stages.clone.commit)
    assert sorted(fixture["patches"]) == sorted(recipe.stages.patch.files)


@pytest.mark.parametrize("model, name", shipped_patches())
def test_each_patch_touches_the_recorded_files_and_its_hunks_match_the_pinned_lines(model, name):
    problems = pin_mismatches(model, name, patch_file(name).read_bytes())
    assert not problems, "\n".join(problems + [REGENERATE.format(model=model)])


def test_a_patch_edit_that_no_longer_matches_upstream_is_caught():
    model, name = "superpoint", "superpoint/0001-export-and-evaluation-on-pyyaml6-numpy2-cpu.patch"
    patch = patch_file(name).read_bytes()
    assert not pin_mismatches(model, name, patch)
    first_hunk = patch.index(b"\n@@ ")
    context = re.compile(rb"^ (\S.*)$", re.M).search(patch, first_hunk)  # its first context line
    drifted = patch[:context.start()] + b" " + context[1] + b"  # edited" + patch[context.end():]
    assert any("differ from upstream's" in p for p in pin_mismatches(model, name, drifted))
    moved = re.sub(rb"^@@ -164,7 ", b"@@ -165,7 ", patch, count=1, flags=re.M)
    assert any("no upstream lines recorded" in p for p in pin_mismatches(model, name, moved))
    extra = patch.replace(b"diff --git a/export.py", b"diff --git a/new.py b/new.py\n--- a/new.py\n+++ b/new.py\n"
                          b"@@ -1,1 +1,1 @@\n-a\n+b\ndiff --git a/export.py", 1)
    assert "new.py: touched, but not recorded at the pin" in pin_mismatches(model, name, extra)


def test_superpoints_checkpoint_blob_is_the_pinned_trees():
    weights = find_recipe("superpoint").recipe.stages.weights
    assert pins("superpoint")["in_source"] == {weights.in_source: weights.git_blob}


def declared(model: str, target: str) -> tuple[list, list]:
    recipe = find_recipe(model).recipe
    batch = [] if (model, target) in NO_BATCH_AXIS else [recipe.bs]
    inputs = [(t.name, t.dtype, [recipe.bs, *t.shape]) for t in recipe.model.inputs]
    outputs = [(t.name, t.dtype, [*batch, *t.shape]) for t in recipe.model.outputs_for(target)]
    return inputs, outputs


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("model", MODELS)
def test_exported_interface_is_what_the_recipe_declares(model, target):
    """Names, dtypes and shapes of the real export (recorded) against the recipe. A dimension
    ONNX could not infer (after an Ascend custom op) is a string: it must then be symbolic in
    the graph, never a different number."""
    fixture = graphs(model)
    assert fixture["bs"] == find_recipe(model).recipe.bs
    graph = fixture["targets"][target]
    inputs, outputs = declared(model, target)
    got_inputs = [(t["name"], t["dtype"], t["shape"]) for t in graph["inputs"]]
    assert got_inputs == inputs  # the network input is always fully static
    got_outputs = [(t["name"], t["dtype"], t["shape"]) for t in graph["outputs"]]
    assert [(n, d, len(s)) for n, d, s in got_outputs] == [(n, d, len(s)) for n, d, s in outputs]
    for (name, _, got), (_, _, want) in zip(got_outputs, outputs):
        assert all(g == w for g, w in zip(got, want) if not isinstance(g, str)), f"{name}: {got} vs declared {want}"
    if target == "onnxruntime":  # ONNX Runtime's graph holds standard ops only: every shape is known
        assert got_outputs == outputs


def test_exports_hold_the_ops_each_target_is_for():
    """The reason each model has two targets, in the recorded real exports."""
    ops = {m: {t: graphs(m)["targets"][t]["op_counts"] for t in TARGETS} for m in MODELS}
    assert ops["centernet"]["ascend"]["DeformableConv2D"] == 16 and "DeformConv" not in ops["centernet"]["ascend"]
    assert ops["centernet"]["onnxruntime"]["DeformConv"] == 16 and "DeformableConv2D" not in ops["centernet"]["onnxruntime"]
    assert ops["gfocalv2"]["ascend"]["BatchMultiClassNMS"] == 1 and "BatchMultiClassNMS" not in ops["gfocalv2"]["onnxruntime"]
    assert "GridSample" not in ops["pointrend"]["ascend"] and ops["pointrend"]["onnxruntime"]["GridSample"] == 4
    for model in MODELS:
        assert graphs(model)["targets"]["ascend"]["initializer_elements"] == graphs(model)["targets"]["onnxruntime"]["initializer_elements"]


def gated(model: str):
    return pytest.param(model, marks=[pytest.mark.upstream, pytest.mark.skipif(
        not upstream_source(model), reason=f"OMPIPE_UPSTREAM_{model.upper()} is not set (a clone or mirror of upstream)")])


@pytest.mark.parametrize("model", [gated(m) for m in MODELS])
def test_pins_fixture_regenerates_from_the_checkout(model):
    assert pins_fixture(model, upstream_source(model)) == pins(model), REGENERATE.format(model=model)


@pytest.mark.parametrize("model", [gated(m) for m in MODELS])
def test_graphs_fixture_regenerates_from_a_real_export(model, tmp_path):
    """CenterNet, SuperPoint and TransPose export upstream's patched network; GFocalV2 and
    PointRend their native model (the gated model tests prove it equals upstream's)."""
    checkout = patched_upstream(model, upstream_source(model), tmp_path / "upstream")
    fresh, recorded = graphs_fixture(model, checkout), graphs(model)
    assert fresh["targets"] == recorded["targets"], (f"made with {recorded['tools']}, now {fresh['tools']}; "
                                                     + REGENERATE.format(model=model))
