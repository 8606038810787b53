"""The search endpoint (FastAPI): ``GET /search?q=&k=`` answers from the served index version and
says which model and version answered; ``POST /click`` (and ``/irrelevant``, ``/end``) log what the
user did with the results back into the clickstream through the producer SDK, which closes the loop:
every search it answers is itself sent as a ``SearchSession`` whose ``search_meta`` names the index
version and model, so the next fine-tune learns from the model that produced the ranking.

``embedding-studio serve`` runs it; ``embedding-studio up`` starts it. OpenAPI schema: ``/openapi.json``,
interactive docs: ``/docs``.
"""

from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from index.base import NoServedVersion, VectorIndex
from index.search import SearchService
from observability.metrics import SEARCH_LATENCY, SEARCH_REQUESTS


class VersionInfo(BaseModel):
    version: int
    collection: str
    model_uri: str
    item_count: int


class ResultOut(BaseModel):
    object_id: str
    rank: int
    score: float
    text: str


class SearchOut(BaseModel):
    query: str
    session_id: str | None = Field(description="Send clicks on these results with this id (null: not logged).")
    answered_by: VersionInfo
    results: list[ResultOut]


Id = Annotated[str, Field(min_length=1, max_length=256)]


class ClickIn(BaseModel):
    session_id: Id
    object_id: Id
    event_id: str | None = Field(None, min_length=1, max_length=256,
                                 description="Idempotency: the same event id twice counts once.")


class SessionIn(BaseModel):
    session_id: Id


class Accepted(BaseModel):
    accepted: bool = True


def create_app(index: VectorIndex, tracking_uri: str | None, producer=None, precision: str = "auto") -> FastAPI:
    """``producer``: a ClickstreamProducer; None serves searches without logging them. ``precision``: of the
    query embedding (``ES_EMBED_PRECISION``)."""
    service = SearchService(index, tracking_uri, precision)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            yield
        finally:
            if producer is not None:
                producer.close(10)  # before the broker can go: no reconnect noise after shutdown

    app = FastAPI(title="Embedding Studio search", version="1", lifespan=lifespan,
                  description="Searches the served index version; clicks sent back feed the next fine-tune.")

    @app.get("/search", response_model=SearchOut)
    def search(q: str = Query(..., min_length=1, max_length=4096, description="The search query."),
               k: int = Query(10, ge=1, le=100, description="How many results."),
               log: bool = Query(True, description="Log this search into the clickstream.")) -> SearchOut:
        started = time.perf_counter()
        try:
            answer = service.search(q, k)
        except NoServedVersion as error:
            raise HTTPException(503, str(error)) from None
        version = answer.version
        SEARCH_LATENCY.observe(time.perf_counter() - started)
        SEARCH_REQUESTS.labels(version.model_uri).inc()
        info = VersionInfo(version=version.version, collection=version.collection, model_uri=version.model_uri,
                           item_count=version.item_count)
        results = [ResultOut(object_id=h.object_id, rank=r, score=h.score, text=h.text)
                   for r, h in enumerate(answer.hits, start=1)]
        session_id = None
        if producer is not None and log:
            from schemas.clickstream import SEARCH_META_INDEX_VERSION, SEARCH_META_MODEL, SearchSession

            session_id = uuid.uuid4().hex
            producer.send(SearchSession(
                session_id=session_id, search_query=q,
                search_meta={SEARCH_META_INDEX_VERSION: version.version, SEARCH_META_MODEL: version.model_uri},
                search_results=[{"object_id": r.object_id, "rank": r.rank, "meta": {"text": r.text}} for r in results],
            ))
            producer.poll(0)
        return SearchOut(query=q, session_id=session_id, answered_by=info, results=results)

    @app.post("/click", response_model=Accepted, status_code=202)
    def click(body: ClickIn) -> Accepted:
        from schemas.clickstream import Interaction

        _send(Interaction(session_id=body.session_id, event_id=body.event_id or uuid.uuid4().hex,
                          object_id=body.object_id))
        return Accepted()

    @app.post("/irrelevant", response_model=Accepted, status_code=202)
    def irrelevant(body: SessionIn) -> Accepted:
        from schemas.clickstream import MarkIrrelevant

        _send(MarkIrrelevant(session_id=body.session_id))
        return Accepted()

    @app.post("/end", response_model=Accepted, status_code=202)
    def end(body: SessionIn) -> Accepted:
        from schemas.clickstream import SessionEnd

        _send(SessionEnd(session_id=body.session_id))
        return Accepted()

    @app.get("/health")
    def health() -> dict:
        served = index.served()
        return {"served": None if served is None else VersionInfo(
            version=served.version, collection=served.collection, model_uri=served.model_uri,
            item_count=served.item_count).model_dump()}

    def _send(event) -> None:
        from schemas.base import ContractError

        if producer is None:
            raise HTTPException(501, "this endpoint runs without a clickstream producer (no ES_KAFKA_BOOTSTRAP)")
        try:
            producer.send(event)
        except ContractError as error:  # the SDK's validation: a bad request, nothing sent
            raise HTTPException(422, error.reason) from None
        producer.poll(0)

    return app
