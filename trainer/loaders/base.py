from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator


class ItemsNotFound(LookupError):
    """Some requested items do not exist in the source; ``missing`` lists their ids."""

    def __init__(self, missing: list[str]):
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        super().__init__(f"{len(missing)} item(s) not found: {shown}")
        self.missing = missing


class ItemLoader(ABC):
    """Maps object ids to item text. ``load`` is called with batches of ids."""

    batch_size: int = 64

    @abstractmethod
    def load(self, object_ids: list[str]) -> dict[str, str]:
        """Texts of the ids that exist; ids that do not exist are simply absent."""

    def list_ids(self) -> list[str] | None:
        """Every id of the catalog when the source can list it (the held-out queries are then searched
        over all of them); None when it cannot (an S3 prefix, a folder template, inline texts)."""
        return None

    def load_all(self, object_ids: Iterable[str]) -> dict[str, str]:
        """Load every id in batches; raise ItemsNotFound naming any that are missing."""
        wanted = list(dict.fromkeys(object_ids))
        found: dict[str, str] = {}
        for chunk in _chunks(wanted, self.batch_size):
            found.update(self.load(chunk))
        missing = [object_id for object_id in wanted if object_id not in found]
        if missing:
            raise ItemsNotFound(missing)
        return found


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
