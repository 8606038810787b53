"""The index named by settings: ``ES_MILVUS_URI`` (a Milvus server, or the Milvus Lite server the
embedded runtime started), else the Milvus Lite database under ``ES_DATA_DIR``."""

from __future__ import annotations

from pathlib import Path

from index.milvus_index import MilvusIndex
from schemas.settings import Settings


class IndexLocked(RuntimeError):
    """The embedded database is held by another process (a running `embedding-studio up`)."""


def index_uri(settings: Settings) -> str:
    return settings.milvus_uri or str(lite_path(settings))


def lite_path(settings: Settings) -> Path:
    return (Path(settings.data_dir) / "index" / "milvus.db").resolve()


def open_index(settings: Settings) -> MilvusIndex:
    uri = index_uri(settings)
    if not settings.milvus_uri:
        lite_path(settings).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusIndex(uri, settings.index_name, token=settings.milvus_token)
    except Exception as error:
        if not settings.milvus_uri and "Open local milvus failed" in str(error):
            raise IndexLocked(
                f"the index database {uri} is open in another process (a running `embedding-studio up`?): "
                "export the ES_MILVUS_URI it printed") from None
        raise
