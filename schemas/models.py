"""The model-ready announcement: everything a consumer needs to load and deploy the new model."""

from __future__ import annotations

from pydantic import Field

from schemas.base import Contract, Identifier, UtcDatetime, utc_now


class ModelReady(Contract):
    task_id: Identifier
    batch_id: Identifier
    fine_tuning_method: str
    model_uri: str = Field(description="Loadable by `embedding-studio embed --model URI`.")
    run_id: str
    embedding_dim: int = Field(gt=0)
    model_fingerprint: str = Field(description="sha256 of the weights file: equal ⇔ same vector space.")
    main_metric: str
    metrics: dict[str, float] = Field(description="The fine-tuned model on held-out sessions.")
    baseline_metrics: dict[str, float] = Field(description="The starting model on the same sessions.")
    created_at: UtcDatetime = Field(default_factory=utc_now)
