"""A whole run on the tiny model: it learns from clicks, keeps its best weights, and can be canceled."""

from __future__ import annotations

import random

import pytest
from sentence_transformers import SentenceTransformer

from tests.test_trainer_examples import make_session
from trainer.evaluation import CatalogEvaluator
from trainer.examples import held_out_queries
from trainer.fine_tune import FineTuneCanceled, NotEnoughData, TrainingSettings, fine_tune, refit, split_for
from trainer.params import FineTuningParams
from simulation.tiny_model import build_tiny_model
from trainer.towers import EmbeddingTowers

TOPICS = "apple river mountain guitar window doctor garden pencil camera island engine forest silver rabbit ocean castle tiger market violin bridge".split()
FILLERS = "red blue green small large old young fast slow warm cold bright dark soft hard".split()


def synthetic_clickstream(n: int = 120, seed: int = 0):
    """Each item is a topic word plus three fillers; a query names a topic and borrows two fillers
    from a distractor shown in the same session, so word overlap alone misleads the random model."""
    rng = random.Random(seed)
    texts = {f"item-{t}": " ".join([t, *rng.sample(FILLERS, 3)]) for t in TOPICS}
    sessions = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        shown = [*rng.sample([t for t in TOPICS if t != topic], 7), topic]
        rng.shuffle(shown)
        distractor = next(t for t in shown if t != topic)
        query = " ".join([topic, *texts[f"item-{distractor}"].split()[1:3]])
        sessions.append(make_session(f"s{i}", [f"item-{t}" for t in shown], [f"item-{topic}"], query=query))
    return sessions, texts


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def clickstream():
    return synthetic_clickstream()


SETTINGS = TrainingSettings(loss="cosine_prob_margin", epochs=3, batch_size=16, seed=1)
PARAMS = FineTuningParams(query_lr=1e-3, items_lr=1e-3, margin=0.1)


def test_tuning_on_clicks_improves_held_out_ndcg_and_saves_the_best_epoch(tiny_path, clickstream, tmp_path):
    sessions, texts = clickstream
    progress = []
    result = fine_tune(tiny_path, sessions, texts, PARAMS, tmp_path, settings=SETTINGS, on_progress=lambda *a: progress.append(a))

    assert result.main_metric == "val_cm_ndcg_at_10"
    assert result.best_value > result.baseline_value
    assert result.best_metrics["val_cm_ndcg_at_10"] == max(r.metrics["val_cm_ndcg_at_10"] for r in result.history)
    assert [r.epoch for r in result.history] == [0, 1, 2]
    assert result.validation_queries > 0 and result.train_triples > 0
    assert not any(name.startswith("test_") for r in result.history for name in r.metrics)  # test is not looked at

    # The saved folder is a plain SentenceTransformer that reproduces the best epoch's metrics.
    evaluator = validation_evaluator(sessions, texts, SETTINGS, tiny_path)
    SentenceTransformer(str(result.model_path), device="cpu")
    saved = evaluator.metrics(evaluator.embed(EmbeddingTowers.load(result.model_path, device="cpu")), "validation")
    for name, value in saved.items():
        assert result.best_metrics[f"val_{name}"] == pytest.approx(value, abs=1e-5)

    steps = progress[-1][3]
    assert progress[0] == (0, 3, 1, steps) and progress[-1] == (2, 3, steps, steps) and len(progress) == 3 * steps


def test_the_best_weights_are_kept_not_the_last(tiny_path, clickstream, tmp_path):
    # In-batch contrastive reaches a perfect held-out ranking in the first epoch and keeps moving:
    # the kept model must be the first epoch's (ties do not replace the best).
    sessions, texts = clickstream
    settings = TrainingSettings(loss="in_batch_contrastive", epochs=2, batch_size=16, seed=1, main_metric="mrr")
    params = FineTuningParams(query_lr=3e-3, items_lr=3e-3, margin=0.1)
    result = fine_tune(tiny_path, sessions, texts, params, tmp_path, settings=settings)
    first, last = result.history[0].metrics, result.history[-1].metrics
    assert result.best_epoch == 0 and first["val_mrr"] >= last["val_mrr"]
    shift = "val_not_irrelevant_dist_shift"
    assert result.best_metrics[shift] == first[shift] != pytest.approx(last[shift], abs=1e-4)

    evaluator = validation_evaluator(sessions, texts, settings, tiny_path)
    saved = evaluator.metrics(evaluator.embed(EmbeddingTowers.load(result.model_path, device="cpu")), "validation")
    assert saved["not_irrelevant_dist_shift"] == pytest.approx(first[shift], abs=1e-5)


def validation_evaluator(sessions, texts, settings, start_model) -> CatalogEvaluator:
    validation = held_out_queries(split_for(sessions, settings).validation)
    evaluator = CatalogEvaluator({"validation": validation}, sorted(texts), texts)
    evaluator.set_baseline(evaluator.embed(EmbeddingTowers.load(start_model, device="cpu")))
    return evaluator


