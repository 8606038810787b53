"""An index refresh: the whole catalog embedded with one model into a new version, served only
when complete.

The catalog is every item the item loader can list (ES_ITEMS_URL) plus every item the served version
already holds (items upserted between refreshes). Texts come from the loader where it has them, else
from the served version. A refresh that fails or is stopped drops its half-built version and leaves
the served one untouched; one killed outright leaves an incomplete version that is never served and
that the next refresh prunes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from index.base import IndexedItem, IndexVersion, VectorIndex
from index.models import embedder, encode
from trainer.loaders.base import ItemLoader

log = logging.getLogger(__name__)


class RefreshFailed(RuntimeError):
    pass


class RefreshStopped(RefreshFailed):
    pass


@dataclass(frozen=True)
class RefreshProgress:
    done: int
    total: int
    seconds: float


@dataclass(frozen=True)
class RefreshResult:
    version: IndexVersion
    previous: IndexVersion | None
    seconds: float


@dataclass
class IndexRefresher:
    index: VectorIndex
    loader: ItemLoader
    tracking_uri: str | None = None
    batch_size: int = 256
    precision: str = "auto"  # of the embedding forward pass (index.models.encode)
    on_progress: Callable[[RefreshProgress], None] | None = None

    def catalog(self, served: IndexVersion | None) -> Iterator[tuple[str, str]]:
        """(object_id, text) of every item to index, each once."""
        listed = list(dict.fromkeys(self.loader.list_ids() or []))
        known: dict[str, str] = dict(self.index.iter_items(served)) if served is not None else {}
        listed_set = set(listed)
        wanted = listed + [object_id for object_id in known if object_id not in listed_set]
        for start in range(0, len(wanted), self.batch_size):
            chunk = wanted[start:start + self.batch_size]
            texts = self.loader.load(chunk)
            for object_id in chunk:
                text = texts.get(object_id, known.get(object_id))
                if text is None:
                    log.warning("item %s is listed but has no text; left out of the index", object_id)
                    continue
                yield object_id, text

    def refresh(self, model_uri: str, model_fingerprint: str = "",
                should_stop: Callable[[], bool] | None = None) -> RefreshResult:
        started = time.monotonic()
        previous = self.index.served()
        model = embedder(model_uri, self.tracking_uri, "items")
        dimension = model.get_embedding_dimension()
        items = list(self.catalog(previous))
        if not items:
            raise RefreshFailed("the catalog is empty: set ES_ITEMS_URL to a source that lists its items, or "
                                "send items on the item-upsert topic first")
        version = self.index.create_version(model_uri, dimension, model_fingerprint)
        log.info("refreshing index into v%d with %s: %d items", version.version, model_uri, len(items))
        try:
            # Texts of similar length together: padding per batch stays small (sentence-transformers
            # sorts inside one encode call; sorting the whole catalog extends that across calls). The
            # write of one batch overlaps the embedding of the next.
            items.sort(key=lambda item: len(item[1]))
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer") as writer:
                pending: Future | None = None
                for start in range(0, len(items), self.batch_size):
                    if should_stop is not None and should_stop():
                        raise RefreshStopped(f"stopped after {start} of {len(items)} items")
                    chunk = items[start:start + self.batch_size]
                    vectors = encode(model, [text for _, text in chunk], precision=self.precision)
                    if pending is not None:
                        pending.result()
                        self._report(start, len(items), started)
                    pending = writer.submit(self.index.upsert, version,
                                            [IndexedItem(i, t, v) for (i, t), v in zip(chunk, vectors)])
                if pending is not None:
                    pending.result()
                    self._report(len(items), len(items), started)
            version = self.index.complete(version)
            if version.item_count != len(items):
                raise RefreshFailed(f"v{version.version} holds {version.item_count} of {len(items)} items")
            self.index.serve(version)
        except BaseException:
            self._discard(version)
            raise
        self.index.prune(keep=[previous] if previous is not None else [])
        return RefreshResult(version, previous, time.monotonic() - started)

    def _report(self, done: int, total: int, started: float) -> None:
        if self.on_progress is not None:
            self.on_progress(RefreshProgress(done, total, time.monotonic() - started))

    def _discard(self, version: IndexVersion) -> None:
        try:
            self.index.drop(version)
        except Exception:  # noqa: BLE001 - the next refresh prunes what is left
            log.warning("could not drop the unfinished v%d; the next refresh prunes it", version.version, exc_info=True)
