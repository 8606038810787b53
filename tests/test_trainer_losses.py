"""Losses: values on hand-computed cases, gradients, and the behaviours the reference EmbeddingStudio lost."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.losses import LOSSES, CosineProbMarginRankingLoss, InBatchContrastiveLoss, LossBatch, ProbMarginRankingLoss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def batch(queries, positives, negatives=None, known=None, pairs=(), weights=None) -> LossBatch:
    negatives = negatives if negatives is not None else torch.zeros((0, queries.shape[1]))
    known = known if known is not None else torch.zeros((len(queries), len(queries) + len(negatives)), dtype=torch.bool)
    return LossBatch(queries, positives, negatives, known, torch.tensor(list(pairs), dtype=torch.long).reshape(-1, 2),
                     weights)


def test_prob_margin_is_the_mean_sigmoid_of_the_margin_violation_weighted_by_confidence():
    loss = ProbMarginRankingLoss(margin=0.1)
    positive = torch.tensor([0.9, 0.2])
    negative = torch.tensor([0.5, 0.4])
    expected = (sigmoid(-(0.9 - 0.5) + 0.1) * 1.0 + sigmoid(-(0.2 - 0.4) + 0.1) * 0.5) / 2
    value = loss.pair_loss(positive, negative, torch.tensor([1.0, 0.5]))
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_distances_reverse_the_target():
    similarity = ProbMarginRankingLoss(margin=0.1).pair_loss(torch.tensor([0.9]), torch.tensor([0.5]))
    distance = ProbMarginRankingLoss(margin=0.1, is_similarity=False).pair_loss(torch.tensor([0.5]), torch.tensor([0.9]))
    # the positive is closer in both: as similarity 0.9 > 0.5, as distance 0.5 < 0.9
    assert distance.item() == pytest.approx(sigmoid(-0.4 + 0.1))
    assert similarity.item() == pytest.approx(sigmoid(-0.4 + 0.1))


def test_pairs_outside_the_abs_difference_thresholds_are_left_out():
    loss = ProbMarginRankingLoss(margin=0.1, min_abs_difference=0.05, max_abs_difference=0.5)
    positive = torch.tensor([0.50, 0.90, 0.30])
    negative = torch.tensor([0.49, 0.10, 0.50])  # gaps 0.01 (too small), 0.8 (too big), 0.2 (kept)
    assert loss.pair_loss(positive, negative).item() == pytest.approx(sigmoid(0.2 + 0.1))
    nothing = loss.pair_loss(torch.tensor([0.5], requires_grad=True), torch.tensor([0.5]))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_the_cosine_variant_uses_its_sharp_sigmoid():
    positive, negative = torch.tensor([0.52, 0.40]), torch.tensor([0.50, 0.45])
    base = ProbMarginRankingLoss(margin=0.05).pair_loss(positive, negative)
    sharp = CosineProbMarginRankingLoss(margin=0.05).pair_loss(positive, negative)
    a = [-(0.52 - 0.50) + 0.05, -(0.40 - 0.45) + 0.05]
    assert sharp.item() == pytest.approx(sum(sigmoid(400 * x - 6) for x in a) / 2, abs=1e-5)
    assert sharp.item() != pytest.approx(base.item(), abs=1e-3)
    # satisfied pairs cost almost nothing, violated ones almost everything
    assert CosineProbMarginRankingLoss(margin=0.05).pair_loss(torch.tensor([0.9]), torch.tensor([0.1])).item() < 1e-6
    assert CosineProbMarginRankingLoss(margin=0.05).pair_loss(torch.tensor([0.1]), torch.tensor([0.9])).item() > 0.999


def test_the_sharp_sigmoid_saturates_on_badly_ordered_pairs():
    # A property of the reference EmbeddingStudio's intended loss worth knowing: past ~0.03 of violation it is flat, so a
    # badly wrong pair gives no gradient; the plain sigmoid still does.
    positive = torch.tensor([0.1], requires_grad=True)
    CosineProbMarginRankingLoss(margin=0.05).pair_loss(positive, torch.tensor([0.9])).backward()
    assert positive.grad.abs().item() < 1e-6


@pytest.mark.parametrize("loss", [ProbMarginRankingLoss(margin=0.05), CosineProbMarginRankingLoss(margin=0.05)])
def test_margin_losses_push_the_positive_up_and_the_negative_down(loss):
    # violations of 0.01 and 0.005: inside the sharp sigmoid's narrow slope, where it has a gradient
    positive = torch.tensor([0.46, 0.455], requires_grad=True)
    negative = torch.tensor([0.42, 0.41], requires_grad=True)
    loss.pair_loss(positive, negative).backward()
    assert (positive.grad < 0).all() and (negative.grad > 0).all()


def test_in_batch_contrastive_is_cross_entropy_over_all_candidates():
    torch.manual_seed(0)
    queries, positives, negatives = torch.randn(3, 8), torch.randn(3, 8), torch.randn(2, 8)
    value = InBatchContrastiveLoss(scale=20.0)(batch(queries, positives, negatives))
    candidates = F.normalize(torch.cat([positives, negatives]), dim=-1)
    scores = 20.0 * F.normalize(queries, dim=-1) @ candidates.T
    expected = -sum(torch.log_softmax(scores[i], dim=0)[i] for i in range(3)) / 3
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_duplicate_positive_is_not_counted_as_a_negative():
    torch.manual_seed(1)
    queries, positives, negatives = torch.randn(3, 8), torch.randn(3, 8), torch.randn(1, 8)
    positives[2] = positives[0]  # rows 0 and 2 clicked the same item
    known = torch.zeros(3, 4, dtype=torch.bool)
    known[0, 2] = known[2, 0] = True
    masked = InBatchContrastiveLoss()(batch(queries, positives, negatives, known))

    def row_loss(i: int, columns: list[int]) -> torch.Tensor:
        candidates = F.normalize(torch.cat([positives, negatives]), dim=-1)[columns]
        scores = 20.0 * F.normalize(queries[i], dim=-1) @ candidates.T
        return -torch.log_softmax(scores, dim=0)[columns.index(i)]

    expected = (row_loss(0, [0, 1, 3]) + row_loss(1, [0, 1, 2, 3]) + row_loss(2, [1, 2, 3])) / 3
    assert masked.item() == pytest.approx(expected.item(), rel=1e-5)
    assert masked.item() != pytest.approx(InBatchContrastiveLoss()(batch(queries, positives, negatives)).item(), rel=1e-3)


def test_in_batch_gradients_reach_queries_positives_and_negatives():
    queries, positives, negatives = (torch.randn(4, 8, requires_grad=True) for _ in range(3))
    InBatchContrastiveLoss()(batch(queries, positives, negatives)).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (queries, positives, negatives))


def test_a_mask_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="known_relevant"):
        InBatchContrastiveLoss()(batch(torch.randn(2, 4), torch.randn(2, 4), None, torch.zeros(2, 3, dtype=torch.bool)))


def test_every_registered_loss_takes_the_same_batch_through_the_same_call():
    torch.manual_seed(2)
    step = batch(torch.randn(3, 8, requires_grad=True), torch.randn(3, 8), torch.randn(2, 8), pairs=[(0, 0), (1, 1), (2, 0)])
    for name, cls in LOSSES.items():
        value = cls()(step)
        assert value.dim() == 0 and value.requires_grad, name


def test_a_margin_loss_reads_its_pairs_and_their_weights_from_the_batch():
    torch.manual_seed(3)
    queries, positives, negatives = torch.randn(2, 8), torch.randn(2, 8), torch.randn(1, 8)
    step = batch(queries, positives, negatives, pairs=[(0, 0), (1, 0)], weights=torch.tensor([1.0, 0.25]))
    loss = ProbMarginRankingLoss(margin=0.1)
    positive = F.cosine_similarity(queries, positives)
    negative = F.cosine_similarity(queries, negatives.expand(2, -1))
    assert loss(step).item() == pytest.approx(loss.pair_loss(positive, negative, torch.tensor([1.0, 0.25])).item())


def test_row_weights_make_a_rarely_examined_click_count_more():
    torch.manual_seed(4)
    queries, positives = torch.randn(2, 8), torch.randn(2, 8)
    loss = InBatchContrastiveLoss()
    plain = loss(batch(queries, positives))
    weighted = loss(batch(queries, positives, weights=torch.tensor([3.0, 1.0])))
    scores = 20.0 * F.normalize(queries, dim=-1) @ F.normalize(positives, dim=-1).T
    rows = -torch.log_softmax(scores, dim=1).diagonal()
    assert plain.item() == pytest.approx(rows.mean().item(), rel=1e-5)
    assert weighted.item() == pytest.approx(((3 * rows[0] + rows[1]) / 4).item(), rel=1e-5)
