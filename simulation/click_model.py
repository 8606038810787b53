"""A position-biased click model: how a simulated user reacts to a ranked list of results.

The user looks at a result with a probability that decays with its rank (``examination(rank) =
1 / rank ** eta``), clicks an examined result that is relevant with a probability that grows with
its gain, and now and then clicks an examined one that is not (noise). A search where nothing was
clicked is marked irrelevant with some probability, more often when nothing relevant was shown at
all. All randomness comes from the ``random.Random`` the caller passes, so a seed replays a session.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Reaction:
    clicked: tuple[int, ...]  # 0-based positions in the shown list, in the order they were clicked
    marked_irrelevant: bool


@dataclass(frozen=True)
class PositionBiasedClickModel:
    """
    Args:
        eta: how fast attention decays with rank; 0 means every result is examined.
        click_relevant: click probability of an examined result of the highest gain; a result of
            gain ``g`` (out of ``max_gain``) is clicked with a probability between ``click_noise``
            and this one, in proportion.
        click_noise: click probability of an examined result that is not relevant.
        max_gain: the gain that counts as fully relevant.
        mark_irrelevant: probability that a user who clicked nothing marks the search irrelevant.
        mark_irrelevant_when_none_shown: the same when no relevant result was shown at all.
        max_clicks: the user stops after this many clicks.
    """

    eta: float = 1.0
    click_relevant: float = 0.9
    click_noise: float = 0.03
    max_gain: float = 1.0
    mark_irrelevant: float = 0.1
    mark_irrelevant_when_none_shown: float = 0.35
    max_clicks: int = 3

    def __post_init__(self) -> None:
        for name in ("click_relevant", "click_noise", "mark_irrelevant", "mark_irrelevant_when_none_shown"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.eta < 0 or self.max_gain <= 0 or self.max_clicks < 1:
            raise ValueError("eta must be >= 0, max_gain > 0 and max_clicks >= 1")

    def examination(self, rank: int) -> float:
        """Probability that the result at 1-based ``rank`` is looked at."""
        return 1.0 / rank**self.eta

    def click_probability(self, gain: float) -> float:
        if gain <= 0:
            return self.click_noise
        share = min(1.0, gain / self.max_gain)
        return self.click_noise + (self.click_relevant - self.click_noise) * share

    def react(self, gains: Sequence[float], rng: random.Random) -> Reaction:
        """The user's reaction to results shown in this order with these gains."""
        clicked = []
        for position, gain in enumerate(gains):
            if len(clicked) >= self.max_clicks:
                break
            examined = rng.random() < self.examination(position + 1)
            if examined and rng.random() < self.click_probability(gain):
                clicked.append(position)
        marked = False
        if not clicked:
            chance = self.mark_irrelevant if any(g > 0 for g in gains) else self.mark_irrelevant_when_none_shown
            marked = rng.random() < chance
        return Reaction(tuple(clicked), marked)
