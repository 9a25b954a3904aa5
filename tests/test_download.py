"""Downloads resume and verify; archives extract safely. A loopback HTTP server stands in for
the internet."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from om_pipeline.download import extract, fetch
from om_pipeline.errors import UserError

PAYLOAD = bytes(range(256)) * 400


class RangeHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        RangeHandler.requests.append(self.headers.get("Range"))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/weights.pth"
    httpd.shutdown()


def test_resumes_a_partial_download_and_verifies_it(server, tmp_path):
    destination = tmp_path / "weights.pth"
    (tmp_path / "weights.pth.part").write_bytes(PAYLOAD[:1000])
    fetch(server, destination, hashlib.sha256(PAYLOAD).hexdigest())
    assert destination.read_bytes() == PAYLOAD
    assert RangeHandler.requests == ["bytes=1000-"]
    fetch(server, destination, hashlib.sha256(PAYLOAD).hexdigest())  # cached: no request
    assert len(RangeHandler.requests) == 1


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    with pytest.raises(UserError, match="does not match the recipe's"):
        fetch(server, tmp_path / "w.pth", "0" * 64)
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
