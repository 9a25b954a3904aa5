"""dataset: check the layout, list the samples in a stable order, apply `--limit`.

`samples.json` is the named subset every later stage works on: `--limit 10` is always the same
10 samples, and results are matched to samples by id, never by list position.
"""
from __future__ import annotations

import functools
from pathlib import Path

from ..download import cache_dir, extract, fetch
from ..errors import UserError
from ..plugin import Sample, shard_key
from ..state import Fingerprint, digest_of, read_json, write_json_atomic
from .base import InputAbsent, Stage, StageResult, would_download

SAMPLES = "samples.json"


class DatasetStage(Stage):
    kind = "dataset"

    def outputs(self) -> list[str]:
        return [SAMPLES]

    @functools.cached_property
    def root(self) -> Path:
        """Resolved once per run: planning and execution share it (and any download)."""
        if self.run.options.data:
            root = Path(self.run.options.data).expanduser().resolve()
            if not root.is_dir():
                raise UserError(f"--data {self.run.options.data} is not a directory")
            return root
        cached = cache_dir() / "data" / self.config.name
        if self.run.options.plans_only and not cached.is_dir():
            raise InputAbsent(self.absent_input() or "needs --data")
        if self.config.downloads and not cached.is_dir():
            self.download(cached)
        if cached.is_dir():
            return cached / (self.config.archive_root or "")
        raise UserError(
            f"no {self.config.name} dataset: pass --data PATH",
            hint=self.config.instructions or f"expected files: {', '.join(self.config.required)}",
        )

    def absent_input(self) -> str | None:
        if self.run.options.data or (cache_dir() / "data" / self.config.name).is_dir():
            return None
        if self.config.downloads:
            return would_download([(item.url, item.size) for item in self.config.downloads])
        return f"needs --data ({self.config.name})"

    def download(self, destination: Path) -> None:
        for item in self.config.downloads:
            archive = fetch(item.url, cache_dir() / "downloads" / item.url.rsplit("/", 1)[-1], item.sha256)
            extract(archive, destination)

    def check_layout(self, root: Path) -> None:
        missing = [pattern for pattern in self.config.required if not any(root.glob(pattern))]
        if missing:
            raise UserError(
                f"{self.config.name} at {root} lacks {', '.join(missing)}",
                hint=self.config.instructions or "point --data at the dataset's root directory",
            )

    @functools.cached_property
    def samples(self) -> list[Sample]:
        """Listed once per run (COCO's annotation file is 25 MB): the fingerprint and the
        execution see the same list."""
        root = self.root
        self.check_layout(root)
        samples = list(self.run.plugin.list_samples(root, self.run.settings("dataset")))
        ids = [s.id for s in samples]
        if len(set(ids)) != len(ids):
            raise UserError(f"plugin {self.run.recipe.plugin} returned duplicate sample ids")
        limit = self.run.options.limit
        samples = samples[:limit] if limit else samples
        shard = self.run.shard  # after --limit: the shards of a limited run partition its subset
        return [s for s in samples if shard.holds(shard_key(self.run.plugin, s))] if shard else samples

    def fingerprint(self) -> Fingerprint:
        samples = self.samples
        # Dataset files are fingerprinted by name, size and mtime: hashing 50 GB of COCO on
        # every run would cost more than the runs it saves.
        manifest = [[s.id, str(s.path), *_stat(s.path)] for s in samples]
        params = {**self.params(), "limit": self.run.options.limit, "data": str(self.root)}
        for item in params.get("downloads", []):
            item.pop("size", None)  # informative (the dry run's line), not what is downloaded
        if self.run.shard:
            params["shard"] = str(self.run.shard)
        return Fingerprint(params=params, inputs={"dataset manifest": digest_of(manifest), "plugin": self.run.plugin_source_digest()})

    def execute(self, staging: Path) -> StageResult:
        samples = self.samples
        write_json_atomic(self.staged(staging, SAMPLES), {
            "data": str(self.root),
            "limit": self.run.options.limit,
            "samples": [{"id": s.id, "path": str(s.path) if s.path else None, "meta": s.meta} for s in samples],
        })
        return StageResult(info={"data": str(self.root), "samples": len(samples)})


def _stat(path: Path | None) -> list[int]:
    if path is None or not Path(path).exists():
        return []
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def load_samples(model_dir: Path) -> tuple[Path, list[Sample]]:
    record = read_json(model_dir / SAMPLES)
    if record is None:
        raise UserError(f"{model_dir / SAMPLES} is missing or unreadable", hint="run the dataset stage first")
    samples = [Sample(s["id"], Path(s["path"]) if s["path"] else None, s["meta"]) for s in record["samples"]]
    return Path(record["data"]), samples
