"""The index on Milvus: one collection per version, an alias for the served one.

The same code runs on Milvus Lite (a local ``.db`` folder, or the Milvus Lite server the embedded
runtime starts) and on a Milvus server or cluster (``http://host:19530``). Version metadata lives in
each collection's properties, so any process connected to the database sees the same versions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone

from index.base import Hit, IndexedItem, IndexVersion, SearchAnswer, VectorIndex

log = logging.getLogger(__name__)

MAX_ID_BYTES = 512
MAX_TEXT_BYTES = 65_535  # Milvus VARCHAR limits are in bytes


class MilvusIndex(VectorIndex):
    """``MilvusIndex(uri, name)``: ``uri`` a Milvus Lite path (``…/milvus.db``) or a server URI."""

    def __init__(self, uri: str, name: str = "es_items", token: str | None = None, timeout_s: float = 30.0):
        from pymilvus import MilvusClient

        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", name):
            raise ValueError(f"index name {name!r}: letters, digits and underscores, not starting with a digit")
        self.uri = uri
        self.name = name
        # No keepalive pings on an idle channel: gRPC servers on their defaults (Milvus Lite's) answer
        # pymilvus' 10-second idle pings with GOAWAY "too_many_pings" and a screen of log lines.
        self.client = MilvusClient(uri=uri, token=token or "", timeout=timeout_s,
                                   grpc_options={"grpc.keepalive_time_ms": 60_000,
                                                 "grpc.keepalive_permit_without_calls": False})

    # --- versions -------------------------------------------------------------------------------

    def _collection(self, version: int) -> str:
        return f"{self.name}__v{version:05d}"

    def create_version(self, model_uri: str, embedding_dim: int, model_fingerprint: str = "") -> IndexVersion:
        from pymilvus import DataType

        existing = self.versions()
        number = (existing[-1].version if existing else 0) + 1
        created = datetime.now(timezone.utc)
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=embedding_dim)
        index_params = self.client.prepare_index_params()
        index_params.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        version = IndexVersion(number, self._collection(number), model_uri, embedding_dim, created,
                               model_fingerprint=model_fingerprint)
        self.client.create_collection(
            version.collection, schema=schema, index_params=index_params, consistency_level="Strong",
            properties=_properties(version),
        )
        return version

    def versions(self) -> list[IndexVersion]:
        prefix = f"{self.name}__v"
        found = []
        for collection in self.client.list_collections():
            if collection.startswith(prefix):
                properties = self.client.describe_collection(collection).get("properties") or {}
                if "es.version" in properties:
                    found.append(_version(collection, properties))
        return sorted(found, key=lambda v: v.version)

    def _describe(self, collection: str) -> IndexVersion:
        return _version(collection, self.client.describe_collection(collection).get("properties") or {})

    def served(self) -> IndexVersion | None:
        if self.name not in self.client.list_aliases().get("aliases", []):
            return None
        return self._describe(self.client.describe_alias(self.name)["collection_name"])

    def complete(self, version: IndexVersion) -> IndexVersion:
        self.client.flush(version.collection)
        count = int(self.client.get_collection_stats(version.collection)["row_count"])
        done = IndexVersion(version.version, version.collection, version.model_uri, version.embedding_dim,
                            version.created_at, complete=True, item_count=count,
                            model_fingerprint=version.model_fingerprint)
        self.client.alter_collection_properties(version.collection, properties=_properties(done))
        return done

    def serve(self, version: IndexVersion) -> None:
        if not self._describe(version.collection).complete:
            raise ValueError(f"version {version.version} is not complete: it cannot be served")
        if self.name in self.client.list_aliases().get("aliases", []):
            self.client.alter_alias(version.collection, self.name)  # one step: no moment without a target
        else:
            self.client.create_alias(version.collection, self.name)

    def drop(self, version: IndexVersion) -> None:
        served = self.served()
        if served is not None and served.version == version.version:
            raise ValueError(f"version {version.version} is served: serve another one before dropping it")
        self.client.drop_collection(version.collection)

    # --- items ----------------------------------------------------------------------------------

    def upsert(self, version: IndexVersion, items: Sequence[IndexedItem]) -> None:
        if not items:
            return
        rows = [{"id": _clip(item.object_id, MAX_ID_BYTES, "object_id"), "text": _clip(item.text, MAX_TEXT_BYTES),
                 "vector": [float(x) for x in item.vector]} for item in items]
        self.client.upsert(version.collection, rows)

    def delete(self, version: IndexVersion, object_ids: Sequence[str]) -> None:
        if object_ids:
            self.client.delete(version.collection, ids=list(object_ids))

    def iter_items(self, version: IndexVersion, batch_size: int = 1000) -> Iterator[tuple[str, str]]:
        iterator = self.client.query_iterator(version.collection, batch_size=batch_size, filter="",
                                              output_fields=["id", "text"])
        try:
            while True:
                rows = iterator.next()
                if not rows:
                    return
                for row in rows:
                    yield row["id"], row["text"]
        finally:
            iterator.close()

    def search(self, vectors: Sequence[Sequence[float]], k: int, version: IndexVersion | None = None) -> list[SearchAnswer]:
        # The served collection is resolved once, and the query goes to that collection by name: the
        # answer and the version it reports cannot disagree, even if the alias moves meanwhile.
        target = version or self.served()
        if target is None:
            from index.base import NoServedVersion

            raise NoServedVersion(f"index {self.name!r} serves no version yet: no refresh has completed")
        results = self.client.search(target.collection, data=[[float(x) for x in v] for v in vectors], limit=k,
                                     output_fields=["text"], search_params={"metric_type": "COSINE"})
        return [SearchAnswer(target, [Hit(hit["id"], float(hit["distance"]), hit["entity"].get("text", ""))
                                      for hit in hits]) for hits in results]

    def close(self) -> None:
        self.client.close()


def _properties(version: IndexVersion) -> dict[str, str]:
    return {
        "es.version": str(version.version), "es.model_uri": version.model_uri,
        "es.embedding_dim": str(version.embedding_dim), "es.created_at": version.created_at.isoformat(),
        "es.complete": "true" if version.complete else "false", "es.item_count": str(version.item_count),
        "es.model_fingerprint": version.model_fingerprint,
    }


def _version(collection: str, properties: dict[str, str]) -> IndexVersion:
    return IndexVersion(
        version=int(properties["es.version"]), collection=collection, model_uri=properties.get("es.model_uri", ""),
        embedding_dim=int(properties.get("es.embedding_dim", 0)),
        created_at=datetime.fromisoformat(properties.get("es.created_at", "1970-01-01T00:00:00+00:00")),
        complete=properties.get("es.complete") == "true", item_count=int(properties.get("es.item_count", 0)),
        model_fingerprint=properties.get("es.model_fingerprint", ""),
    )


def _clip(text: str, limit: int, what: str = "") -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    if what:
        raise ValueError(f"{what} {text[:40]!r}… is longer than {limit} bytes")
    return encoded[:limit].decode("utf-8", errors="ignore")
