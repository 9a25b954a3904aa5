"""The `<id>_<i>` output layout (om_pipeline.samples): names, reading raw and reduced outputs,
writing a reduced one atomically."""
from __future__ import annotations

import numpy as np
import pytest

from om_pipeline import samples
from om_pipeline.errors import UserError
from om_pipeline.recipe import TensorSpec


SPECS = [TensorSpec(name="boxes", shape=[2, 2], dtype="float32"), TensorSpec(name="labels", shape=[2], dtype="int64")]


def test_output_i_of_a_sample_is_named_id_underscore_i(tmp_path):
    assert samples.output_path(tmp_path, "000000000139", 1).name == "000000000139_1.bin"
    assert samples.output_path(str(tmp_path), "img.v2", 0, "txt") == tmp_path / "img.v2_0.txt"


def test_raw_outputs_are_read_from_bin_or_msame_txt_and_shaped_by_their_spec(tmp_path):
    np.arange(4, dtype=np.float32).tofile(tmp_path / "a_0.bin")
    (tmp_path / "a_1.txt").write_text("3 7 \n")  # msame --outfmt TXT
    assert samples.has_output(tmp_path, "a", 0) and samples.has_output(tmp_path, "a", 1)
    assert not samples.has_output(tmp_path, "a", 2)
    boxes, labels = samples.read_outputs(tmp_path, "a", SPECS)
    assert boxes.shape == (2, 2) and boxes.dtype == np.float32 and boxes[1, 1] == 3
    assert labels.dtype == np.int64 and labels.tolist() == [3, 7]


def test_a_missing_or_misshapen_output_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no output b_0.bin for sample b"):
        samples.read_outputs(tmp_path, "b", SPECS)
    np.arange(3, dtype=np.float32).tofile(tmp_path / "b_0.bin")
    with pytest.raises(UserError, match="holds 3 values; output boxes has shape"):
        samples.read_outputs(tmp_path, "b", SPECS)


def test_reduced_outputs_round_trip_and_leave_no_partial_file(tmp_path):
    assert samples.read_reduced(tmp_path, "c") is None
    first, second = np.ones((2, 3), np.float32), np.array([5], np.int64)
    assert samples.write_reduced(tmp_path, "c", 0, first).name == "c_0.npy"
    samples.write_reduced(tmp_path, "c", 1, second)
    samples.write_reduced(tmp_path, "c", 3, second)  # after a gap: not one of the sample's outputs
    kept = samples.read_reduced(tmp_path, "c")
    assert len(kept) == 2 and np.array_equal(kept[0], first) and np.array_equal(kept[1], second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c_0.npy", "c_1.npy", "c_3.npy"]
