"""Items on the local disk: one file per item, or one JSON-lines catalog."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from trainer.loaders.base import ItemLoader


class LocalFileLoader(ItemLoader):
    def __init__(self, path_template: str):
        if "{object_id}" not in path_template:
            raise ValueError(f"path template {path_template!r} must contain {{object_id}}")
        self.path_template = path_template

    def load(self, object_ids: list[str]) -> dict[str, str]:
        found = {}
        for object_id in object_ids:
            path = Path(self.path_template.format(object_id=object_id))
            if path.is_file():
                found[object_id] = path.read_text(encoding="utf-8")
        return found


class JsonlCatalogLoader(ItemLoader):
    """A catalog file of ``{"id": ..., "text": ...}`` lines (``title`` is prepended when present,
    as in BEIR corpora)."""

    def __init__(self, path: Path):
        self.path = path
        self._texts: dict[str, str] | None = None

    def load(self, object_ids: list[str]) -> dict[str, str]:
        texts = self._catalog()
        return {object_id: texts[object_id] for object_id in object_ids if object_id in texts}

    def list_ids(self) -> list[str]:
        return list(self._catalog())

    def _catalog(self) -> dict[str, str]:
        if self._texts is None:
            self._texts = {}
            with self.path.open(encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        record = json.loads(line)
                        object_id = str(record.get("id", record.get("_id")))
                        title = record.get("title") or ""
                        self._texts[object_id] = f"{title}. {record['text']}" if title else record["text"]
        return self._texts


class InlineTextLoader(ItemLoader):
    """Texts the search product sent along with the results (``meta["text"]``)."""

    def __init__(self, texts: Mapping[str, str]):
        self._texts = dict(texts)

    def load(self, object_ids: list[str]) -> dict[str, str]:
        return {object_id: self._texts[object_id] for object_id in object_ids if object_id in self._texts}
