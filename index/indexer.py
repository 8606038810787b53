"""`embedding-studio indexer`: keeps the served index in step with the announced models.

It consumes ``es.models.ready`` and the item-upsert topic in one consumer group. A ModelReady starts a
refresh (index/refresh.py); only when the new version is complete and served is an ``IndexReady``
published. A failed refresh is logged, publishes nothing and leaves the served version as it was.
A ModelReady for the model already served changes nothing (duplicates, replays). Item upserts are
embedded with the served version's model and written into it. Offsets are committed after each
message is handled: a killed indexer redoes at most the message it was handling.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Message

from index.base import IndexedItem, IndexVersion, VectorIndex
from index.models import embedder, encode
from index.refresh import IndexRefresher, RefreshProgress, RefreshResult
from messaging import CommittingConsumer, ConfirmedProducer, KafkaCluster
from observability.index import observe_refresh, observe_refresh_failed
from schemas.base import ContractError, describe_validation_error
from schemas.index import IndexReady, ItemUpsert
from schemas.models import ModelReady
from schemas.settings import Settings
from trainer.loaders.base import ItemLoader

log = logging.getLogger(__name__)

# A refresh of a large catalog outlasts librdkafka's default 5 minutes between polls.
MAX_POLL_INTERVAL_MS = 6 * 3600 * 1000


def item_loader(settings: Settings) -> ItemLoader:
    from trainer.loaders import open_item_loader
    from trainer.loaders.s3 import S3Access

    return open_item_loader(settings.items_url, S3Access(endpoint_url=settings.s3_endpoint_url,
                                                         role_arn=settings.s3_role_arn,
                                                         anonymous=settings.s3_anonymous))


def starting_model(settings: Settings) -> str:
    """The default method's starting model: what the first index version is embedded with."""
    if settings.base_model:
        return settings.base_model
    from trainer.base_model import minilm_path

    return str(minilm_path())


