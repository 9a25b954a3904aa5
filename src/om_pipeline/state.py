"""What the runner remembers between runs: per-stage records and a digest cache.

A stage record is written only after the stage's outputs were renamed into place, so a killed
run never leaves a record that vouches for half-written outputs. Records keep the parts of the
fingerprint (parameters, input digests, tool versions, upstream fingerprints), not just the
hash, so the planner can say *what* changed.

File digests are cached by (size, mtime_ns, inode): a 10 GB checkpoint is hashed once, not on
every run (the complaint in dvc#10691). Files inside the model directory are keyed by their path
relative to it, so a moved work directory keeps its cache (a copy rehashes: new inodes).

A directory output is recorded as a manifest, as DVC's `.dir` file: {relative file: sha256}, so a
file changed, added or removed inside it is a changed output.

Records and the digest cache are read defensively: a file of the wrong JSON shape (a list, a
string, outputs as a list) is treated as absent, so the stage reruns.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


class JsonText(str):
    """JSON already serialised (an evaluator that serialised its results as they came, so that
    none of it is left after the last sample): written as it is."""


def write_json_atomic(path: Path, value: Any, indent: int | None = 2) -> None:
    """`indent=None` for bulk data (a COCO results list, an evaluator's state): json's C encoder
    then writes it, ten times faster than the indenting pure-Python one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # dumps, not dump: json.dump never uses the C encoder
            handle.write(value if isinstance(value, JsonText) else
                         json.dumps(value, indent=indent, sort_keys=True, default=str, separators=None if indent else (",", ":")))
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or torn: treated as "no record", so the stage reruns


@dataclass
class Fingerprint:
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # path -> sha256
    tools: dict[str, str] = field(default_factory=dict)  # tool -> version
    upstream: dict[str, str] = field(default_factory=dict)  # stage key -> its fingerprint

    @property
    def value(self) -> str:
        return digest_of(asdict(self))

    def differences(self, old: dict[str, Any]) -> list[str]:
        """Human reasons, e.g. 'parameter args changed', 'input onnx/x.onnx changed'."""
        reasons: list[str] = []
        for name, new_part in asdict(self).items():
            old_part = old.get(name, {})
            for key in sorted(set(new_part) | set(old_part)):
                if new_part.get(key) != old_part.get(key):
                    reasons.append(_describe_change(name, key, old_part.get(key), new_part.get(key)))
        return reasons


def _describe_change(part: str, key: str, old: Any, new: Any) -> str:
    if part == "tools":
        return f"{key} {old or 'absent'} -> {new or 'absent'}"
    if part == "upstream":
        return f"upstream stage {key} re-ran" if old and new else f"upstream stage {key} {'added' if new else 'removed'}"
    noun = "parameter" if part == "params" else "input"
    return f"{noun} {key} {'changed' if old is not None and new is not None else ('added' if new is not None else 'removed')}"


class StateStore:
    """`<model workdir>/.ompipe/`: stage records and the digest cache."""

    def __init__(self, model_dir: Path):
        self.root = model_dir / ".ompipe"
        self._model_dir = model_dir.resolve()
        self._digests_path = self.root / "digests.json"
        self._digests: dict[str, Any] | None = None

    def record_path(self, key: str) -> Path:
        return self.root / "stages" / f"{_file_safe(key)}.json"

    def record(self, key: str) -> dict[str, Any] | None:
        record = read_json(self.record_path(key))
        return record if _is_record(record) else None

    def save_record(self, key: str, record: dict[str, Any]) -> None:
        write_json_atomic(self.record_path(key), record)

    def forget(self, key: str) -> None:
        self.record_path(key).unlink(missing_ok=True)

    # -- digests
    def file_digest(self, path: Path) -> str:
        sha, changed = self._digest(path)
        if changed:
            self._save_digests()
        return sha

    def directory_manifest(self, directory: Path) -> dict[str, str]:
        """{file path relative to `directory` (POSIX): sha256} for every file below it; the
        digest cache is written once, not once per file (an inputs/ directory holds thousands)."""
        manifest, changed = {}, False
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            manifest[path.relative_to(directory).as_posix()], new = self._digest(path)
            changed = changed or new
        if changed:
            self._save_digests()
        return manifest

    def _digest(self, path: Path) -> tuple[str, bool]:
        """(sha256, whether the cache gained an entry)."""
        stat = path.stat()
        identity = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        cache = self._load_digests()
        key = self.model_relative(path)
        cached = cache.get(key)
        if isinstance(cached, dict) and cached.get("identity") == identity and isinstance(cached.get("sha256"), str):
            return cached["sha256"], False
        sha = sha256_file(path)
        cache[key] = {"identity": identity, "sha256": sha}
        return sha, True

    def model_relative(self, path: Path) -> str:
        """Relative to the model directory when inside it (so a moved work directory keeps its
        records and digests), else absolute."""
        resolved = path.resolve()
        return resolved.relative_to(self._model_dir).as_posix() if resolved.is_relative_to(self._model_dir) else str(resolved)

    def _save_digests(self) -> None:
        """Entries of files that are gone are dropped first: a files-mode run digests every
        `.bin` of inputs/ and infer/ (30k for TransPose's 15k persons), which a later run clears,
        and the whole cache is written whenever one entry changes. Compact: json's C encoder."""
        cache = self._load_digests()
        for key in [key for key in cache if not (self._model_dir / key).exists()]:  # an absolute key stays absolute
            del cache[key]
        write_json_atomic(self._digests_path, cache, indent=None)

    def _load_digests(self) -> dict[str, Any]:
        if self._digests is None:
            cache = read_json(self._digests_path)
            self._digests = cache if isinstance(cache, dict) else {}
        return self._digests


def _is_record(record: Any) -> bool:
    """A stage record as the runner writes it; anything else (a torn or hand-edited file) is no record."""
    return (isinstance(record, dict) and isinstance(record.get("fingerprint"), str)
            and isinstance(record.get("outputs", {}), dict)
            and all(isinstance(v, (str, dict)) for v in record.get("outputs", {}).values())
            and all(isinstance(record.get(part, {}), dict) for part in ("parts", "info"))
            and all(isinstance(part, dict) for part in record.get("parts", {}).values()))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_blob_id(path: Path) -> str:
    """The id git gives this file's content (`git hash-object`), without needing git."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _file_safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
