"""PointRend with detectron2's own identity FrozenBN init (no calibration): the 33 residual blocks
compound past float16's 65504, so the .om under ATC's default force_fp16 would give inf / NaN.
The compare stage's "om (fp16 emulated)" rung stops the run there, naming the output, before
any dataset-wide evaluation. Native export path at 128 x 256: no upstream, no network."""
from __future__ import annotations

import pickle

from om_pipeline.models import pointrend_model as pm
from om_pipeline.data.pointrend_synth import synthesize
from om_pipeline.testing.dry_run import closing_table

from test_pointrend_e2e import SMALL, small_recipe


def identity_frozen_bn_weights(path):
    model = pm.build_pointrend(sampling="grid_sample")
    pm.random_weights(model, seed=0, calibrate=False)
    state = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}
    with open(path, "wb") as handle:
        pickle.dump({"model": state, "__author__": "detectron2 init, identity FrozenBN"}, handle)
    return path


def test_identity_frozen_bn_overflows_fp16_and_compare_names_the_output(ompipe, tmp_path):
    recipes = small_recipe(tmp_path / "recipes")
    data = synthesize(tmp_path / "cityscapes", images=1, size=SMALL, seed=1)
    weights = identity_frozen_bn_weights(tmp_path / "identity_bn.pkl")
    result = ompipe("run", "pointrend", "--recipes", recipes, "--data", data, "--export-path", "native", "--weights", weights,
                    "--toolchain", "fake", "--limit", "1", "--workdir", "work", "--to", "compare")
    assert result.code == 1, result.out + result.err
    assert "golden comparison out of tolerance" in result.err
    assert "om (fp16 emulated) results: " in result.err and "fp16 overflow (|x| > 65504)" in result.err
    assert "onnx results" not in result.err  # the fp32 rungs hold: only fp16 overflows
    assert closing_table(result.out)["compare-bs1-ais_bench"] == "FAILED"
    assert not (tmp_path / "work/pointrend/results/compare_ais_bench_bs1.json").exists()  # nothing looks complete
