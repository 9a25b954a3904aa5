"""Downloads resume and verify; archives extract safely. A loopback HTTP server stands in for
the internet."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from om_pipeline.download import extract, fetch
from om_pipeline.errors import UserError

PAYLOAD = bytes(range(256)) * 400


@pytest.fixture
def server(loopback):
    loopback.files["weights.pth"] = PAYLOAD
    return loopback


def test_resumes_a_partial_download_and_verifies_it(server, tmp_path):
    destination = tmp_path / "weights.pth"
    (tmp_path / "weights.pth.part").write_bytes(PAYLOAD[:1000])
    fetch(server.url("weights.pth"), destination, hashlib.sha256(PAYLOAD).hexdigest())
    assert destination.read_bytes() == PAYLOAD
    assert server.requests == [("weights.pth", "bytes=1000-")]
    fetch(server.url("weights.pth"), destination, hashlib.sha256(PAYLOAD).hexdigest())  # cached: no request
    assert len(server.requests) == 1


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    with pytest.raises(UserError, match="does not match the recipe's"):
        fetch(server.url("weights.pth"), tmp_path / "w.pth", "0" * 64)
    assert not list(tmp_path.iterdir())


def test_unreachable_url_says_where_to_put_the_file(tmp_path):
    with pytest.raises(UserError) as info:
        fetch("http://127.0.0.1:9/nothing.pth", tmp_path / "w.pth", None)
    assert str(tmp_path / "w.pth") in info.value.hint


def test_archive_members_cannot_escape(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as bundle:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        bundle.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(tarfile.TarError):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()
    assert not (tmp_path / "out.partial").exists()