class IndexReadyPublisher:
    """IndexReady events, each confirmed by the broker before ``publish`` returns."""

    def __init__(self, producer: ConfirmedProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    @classmethod
    def connect(cls, settings: Settings) -> IndexReadyPublisher:
        producer = ConfirmedProducer(KafkaCluster.from_settings(settings), client_id="embedding-studio-indexer",
                                     max_message_bytes=settings.max_record_bytes)
        return cls(producer, settings.topics().index_ready.name)

    def publish(self, event: IndexReady) -> None:
        self.producer.send(self.topic, event.index_name, event.model_dump_json().encode(),
                           what=f"IndexReady for v{event.version}")

    def close(self) -> None:
        self.producer.close()


class Indexer:
    def __init__(self, settings: Settings, index: VectorIndex, *, loader: ItemLoader | None = None,
                 consumer_config: dict | None = None):
        self.settings = settings
        self.topics = settings.topics()
        self.index = index
        self.loader = loader or item_loader(settings)
        self.refresher = IndexRefresher(index, self.loader, settings.mlflow_tracking_uri, settings.index_batch_size,
                                        settings.embed_precision, on_progress=self._progress)
        self.publisher = IndexReadyPublisher.connect(settings)
        self.consumer = CommittingConsumer(
            KafkaCluster.from_settings(settings), f"{self.topics.prefix}.indexer",
            [self.topics.model_ready.name, self.topics.item_upserts.name],
            # tansu holds a group join for about half the session timeout: the stream workers' short one.
            session_timeout_s=settings.stream_session_timeout_s,
            heartbeat_interval_s=settings.stream_heartbeat_interval_s,
            extra_config={"max.poll.interval.ms": MAX_POLL_INTERVAL_MS, **(consumer_config or {})},
        )
        self._stop = threading.Event()
        self._last_progress_log = 0.0

    # --- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, *, initial_build: bool = True) -> None:
        self._stop = stop or threading.Event()
        self.consumer.open()  # the group join goes on while the first version is built
        log.info("indexer consuming %s and %s; index %r on %s", self.topics.model_ready.name,
                 self.topics.item_upserts.name, self.settings.index_name, getattr(self.index, "uri", "?"))
        try:
            if initial_build:
                self.build_initial()
            self.consumer.run(self.handle, self._stop)
        finally:
            self.consumer.close()
            self.close()

    def close(self) -> None:
        self.publisher.close()

    def handle(self, message: Message) -> None:
        raw = message.value() or b""
        try:
            if message.topic() == self.topics.model_ready.name:
                self.on_model_ready(_parse(ModelReady, raw))
            else:
                self.on_upserts([_parse(ItemUpsert, raw)])
        except ContractError as error:
            log.error("unreadable record at %s[%d]@%d skipped: %s", message.topic(), message.partition(),
                      message.offset(), error.reason)

    # --- handlers -------------------------------------------------------------------------------

    def build_initial(self) -> RefreshResult | None:
        """The first version, from the starting model, when nothing is served and the catalog lists
        its items: searches work before the first fine-tune."""
        if self.index.served() is not None or not self.loader.list_ids():
            return None
        return self.refresh(starting_model(self.settings))

    def on_model_ready(self, event: ModelReady) -> RefreshResult | None:
        served = self.index.served()
        if served is not None and served.model_uri == event.model_uri:
            log.info("v%d already serves %s: nothing to do", served.version, event.model_uri)
            return None
        return self.refresh(event.model_uri, event.model_fingerprint, task_id=event.task_id)

    def refresh(self, model_uri: str, fingerprint: str = "", task_id: str | None = None) -> RefreshResult | None:
        try:
            result = self.refresher.refresh(model_uri, fingerprint, should_stop=self._stop.is_set)
        except Exception as error:  # noqa: BLE001 - reported; the served version is untouched
            observe_refresh_failed()
            served = self.index.served()
            log.error("index refresh with %s failed, %s still served: %s", model_uri,
                      f"v{served.version}" if served else "nothing", error, exc_info=True)
            return None
        version = result.version
        self.publisher.publish(IndexReady(
            index_name=self.settings.index_name, version=version.version, collection=version.collection,
            model_uri=model_uri, model_fingerprint=fingerprint, task_id=task_id, item_count=version.item_count,
            seconds=round(result.seconds, 3), previous_version=result.previous.version if result.previous else None,
        ))
        log.info("index v%d served: %d items embedded with %s in %.1f s", version.version, version.item_count,
                 model_uri, result.seconds)
        observe_refresh(result.seconds, version.version, version.item_count)
        return result

    def on_upserts(self, events: list[ItemUpsert]) -> None:
        served = self.index.served()
        if served is None:
            log.warning("no index version is served yet: %d item upsert(s) wait for the first refresh "
                        "(only items the catalog lists are indexed then)", len(events))
            return
        deleted = [e.object_id for e in events if e.deleted]
        changed = {e.object_id: e.text for e in events if not e.deleted}
        missing = [object_id for object_id, text in changed.items() if text is None]
        if missing:
            loaded = self.loader.load(missing)
            for object_id in missing:
                if object_id in loaded:
                    changed[object_id] = loaded[object_id]
                else:
                    log.error("item %s has no text in the upsert nor in the item loader; not indexed", object_id)
                    del changed[object_id]
        if changed:
            model = embedder(served.model_uri, self.settings.mlflow_tracking_uri, "items")
            ids = list(changed)
            vectors = encode(model, [changed[i] for i in ids], precision=self.settings.embed_precision)
            self.index.upsert(served, [IndexedItem(i, changed[i], v) for i, v in zip(ids, vectors)])
        self.index.delete(served, deleted)
        log.info("v%d: %d item(s) upserted, %d deleted", served.version, len(changed), len(deleted))

    def _progress(self, progress: RefreshProgress) -> None:
        now = time.monotonic()
        if now - self._last_progress_log >= 5.0 or progress.done == progress.total:
            self._last_progress_log = now
            log.info("index refresh: %d/%d items embedded (%.0f items/s)", progress.done, progress.total,
                     progress.done / max(progress.seconds, 1e-6))


def _parse(model, raw: bytes):
    from pydantic import ValidationError

    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise ContractError(describe_validation_error(error)) from None


def served_description(version: IndexVersion | None) -> str:
    if version is None:
        return "nothing served"
    return f"v{version.version} ({version.item_count} items, model {version.model_uri})"
