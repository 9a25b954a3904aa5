"""ais_bench's batching rules (ascend-tools.md §2.3-2.4)."""
from __future__ import annotations

import numpy as np
import pytest

from om_pipeline import batching
from om_pipeline.batching import Batch, BatchingError


def test_natural_sort_compares_digit_runs_as_numbers_and_ignores_case():
    paths = ["d/img10.bin", "d/img2.bin", "d/IMG1.bin", "d/img1.bin", "d/a.bin"]
    assert batching.natural_sort(paths) == ["d/a.bin", "d/IMG1.bin", "d/img1.bin", "d/img2.bin", "d/img10.bin"]


def test_list_input_files_keeps_bin_and_npy_in_natural_order(tmp_path):
    for name in ["s10.bin", "s2.BIN", "s1.npy", "s3.NPY", "notes.txt", "s4.bin.bak"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.bin").mkdir()  # a directory is skipped even with a matching name
    names = [p.rsplit("/", 1)[1] for p in batching.list_input_files(tmp_path)]
    assert names == ["s1.npy", "s2.BIN", "s3.NPY", "s10.bin"]


def test_list_input_files_error_is_ais_bench_text(tmp_path):
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(BatchingError) as err:
        batching.list_input_files(tmp_path)
    assert err.value.message == (
        f"{tmp_path} of input args not find valid file,valid file format:[*.npy *.NPY *.bin *.BIN]"
    )


def test_files_per_batch_divides_exactly():
    assert batching.files_per_batch(64 * 602112, 602112) == 64
    with pytest.raises(BatchingError, match=r"^arg0 tensorsize: 196608 filesize: 602112 not match$"):
        batching.files_per_batch(196608, 602112)
    with pytest.raises(BatchingError, match="filesize: 0 not match"):
        batching.files_per_batch(8, 0)


def test_split_file_list_feeds_consecutive_chunks_to_the_inputs():
    assert batching.split_file_list(["a", "b", "c", "d"], 2) == [["a", "b"], ["c", "d"]]
    with pytest.raises(BatchingError, match=r"fileslist:3 intensor:2 not match"):
        batching.split_file_list(["a", "b", "c"], 2)


def test_plan_batches_pads_the_last_batch_and_pairs_inputs_by_position():
    images = [f"i{n}.bin" for n in range(10)]
    sizes = [f"s{n}.bin" for n in range(10)]
    batches = batching.plan_batches([images, sizes], 4)
    assert [b.padding for b in batches] == [0, 0, 2]
    assert batches[2].files == (("i8.bin", "i9.bin"), ("s8.bin", "s9.bin"))
    assert batches[2].samples == [("i8.bin", "s8.bin"), ("i9.bin", "s9.bin")]
    assert sum(len(b.samples) for b in batches) == 10


def test_plan_batches_refuses_inputs_with_different_counts():
    with pytest.raises(BatchingError, match="different numbers of files"):
        batching.plan_batches([["a", "b"], ["c"]], 1)


def test_batch_array_pads_with_the_batch_first_file(tmp_path):
    files = []
    for n in range(2):
        path = tmp_path / f"{n}.bin"
        np.full((1, 2), n + 1, np.float32).tofile(path)
        files.append(str(path))
    array = batching.batch_array(files, 2, np.float32, (4, 2))
    assert array.tolist() == [[1, 1], [2, 2], [1, 1], [1, 1]]
    with pytest.raises(BatchingError, match=r"^ndata size:24 not match 32$"):
        batching.batch_array(files, 1, np.float32, (4, 2))


def test_read_input_file_takes_bytes_as_they_are(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(4, dtype=np.float32))
    np.arange(4, dtype=np.int32).tofile(tmp_path / "b.bin")
    assert batching.read_input_file(tmp_path / "a.npy", np.float32, (2, 2)).tolist() == [[0, 1], [2, 3]]
    assert batching.read_input_file(tmp_path / "b.bin", np.int32).tolist() == [0, 1, 2, 3]
    # no dtype conversion: int32 bytes read as float32 are not 0..3
    assert batching.read_input_file(tmp_path / "b.bin", np.float32)[1] != 1.0
    assert batching.file_nbytes(tmp_path / "a.npy") == 16


def test_output_stem_cuts_at_the_first_dot():
    assert batching.output_stem("/data/COCO_val.2014.jpg.bin") == "COCO_val"
    assert batching.output_stem("pure_infer_data") == "pure_infer_data"


def test_split_outputs_along_axis():
    pieces = batching.split_outputs(np.arange(8).reshape(2, 4), 4, axis=1)
    assert [p.tolist() for p in pieces] == [[[0], [4]], [[1], [5]], [[2], [6]], [[3], [7]]]
    assert len(batching.split_outputs(np.zeros((3, 5)), 1)) == 1  # one file: no divisibility needed
    with pytest.raises(BatchingError):
        batching.split_outputs(np.zeros((3, 5)), 2)
    with pytest.raises(BatchingError):
        batching.split_outputs(np.zeros(3), 1, axis=1)


def test_save_output_formats(tmp_path):
    floats = np.array([[1.5, 2.0], [3.25, 4.0]], np.float32)
    assert batching.save_output(floats, tmp_path, "img", 0, "BIN").name == "img_0.bin"
    assert np.fromfile(tmp_path / "img_0.bin", np.float32).tolist() == [1.5, 2.0, 3.25, 4.0]
    batching.save_output(floats, tmp_path, "img", 1, "NPY")
    assert np.load(tmp_path / "img_1.npy").tolist() == floats.tolist()
    batching.save_output(floats.reshape(1, 2, 2), tmp_path, "img", 2, "TXT")
    assert (tmp_path / "img_2.txt").read_text() == "1.500000 2.000000 \n3.250000 4.000000 \n"
    batching.save_output(np.array([7, 8], np.int64), tmp_path, "img", 3, "TXT")
    assert (tmp_path / "img_3.txt").read_text() == "7 8 \n"


def test_batch_samples_of_a_pure_inference_batch():
    batch = Batch((("pure_infer_data",), ("pure_infer_data",)))
    assert batch.samples == [("pure_infer_data", "pure_infer_data")]
