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
    metrics: dict[str, float] = Field(description="The fine-tuned model on the batch's test queries (`test_*`).")
    baseline_metrics: dict[str, float] = Field(description="The starting model on the same queries.")
    lift: float | None = Field(None, description="Mean lift of the main metric over the test queries.")
    lift_ci_low: float | None = Field(None, description="Lower end of the lift's paired-bootstrap interval.")
    lift_ci_high: float | None = Field(None, description="Upper end of the lift's paired-bootstrap interval.")
    lift_confidence: float | None = Field(None, description="Confidence of that interval, e.g. 0.95.")
    test_queries: int | None = Field(None, ge=0, description="Distinct held-out queries the lift was measured on.")
    created_at: UtcDatetime = Field(default_factory=utc_now)