def test_a_wise_ft_mix_is_kept_only_when_it_validates_better(tiny_path, clickstream, tmp_path):
    sessions, texts = clickstream
    settings = TrainingSettings(loss="cosine_prob_margin", epochs=1, batch_size=16, seed=1,
                                wise_ft_alphas=(0.0, 0.5))
    result = fine_tune(tiny_path, sessions, texts, PARAMS, tmp_path, settings=settings)
    # alpha 0 is the starting model itself: it can only be kept when training made validation worse.
    assert result.wise_ft_alpha in (0.0, 0.5, 1.0)
    assert result.best_metrics["wise_ft_alpha"] == result.wise_ft_alpha
    assert result.best_value >= max(r.metrics["val_cm_ndcg_at_10"] for r in result.history)
    if result.wise_ft_alpha == 0.0:
        assert result.best_value == pytest.approx(result.baseline_value, abs=1e-6)


def test_should_stop_cancels_before_the_next_step(tiny_path, clickstream, tmp_path):
    sessions, texts = clickstream
    steps_done = []
    with pytest.raises(FineTuneCanceled):
        fine_tune(
            tiny_path, sessions, texts, PARAMS, tmp_path, settings=SETTINGS,
            on_progress=lambda *a: steps_done.append(a), should_stop=lambda: len(steps_done) >= 2,
        )
    assert len(steps_done) == 2
    assert not (tmp_path / "model").exists()


def test_a_curriculum_run_trains_through_its_phases(tiny_path, clickstream, tmp_path):
    sessions, texts = clickstream
    params = FineTuningParams(query_lr=1e-3, margin=0.1, examples_order=["soft_all", "medium_all", "hard_all"])
    progress = []
    result = fine_tune(tiny_path, sessions[:60], texts, params, tmp_path, settings=SETTINGS, on_progress=lambda *a: progress.append(a))
    steps_per_epoch = {epoch: steps for epoch, _, _, steps in progress}
    assert len(result.history) == 3 and len(set(steps_per_epoch.values())) > 1  # each phase its own triples


def test_a_refit_learns_from_the_validation_queries_too_for_the_chosen_epochs(tiny_path, clickstream, tmp_path):
    sessions, texts = clickstream
    split = split_for(sessions, SETTINGS)
    progress = []
    result = refit(tiny_path, sessions, texts, PARAMS, tmp_path, epochs=2, settings=SETTINGS,
                   on_progress=lambda *a: progress.append(a))

    assert result.train_sessions == len(split.train) + len(split.validation) and result.epochs == 2
    assert {epoch for epoch, *_ in progress} == {0, 1} and progress[-1][1] == 2

    # It learned: the refit model moved away from the starting one on the same validation queries
    # (which it trained on, so they say nothing of its quality; the test queries judge it).
    evaluator = validation_evaluator(sessions, texts, SETTINGS, tiny_path)
    refit_metrics = evaluator.metrics(evaluator.embed(EmbeddingTowers.load(result.model_path, device="cpu")),
                                      "validation")
    assert refit_metrics["cm_ndcg_at_10"] > evaluator.metrics(evaluator.baseline, "validation")["cm_ndcg_at_10"]


def test_a_refit_applies_the_chosen_wise_ft_mix(tiny_path, clickstream, tmp_path):
    # Alpha 0 keeps none of the refit's training: the saved model embeds as the starting one does.
    sessions, texts = clickstream
    result = refit(tiny_path, sessions, texts, PARAMS, tmp_path, epochs=1, wise_ft_alpha=0.0, settings=SETTINGS)
    start = EmbeddingTowers.load(tiny_path, device="cpu").embed_queries(["apple red", "river"])
    mixed = EmbeddingTowers.load(result.model_path, device="cpu").embed_queries(["apple red", "river"])
    assert result.wise_ft_alpha == 0.0
    assert (mixed - start).abs().max() < 1e-5


def test_a_refit_can_be_canceled(tiny_path, clickstream, tmp_path):
    sessions, texts = clickstream
    steps_done = []
    with pytest.raises(FineTuneCanceled):
        refit(tiny_path, sessions, texts, PARAMS, tmp_path, epochs=1, settings=SETTINGS,
              on_progress=lambda *a: steps_done.append(a), should_stop=lambda: len(steps_done) >= 1)
    assert len(steps_done) == 1 and not (tmp_path / "model").exists()


def test_sessions_without_clicks_are_not_enough(tiny_path, tmp_path):
    sessions = [make_session(f"s{i}", ["a", "b"]) for i in range(10)]
    with pytest.raises(NotEnoughData, match="no clicked results"):
        fine_tune(tiny_path, sessions, {"a": "a", "b": "b"}, PARAMS, tmp_path, settings=SETTINGS)
