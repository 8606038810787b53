"""One contract for every vector index backend: Milvus Lite in-process, the Milvus Lite server of the
embedded runtime, and a Milvus server wherever ES_MILVUS_URI names one (reported as skipped otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

from index.base import IndexedItem, NoServedVersion
from index.milvus_index import MilvusIndex

DIM = 8


def items(prefix: str, n: int, seed: int) -> list[IndexedItem]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [IndexedItem(f"{prefix}-{i}", f"text of {prefix} {i}", v.tolist()) for i, v in enumerate(vectors)]


def built(index: MilvusIndex, model: str, prefix: str, n: int = 20, seed: int = 0):
    version = index.create_version(model, DIM, model_fingerprint=f"fp-{model}")
    index.upsert(version, items(prefix, n, seed))
    return index.complete(version)


def test_nothing_is_served_before_the_first_version(vector_index: MilvusIndex):
    assert vector_index.served() is None and vector_index.versions() == []
    with pytest.raises(NoServedVersion):
        vector_index.search([[1.0] * DIM], 3)


def test_a_complete_version_is_served_and_answers_with_its_own_items(vector_index: MilvusIndex):
    catalog = items("a", 20, 0)
    version = vector_index.create_version("runs:/one/model", DIM, "fp1")
    vector_index.upsert(version, catalog)
    version = vector_index.complete(version)
    vector_index.serve(version)

    (answer,) = vector_index.search([catalog[3].vector], 5)

    assert answer.version.version == version.version and answer.version.model_uri == "runs:/one/model"
    assert answer.hits[0].object_id == "a-3" and answer.hits[0].text == "text of a 3"
    assert answer.hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in answer.hits] == sorted((h.score for h in answer.hits), reverse=True)
    assert vector_index.served().item_count == 20 and vector_index.served().model_fingerprint == "fp1"


def test_an_incomplete_version_cannot_be_served(vector_index: MilvusIndex):
    version = vector_index.create_version("runs:/x/model", DIM)
    vector_index.upsert(version, items("x", 3, 1))

    with pytest.raises(ValueError, match="not complete"):
        vector_index.serve(version)
    assert vector_index.served() is None


def test_serving_a_new_version_switches_every_search_and_keeps_the_old_one_for_rollback(vector_index: MilvusIndex):
    first = built(vector_index, "runs:/1/model", "old")
    vector_index.serve(first)
    second = built(vector_index, "runs:/2/model", "new", seed=5)
    assert second.version > first.version
    assert vector_index.served().version == first.version  # building a version serves nothing new

    vector_index.serve(second)

    (answer,) = vector_index.search([[1.0] * DIM], 20)
    assert answer.version.version == second.version
    assert all(hit.object_id.startswith("new-") for hit in answer.hits)
    assert vector_index.previous().version == first.version

    assert vector_index.rollback().version == first.version
    (answer,) = vector_index.search([[1.0] * DIM], 20)
    assert answer.version.version == first.version and all(h.object_id.startswith("old-") for h in answer.hits)


def test_rollback_without_an_earlier_version_is_refused(vector_index: MilvusIndex):
    vector_index.serve(built(vector_index, "runs:/1/model", "a"))

    with pytest.raises(NoServedVersion, match="no earlier complete version"):
        vector_index.rollback()


def test_upserts_replace_by_id_and_deletes_remove(vector_index: MilvusIndex):
    version = built(vector_index, "runs:/1/model", "a", n=5)
    vector_index.serve(version)
    moved = IndexedItem("a-0", "changed text", [0.0] * (DIM - 1) + [1.0])

    vector_index.upsert(version, [moved, IndexedItem("b-new", "added", [1.0] + [0.0] * (DIM - 1))])
    vector_index.delete(version, ["a-1", "not-there"])

    stored = dict(vector_index.iter_items(version, batch_size=2))
    assert stored["a-0"] == "changed text" and stored["b-new"] == "added" and "a-1" not in stored
    assert len(stored) == 5
    (answer,) = vector_index.search([moved.vector], 1)
    assert answer.hits[0].object_id == "a-0"


def test_prune_keeps_the_served_and_named_versions_and_drops_leftovers(vector_index: MilvusIndex):
    old = built(vector_index, "runs:/1/model", "a")
    previous = built(vector_index, "runs:/2/model", "b")
    leftover = vector_index.create_version("runs:/3/model", DIM)  # a refresh that died midway
    current = built(vector_index, "runs:/4/model", "c")
    vector_index.serve(current)

    dropped = vector_index.prune(keep=[previous])

    assert {v.version for v in dropped} == {old.version, leftover.version}
    assert [v.version for v in vector_index.versions()] == [previous.version, current.version]
    with pytest.raises(ValueError, match="served"):
        vector_index.drop(current)


def test_versions_are_seen_alike_by_a_second_client(vector_index: MilvusIndex):
    if "://" not in vector_index.uri:
        pytest.skip("Milvus Lite opened in-process admits one client per process folder")
    vector_index.serve(built(vector_index, "runs:/1/model", "a"))

    other = MilvusIndex(vector_index.uri, vector_index.name)
    try:
        assert other.served() == vector_index.served()
    finally:
        other.close()
