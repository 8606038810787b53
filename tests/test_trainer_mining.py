"""Hard negatives mined from the universe with the current model: from the rank window, never relevant."""

from __future__ import annotations

import pytest

from tests.test_trainer_fine_tune import PARAMS, synthetic_clickstream
from trainer.fine_tune import TrainingSettings, fine_tune
from trainer.mining import mine_negatives
from simulation.tiny_model import build_tiny_model
from trainer.towers import EmbeddingTowers
from trainer.triples import Triple


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_mined_negatives_come_from_the_rank_window_and_skip_every_known_relevant_item(tiny_path):
    towers = EmbeddingTowers.load(tiny_path, device="cpu")
    texts = {f"i{n}": f"word{n % 7} thing {n}" for n in range(40)}
    triples = [Triple("word3 thing", "i3", "i5"), Triple("word3 thing", "i10", None)]
    relevant = {"word3 thing": frozenset({"i3", "i10", "i17", "i24"})}
    mined = mine_negatives(towers, triples, texts, relevant, per_positive=3, window=(2, 12), seed=0)
    assert len(mined) == 6 and {t.positive for t in mined} == {"i3", "i10"}
    assert not {t.negative for t in mined} & relevant["word3 thing"]

    import torch
    items = sorted(texts)
    query = torch.nn.functional.normalize(towers.embed_queries(["word3 thing"]), dim=-1)
    ranked = torch.topk(query @ torch.nn.functional.normalize(towers.embed_items([texts[i] for i in items]), dim=-1).T,
                        12).indices[0].tolist()
    assert {t.negative for t in mined} <= {items[i] for i in ranked[2:12]}
    again = mine_negatives(towers, triples, texts, relevant, per_positive=3, window=(2, 12), seed=0)
    assert again == mined


def test_a_run_with_mined_negatives_trains_on_more_triples_each_epoch(tiny_path, tmp_path):
    sessions, texts = synthetic_clickstream()
    progress = []
    settings = TrainingSettings(loss="in_batch_contrastive", epochs=2, batch_size=16, seed=1, mined_negatives=2,
                                mining_window=(1, 10))
    result = fine_tune(tiny_path, sessions, texts, PARAMS, tmp_path, settings=settings,
                       on_progress=lambda *a: progress.append(a))
    plain = fine_tune(tiny_path, sessions, texts, PARAMS, tmp_path / "plain",
                      settings=TrainingSettings(loss="in_batch_contrastive", epochs=2, batch_size=16, seed=1))
    assert progress[-1][3] > (plain.train_triples + 15) // 16  # more steps per epoch than the triples alone
    assert result.best_value >= result.baseline_value
