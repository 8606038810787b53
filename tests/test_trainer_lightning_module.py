"""The training loop: optimizers per tower, schedulers that really step, frozen layers that stay."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from tests.test_trainer_examples import make_session
from trainer.examples import build_examples
from trainer.lightning_module import FineTuningModule
from trainer.losses import LOSSES, LossBatch, RankingLoss, build_losses
from trainer.params import FineTuningParams
from simulation.tiny_model import build_tiny_model
from trainer.towers import EmbeddingTowers
from trainer.triples import build_triples, relevant_by_query

WORDS = "apple river mountain guitar window doctor garden pencil".split()


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


class RecordLearningRates(L.Callback):
    def __init__(self):
        self.rates: list[list[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rates.append([optimizer.param_groups[0]["lr"] for optimizer in trainer.optimizers])


def train(towers: EmbeddingTowers, params: FineTuningParams, steps: int, losses=("in_batch_contrastive",),
          grad_cache_chunk: int | None = None):
    sessions = [make_session(f"s{i}", WORDS, [WORDS[i % 8]], query=f"{WORDS[i % 8]} please") for i in range(24)]
    examples = build_examples(sessions)
    texts = {w: f"{w} text" for w in WORDS}
    module = FineTuningModule(
        towers, params, train_triples=build_triples(examples), relevant=relevant_by_query(examples),
        texts=texts, losses=build_losses(losses, params), batch_size=8, epochs=1, warmup_fraction=0.5,
        grad_cache_chunk=grad_cache_chunk,
    )
    recorder = RecordLearningRates()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
    )
    trainer.fit(module)
    return module, recorder.rates


def test_the_learning_rate_warms_up_then_decays_every_step(tiny_path):
    towers = EmbeddingTowers.load(tiny_path, device="cpu")
    module, rates = train(towers, FineTuningParams(query_lr=1e-3), steps=6)
    assert len(rates) == 6 and all(len(r) == 1 for r in rates)  # shared tower: one optimizer
    lrs = [r[0] for r in rates]
    assert len(set(lrs)) == 6  # a new rate every step
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(1e-3, rel=1e-6)
    assert 0 < peak < 5
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))  # warm-up
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))  # decay
    assert module.training_steps == 6


def test_separate_towers_get_their_own_optimizer_and_learning_rate(tiny_path):
    towers = EmbeddingTowers.load(tiny_path, same_query_and_items=False, device="cpu")
    before_query = towers.query_tower[0].model.encoder.layer[1].output.dense.weight.clone()
    before_items = towers.items_tower[0].model.encoder.layer[1].output.dense.weight.clone()
    _, rates = train(towers, FineTuningParams(query_lr=1e-3, items_lr=1e-4), steps=3)
    assert all(len(r) == 2 for r in rates)
    assert rates[-1][0] / rates[-1][1] == pytest.approx(10.0)
    after_query = towers.query_tower[0].model.encoder.layer[1].output.dense.weight
    after_items = towers.items_tower[0].model.encoder.layer[1].output.dense.weight
    assert not torch.equal(before_query, after_query) and not torch.equal(before_items, after_items)
    assert not torch.allclose(after_query, after_items)


@pytest.mark.parametrize("losses", [("cosine_prob_margin",), ("prob_margin", "in_batch_contrastive")])
def test_frozen_layers_do_not_move_and_the_rest_trains(tiny_path, losses):
    towers = EmbeddingTowers.load(tiny_path, device="cpu")
    towers.freeze_layers(1)
    bert = towers.query_tower[0].model
    frozen = {n: p.clone() for n, p in bert.named_parameters() if n.startswith(("embeddings", "encoder.layer.0."))}
    trained = bert.encoder.layer[1].attention.self.query.weight.clone()
    train(towers, FineTuningParams(query_lr=1e-2, margin=0.5), steps=3, losses=losses)
    assert all(torch.equal(p, dict(bert.named_parameters())[n]) for n, p in frozen.items())
    assert not torch.equal(trained, bert.encoder.layer[1].attention.self.query.weight)


def test_an_unknown_loss_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown loss.*triplet.*known: in_batch_contrastive, prob_margin"):
        build_losses(["triplet"], FineTuningParams())


def test_a_new_loss_is_one_class_and_one_registry_line(tiny_path, monkeypatch):
    calls = []

    class CountingLoss(RankingLoss):
        name = "counting"

        def forward(self, batch: LossBatch) -> torch.Tensor:
            calls.append(len(batch))
            return (1.0 - batch.positive_scores()).mean()

    monkeypatch.setitem(LOSSES, "counting", CountingLoss)
    train(EmbeddingTowers.load(tiny_path, device="cpu"), FineTuningParams(query_lr=1e-3), steps=2, losses=("counting",))
    assert len(calls) == 2 and all(n > 0 for n in calls)


def test_gradient_caching_takes_the_same_step_as_one_big_batch(tiny_path):
    # Without dropout (whose masks depend on the chunking) the chunked step is the same step, up to
    # float error: the loss sees the same embeddings and the same gradients flow back. In float32:
    # bf16 rounding differs with each chunk's padding.
    params = FineTuningParams(query_lr=1e-3)
    plain = without_dropout(EmbeddingTowers.load(tiny_path, device="cpu", train_precision="fp32"))
    cached = without_dropout(EmbeddingTowers.load(tiny_path, device="cpu", train_precision="fp32"))
    train(plain, params, steps=2)
    train(cached, params, steps=2, grad_cache_chunk=3)
    for (name, a), (_, b) in zip(plain.query_tower.named_parameters(), cached.query_tower.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


def without_dropout(towers: EmbeddingTowers) -> EmbeddingTowers:
    for module in towers.query_tower.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_prob"):
            module.dropout_prob = 0.0
    return towers
