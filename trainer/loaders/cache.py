"""A per-task cache in front of any loader: each item is fetched from its source once per task, and
kept on disk so a restarted task does not download again."""

from __future__ import annotations

import hashlib
from pathlib import Path

from trainer.loaders.base import ItemLoader


class CachedItemLoader(ItemLoader):
    def __init__(self, source: ItemLoader, directory: Path):
        self.source = source
        self.directory = directory
        self.batch_size = source.batch_size
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fetched = 0  # ids that had to come from the source

    def load(self, object_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        missing: list[str] = []
        for object_id in object_ids:
            path = self._path(object_id)
            if path.is_file():
                found[object_id] = path.read_text(encoding="utf-8")
            else:
                missing.append(object_id)
        if missing:
            fresh = self.source.load(missing)
            self.fetched += len(fresh)
            for object_id, text in fresh.items():
                self._path(object_id).write_text(text, encoding="utf-8")
            found.update(fresh)
        return found

    def _path(self, object_id: str) -> Path:
        # Object ids may contain '/' or be long: hash them into safe file names.
        return self.directory / hashlib.sha256(object_id.encode()).hexdigest()
