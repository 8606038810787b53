"""The index seam: what the indexer and the search endpoint need from a vector database.

An index is a set of *versions* (one collection each, all embedded with one model) and one *served*
version, named by an alias. A refresh builds a new version off to the side, marks it complete and
then serves it in one step; the version it replaced is kept so that ``rollback`` can serve it again.
Searches resolve the served version once per query, so one answer never mixes two versions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Self


class NoServedVersion(LookupError):
    """Nothing is served yet: no refresh has completed."""


@dataclass(frozen=True)
class IndexedItem:
    object_id: str
    text: str
    vector: Sequence[float]


@dataclass(frozen=True)
class IndexVersion:
    version: int
    collection: str
    model_uri: str
    embedding_dim: int
    created_at: datetime
    complete: bool = False
    item_count: int = 0
    model_fingerprint: str = ""


@dataclass(frozen=True)
class Hit:
    object_id: str
    score: float
    text: str


@dataclass(frozen=True)
class SearchAnswer:
    version: IndexVersion  # the version that answered: every hit comes from it
    hits: list[Hit]


class VectorIndex(ABC):
    """One logical index. Implementations must make ``serve`` atomic for concurrent searches."""

    @abstractmethod
    def create_version(self, model_uri: str, embedding_dim: int, model_fingerprint: str = "") -> IndexVersion:
        """A new, empty, incomplete version numbered above every existing one; not served."""

    @abstractmethod
    def upsert(self, version: IndexVersion, items: Sequence[IndexedItem]) -> None:
        """Insert or replace items (by object_id) in a version."""

    @abstractmethod
    def delete(self, version: IndexVersion, object_ids: Sequence[str]) -> None:
        """Remove items from a version; absent ids are ignored."""

    @abstractmethod
    def complete(self, version: IndexVersion) -> IndexVersion:
        """Make every write durable and mark the version complete (with its item count)."""

    @abstractmethod
    def serve(self, version: IndexVersion) -> None:
        """Switch the served alias to a complete version in one step."""

    @abstractmethod
    def versions(self) -> list[IndexVersion]:
        """Every version, oldest first."""

    @abstractmethod
    def served(self) -> IndexVersion | None:
        """The version searches use now, or None."""

    @abstractmethod
    def search(self, vectors: Sequence[Sequence[float]], k: int, version: IndexVersion | None = None) -> list[SearchAnswer]:
        """Top-k hits per query vector, all from one version (the served one unless named)."""

    @abstractmethod
    def iter_items(self, version: IndexVersion, batch_size: int = 1000) -> Iterator[tuple[str, str]]:
        """(object_id, text) of every item of a version."""

    @abstractmethod
    def drop(self, version: IndexVersion) -> None:
        """Delete a version; refuses the served one."""

    @abstractmethod
    def close(self) -> None: ...

    # --- behaviour shared by every implementation ----------------------------------------------

    def previous(self) -> IndexVersion | None:
        """The newest complete version older than the served one: what ``rollback`` serves."""
        served = self.served()
        if served is None:
            return None
        older = [v for v in self.versions() if v.complete and v.version < served.version]
        return older[-1] if older else None

    def rollback(self) -> IndexVersion:
        target = self.previous()
        if target is None:
            served = self.served()
            raise NoServedVersion("no earlier complete version to roll back to"
                                  + (f" (serving v{served.version})" if served else " (nothing is served)"))
        self.serve(target)
        return target

    def prune(self, keep: Iterable[IndexVersion]) -> list[IndexVersion]:
        """Drop every version except ``keep`` and the served one (incomplete leftovers of failed or
        killed refreshes included); returns what was dropped."""
        kept = {v.version for v in keep}
        served = self.served()
        if served is not None:
            kept.add(served.version)
        dropped = [v for v in self.versions() if v.version not in kept]
        for version in dropped:
            self.drop(version)
        return dropped

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
