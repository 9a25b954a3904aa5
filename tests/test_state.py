"""Stage records, fingerprints and the digest cache."""
from __future__ import annotations

import json
import os

from om_pipeline import state as state_module
from om_pipeline.state import Fingerprint, StateStore, git_blob_id


def test_digest_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    big = tmp_path / "weights.bin"
    big.write_bytes(b"x" * 1000)
    calls = []
    real = state_module.sha256_file
    monkeypatch.setattr(state_module, "sha256_file", lambda p: calls.append(p) or real(p))
    store = StateStore(tmp_path / "model")
    first = store.file_digest(big)
    assert StateStore(tmp_path / "model").file_digest(big) == first  # a new store reads the cache file
    assert len(calls) == 1
    big.write_bytes(b"y" * 1000)
    os.utime(big, ns=(1, 1))
    assert store.file_digest(big) != first and len(calls) == 2


def test_the_digest_cache_forgets_files_that_are_gone(tmp_path):
    """A cleared inputs/ leaves no entry behind (the whole cache is rewritten on every change:
    a files-mode run's 30k .bin entries made each later save take seconds)."""
    model = tmp_path / "model"
    inputs = model / "inputs"
    inputs.mkdir(parents=True)
    for index in range(3):
        (inputs / f"{index}.bin").write_bytes(bytes([index]))
    outside = tmp_path / "weights.pt"
    outside.write_bytes(b"w")
    store = StateStore(model)
    assert len(store.directory_manifest(inputs)) == 3
    store.file_digest(outside)
    cached = json.loads(store._digests_path.read_text())
    assert set(cached) == {"inputs/0.bin", "inputs/1.bin", "inputs/2.bin", str(outside.resolve())}
    (inputs / "0.bin").unlink()
    (inputs / "1.bin").unlink()
    (model / "new.bin").write_bytes(b"n")
    store.file_digest(model / "new.bin")
    assert set(json.loads(store._digests_path.read_text())) == {"inputs/2.bin", "new.bin", str(outside.resolve())}


def test_fingerprint_differences_say_what_changed():
    old = Fingerprint(params={"args": ["--log=error"]}, inputs={"patch": "a"}, tools={"cann": "7.0"}, upstream={"export": "1"})
    new = Fingerprint(params={"args": ["--log=info"]}, inputs={"patch": "a"}, tools={"cann": "8.0"}, upstream={"export": "2"})
    reasons = new.differences(vars(old))
    assert set(reasons) == {"parameter args changed", "cann 7.0 -> 8.0", "upstream stage export re-ran"}
    assert new.value != old.value and Fingerprint(**vars(new)).value == new.value


def test_records_are_written_atomically(tmp_path):
    store = StateStore(tmp_path)
    store.save_record("atc@bs1.ascend", {"fingerprint": "f"})
    assert store.record("atc@bs1.ascend") == {"fingerprint": "f"}
    store.record_path("x").parent.mkdir(parents=True, exist_ok=True)
    store.record_path("x").write_text('{"torn')
    assert store.record("x") is None  # a torn record counts as none: the stage reruns
    assert not [p for p in store.record_path("x").parent.iterdir() if p.name.endswith(".tmp")]


def test_git_blob_id_matches_git(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_plugin_fingerprint_follows_its_relative_imports(tmp_path):
    from om_pipeline.context import plugin_files

    (tmp_path / "pkg" / "models").mkdir(parents=True)
    (tmp_path / "pkg" / "metrics").mkdir()
    (tmp_path / "pkg" / "models" / "net.py").write_text("from .net_post import decode\nfrom ..metrics.ap import ap\nimport numpy\n")
    (tmp_path / "pkg" / "models" / "net_post.py").write_text("from . import tables\n")
    (tmp_path / "pkg" / "models" / "tables.py").write_text("")
    (tmp_path / "pkg" / "metrics" / "ap.py").write_text("")
    (tmp_path / "pkg" / "models" / "other.py").write_text("")
    found = {p.relative_to(tmp_path / "pkg").as_posix() for p in plugin_files(tmp_path / "pkg" / "models" / "net.py")}
    assert found == {"models/net.py", "models/net_post.py", "models/tables.py", "metrics/ap.py"}
