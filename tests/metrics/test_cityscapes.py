"""Cityscapes mIoU (metrics/cityscapes.py) against cityscapesScripts, the reference.

The constructed cases (cityscapes_cases.py) were scored by cityscapesScripts 2.2.0 in an
environment of its own; its answers, and its label table, are recorded in
tests/fixtures/cityscapes/. When cityscapesscripts is importable here, the same cases are also
scored live.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from om_pipeline.metrics import cityscapes

import cityscapes_cases  # beside this file (pytest puts the test directory on sys.path)

ANSWERS = json.loads((Path(__file__).parent.parent / "fixtures/cityscapes/cityscapesscripts-2.2.0-answers.json").read_text())


def score(pairs) -> cityscapes.ConfusionMatrix:
    matrix = cityscapes.ConfusionMatrix()
    for prediction, truth in pairs:
        matrix.add(prediction, cityscapes.train_ids(truth))
    return matrix


def test_train_id_to_label_id_table_entry_by_entry():
    """Our 19 train ids -> label ids and names are cityscapesScripts' labels.py, and every
    label id maps back to its train id, or to 255 where ignoreInEval."""
    labels = {int(k): v for k, v in ANSWERS["labels"].items()}
    evaluated = sorted((train_id, label_id, name) for label_id, (train_id, ignored, name) in labels.items() if not ignored)
    assert [(t, label, n) for t, label, n in evaluated] == [(i, int(cityscapes.TRAIN_ID_TO_LABEL_ID[i]), cityscapes.CLASS_NAMES[i])
                                                             for i in range(19)]
    for label_id, (train_id, ignored, name) in labels.items():
        if label_id < 0:
            continue  # licence plate (-1) is not a value a labelIds PNG holds
        expected = 255 if ignored else train_id
        assert cityscapes.LABEL_ID_TO_TRAIN_ID[label_id] == expected, (label_id, name)
    assert (cityscapes.LABEL_ID_TO_TRAIN_ID[34:] == 255).all()
    assert (cityscapes.label_ids(np.arange(19)) == cityscapes.TRAIN_ID_TO_LABEL_ID).all()


@pytest.mark.parametrize("case", sorted(cityscapes_cases.cases()))
def test_miou_and_class_iou_equal_cityscapesscripts(case):
    matrix = score(cityscapes_cases.cases()[case])
    expected = ANSWERS["cases"][case]
    assert matrix.mean_iou() == pytest.approx(expected["averageScoreClasses"], abs=1e-12)
    ours = {name: value for name, value in zip(cityscapes.CLASS_NAMES, matrix.class_iou()) if not math.isnan(value)}
    assert ours.keys() == expected["classScores"].keys()
    for name, value in expected["classScores"].items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name


def test_cases_cover_what_they_say():
    answers = ANSWERS["cases"]
    assert answers["perfect"]["averageScoreClasses"] == 1.0 and len(answers["perfect"]["classScores"]) == 19
    assert len(answers["absent_classes"]["classScores"]) == 14  # NaN classes are skipped, not zero
    assert answers["predicted_not_present"]["classScores"]["bicycle"] == 0.0  # predicted only: counts as 0
    assert 0 < answers["noisy"]["averageScoreClasses"] < 1


def test_known_answer_by_hand():
    """2 x 3 map: road, road, car / car, car, void. Prediction: road, car, car / car, road, road.
    road: TP 1, FN 1, FP 1 (the car pixel predicted road; the void one does not count) -> 1/3.
    car: TP 2, FN 1, FP 1 -> 1/2. mIoU over the two classes present: 5/12."""
    truth = np.array([[7, 7, 26], [26, 26, 0]], dtype=np.uint8)
    prediction = np.array([[0, 13, 13], [13, 0, 0]], dtype=np.uint8)
    matrix = score([(prediction, truth)])
    iou = matrix.class_iou()
    assert iou[0] == pytest.approx(1 / 3) and iou[13] == pytest.approx(1 / 2)
    assert np.isnan(iou[1])
    assert matrix.mean_iou() == pytest.approx(5 / 12)
    assert matrix.pixel_accuracy() == pytest.approx(3 / 5)


def test_size_mismatch_and_bad_ids_are_errors():
    matrix = cityscapes.ConfusionMatrix()
    with pytest.raises(ValueError, match="differ in size"):
        matrix.add(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        matrix.add(np.full((2, 2), 19, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        cityscapes.label_ids(np.array([19]))


def test_live_cityscapesscripts_when_installed(tmp_path):
    """The recorded answers, recomputed by cityscapesScripts itself (skips without it)."""
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    from PIL import Image

    args = ev.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    for case, pairs in cityscapes_cases.cases().items():
        predictions, truths = [], []
        for index, (prediction, truth) in enumerate(pairs):
            p, g = tmp_path / f"{case}_{index}_pred.png", tmp_path / f"{case}_{index}_gtFine_labelIds.png"
            Image.fromarray(cityscapes.label_ids(prediction)).save(p)
            Image.fromarray(truth).save(g)
            predictions.append(str(p))
            truths.append(str(g))
        result = ev.evaluateImgLists(predictions, truths, args)
        assert score(pairs).mean_iou() == pytest.approx(result["averageScoreClasses"], abs=1e-12), case
