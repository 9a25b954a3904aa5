"""One conformance test over every evaluator: the metric of 3 shards' partial states, merged in
any order, equals one run's over all samples digit for digit (metrics and artifacts as JSON),
after a JSON round trip of each state (what a shard writes and `ompipe merge` reads).

Outputs are seeded noise of each network's output shapes, so detections tie, NMS drops, pairs
fail: every place where order or dtype could change a digit is exercised."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from om_pipeline.plugin import Sample, settings_from_params, settings_type, shard_key
from om_pipeline.shard import shard_of

SHARDS = 3


def settings(plugin, **params):
    return settings_from_params(settings_type(plugin), params)


def toy_case(tmp_path):
    from om_pipeline.testing import toy_plugin
    from om_pipeline.testing.toy import make_dataset

    data = make_dataset(tmp_path)
    samples = toy_plugin.list_samples(data, settings(toy_plugin))
    rng = np.random.default_rng(0)
    return toy_plugin, data, settings(toy_plugin), samples, {s.id: [rng.normal(size=4).astype(np.float32)] for s in samples}


def pointrend_case(tmp_path):
    from om_pipeline.models import pointrend
    from om_pipeline.data.pointrend_synth import synthesize

    params = settings(pointrend, input_size=[32, 64])
    data = synthesize(tmp_path, images=7, size=(32, 64), seed=1)
    samples = pointrend.list_samples(data, params)
    rng = np.random.default_rng(0)
    return pointrend, data, params, samples, {s.id: [rng.integers(0, 19, (32, 64), dtype=np.uint8)] for s in samples}


def superpoint_case(tmp_path):
    import cv2

    from om_pipeline.models import superpoint

    rng = np.random.default_rng(0)
    for name in ("v_a", "v_b", "i_c", "i_d", "v_e"):
        sequence = tmp_path / name
        sequence.mkdir()
        for n in range(1, 7):
            cv2.imwrite(str(sequence / f"{n}.ppm"), np.zeros((240, 320, 3), np.uint8))
            if n > 1:
                shift = np.array([[1, 0, rng.uniform(-3, 3)], [0, 1, rng.uniform(-3, 3)], [0, 0, 1]])
                np.savetxt(sequence / f"H_1_{n}", shift)
    samples = superpoint.list_samples(tmp_path, settings(superpoint))

    def outputs():
        semi = rng.normal(size=(65, 30, 40)).astype(np.float32)
        semi[64] += 8.5  # mostly "no point": a few dozen points per image
        descriptors = rng.normal(size=(256, 30, 40)).astype(np.float32)
        return [semi, descriptors / np.linalg.norm(descriptors, axis=0)]

    return superpoint, tmp_path, settings(superpoint), samples, {s.id: outputs() for s in samples}


def centernet_case(tmp_path):
    from om_pipeline.models import centernet
    from om_pipeline.data.centernet_tinycoco import write_tiny_coco

    data = write_tiny_coco(tmp_path, images=9, seed=3)
    samples = centernet.list_samples(data, settings(centernet))
    rng = np.random.default_rng(0)

    def outputs():
        hm = rng.normal(size=(80, 128, 128)).astype(np.float32) - 4
        return [hm, rng.uniform(1, 40, (2, 128, 128)).astype(np.float32), rng.uniform(0, 1, (2, 128, 128)).astype(np.float32)]

    return centernet, data, settings(centernet, decode_batch=2), samples, {s.id: outputs() for s in samples}


def gfocalv2_case(tmp_path):
    from om_pipeline.models import gfocalv2
    from om_pipeline.data.gfocalv2_tinycoco import write_tiny_coco

    data = write_tiny_coco(tmp_path, images=9, seed=3)
    samples = gfocalv2.list_samples(data, settings(gfocalv2))
    rng = np.random.default_rng(0)

    def outputs():
        corner = rng.uniform(0, 600, (100, 2))
        dets = np.concatenate([corner, corner + rng.uniform(5, 300, (100, 2)), rng.uniform(0, 1, (100, 1)).round(1)], axis=1)
        return [dets.astype(np.float32), rng.integers(0, 80, 100).astype(np.int64)]

    return gfocalv2, data, settings(gfocalv2), samples, {s.id: outputs() for s in samples}


def transpose_case(tmp_path):
    from om_pipeline.models import transpose
    from om_pipeline.data.transpose_synth import synthesize

    data = synthesize(tmp_path, images=6, seed=3)
    samples = transpose.list_samples(data, settings(transpose))
    rng = np.random.default_rng(0)

    def outputs():
        return {view: [rng.uniform(0, 1, (17, 64, 48)).astype(np.float32)] for view in ("normal", "flip")}

    return transpose, data, settings(transpose, decode_chunk=2), samples, {s.id: outputs() for s in samples}


CASES = [toy_case, pointrend_case, superpoint_case, centernet_case, gfocalv2_case, transpose_case]


def outcome(evaluator) -> str:
    metrics = evaluator.result()
    artifacts = evaluator.artifacts() if hasattr(evaluator, "artifacts") else {}
    return json.dumps({"metrics": metrics, "artifacts": artifacts}, sort_keys=True)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__.removesuffix("_case"))
def test_merged_shards_equal_one_run_digit_for_digit(case, tmp_path):
    plugin, data, params, samples, outputs = case(tmp_path)
    one_run = plugin.evaluator(data, params)
    for sample in samples:
        one_run.add(sample, outputs[sample.id])
    expected = outcome(one_run)

    states = []
    for index in range(SHARDS):
        part = [s for s in samples if shard_of(shard_key(plugin, s), SHARDS) == index]
        assert part, f"shard {index} of {len(samples)} samples is empty: the case proves less"
        shard = plugin.evaluator(data, params)
        for sample in part:
            shard.add(sample, outputs[sample.id])
        states.append(json.loads(json.dumps(shard.state())))  # as written and read back
    order = [s.id for s in samples]
    for permutation in itertools.islice(itertools.permutations(states), 0, None, 2):  # 3 of the 6 orders
        merged = plugin.evaluator(data, params)
        merged.merge(list(permutation), order)
        assert outcome(merged) == expected


def test_a_sample_in_two_states_is_refused(tmp_path):
    from om_pipeline.testing import toy_plugin

    evaluator = toy_plugin.evaluator(tmp_path, settings(toy_plugin))
    evaluator.add(Sample("a", None, {"label": 1}), [np.zeros(4, np.float32)])
    state = evaluator.state()
    with pytest.raises(ValueError, match="sample a is in two partial states"):
        toy_plugin.evaluator(tmp_path, settings(toy_plugin)).merge([state, state], ["a"])
