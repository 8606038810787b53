"""Index events: a refreshed index is served, and items change between refreshes."""

from __future__ import annotations

from pydantic import Field, model_validator

from schemas.base import Contract, Identifier, UtcDatetime, utc_now


class IndexReady(Contract):
    """Published once a new index version is complete and served (never for a failed refresh)."""

    index_name: str
    version: int = Field(ge=1, description="The version now served; the previous one stays for rollback.")
    collection: str
    model_uri: str = Field(description="The model that embedded every item of this version.")
    model_fingerprint: str = ""
    task_id: Identifier | None = Field(None, description="The fine-tuning task whose ModelReady caused it.")
    item_count: int = Field(ge=0)
    seconds: float = Field(ge=0, description="Time the refresh took, embedding and writing included.")
    previous_version: int | None = None
    created_at: UtcDatetime = Field(default_factory=utc_now)


class ItemUpsert(Contract):
    """An item added, changed or removed between refreshes; embedded into the served version.

    ``text`` is the item's content; without it the text comes from the item loader (ES_ITEMS_URL).
    """

    object_id: Identifier
    text: str | None = Field(None, max_length=65_535)
    deleted: bool = False
    updated_at: UtcDatetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _deleted_has_no_text(self) -> ItemUpsert:
        if self.deleted and self.text is not None:
            raise ValueError("a deleted item carries no text")
        return self
