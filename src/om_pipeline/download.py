"""Downloads: resumable (HTTP Range), checksum-verified, cached outside the work directory.

The cache is `$OMPIPE_CACHE` (default `~/.cache/ompipe`), so `rm -rf work` never costs a
re-download, and an air-gapped user can pre-fill it from a local mirror.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from .errors import UserError
from .state import sha256_file


def cache_dir() -> Path:
    return Path(os.environ.get("OMPIPE_CACHE") or Path.home() / ".cache" / "ompipe")


def fetch(url: str, destination: Path, sha256: str | None, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download `url` to `destination` (resuming a `.part` file), then verify `sha256`."""
    if destination.is_file() and (sha256 is None or sha256_file(destination) == sha256):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = response.status == 206
            total = _total_size(response, offset if resumed else 0)
            with open(partial, "ab" if resumed else "wb") as handle:
                done = offset if resumed else 0
                while block := response.read(1 << 20):
                    handle.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(
            f"cannot download {url}: {getattr(exc, 'reason', exc)}",
            hint=f"download it yourself and put it at {destination} (a partial download resumes from {partial.name})",
        ) from None
    if sha256 and (actual := sha256_file(partial)) != sha256:
        partial.unlink()
        raise UserError(f"{url}: sha256 {actual} does not match the recipe's {sha256}", hint="the download was corrupted or the file changed upstream; try again")
    os.replace(partial, destination)
    return destination


def _total_size(response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return int(length) + offset if length else None


def extract(archive: Path, destination: Path) -> Path:
    """Unpack a tar/zip archive into `destination` atomically, refusing members that would
    land outside it."""
    if destination.is_dir():
        return destination
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    _inside(staging, member)
                bundle.extractall(staging)
        else:
            with tarfile.open(archive) as bundle:
                bundle.extractall(staging, filter="data")  # rejects absolute paths, '..' and device files
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging, destination)
    return destination


def _inside(root: Path, member: str) -> None:
    target = (root / member).resolve()
    if not target.is_relative_to(root.resolve()):
        raise UserError(f"archive member {member!r} would be written outside {root}")
