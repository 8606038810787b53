from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from trainer.loaders.base import ItemLoader
from trainer.loaders.local import InlineTextLoader, JsonlCatalogLoader, LocalFileLoader
from trainer.loaders.s3 import S3Access, S3ItemLoader


def open_item_loader(url: str | None, access: S3Access = S3Access(), inline: Mapping[str, str] | None = None) -> ItemLoader:
    """``s3://bucket/prefix/{object_id}.txt``, ``file:///dir/{object_id}.txt``, ``file:///catalog.jsonl``;
    None: the texts sent inline with the results."""
    if url is None:
        return InlineTextLoader(inline or {})
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return S3ItemLoader(parsed.netloc, unquote(parsed.path.lstrip("/")), access)
    if parsed.scheme in ("file", ""):
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if path.endswith(".jsonl"):
            return JsonlCatalogLoader(Path(path))
        return LocalFileLoader(path)
    raise ValueError(f"unknown items URL scheme {parsed.scheme!r} in {url!r}: use s3:// or file://")
