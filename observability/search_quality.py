"""Search quality from the live clickstream: what closed sessions say about the model that served them.

Per closed session (``judge``): was anything clicked, the reciprocal rank of the first click (1/position
of the earliest interaction's result among the results in rank order; 0 without a click), was it
marked irrelevant, was it abandoned (no interaction at all). ``QualityTracker`` adds sessions up per
model (``schemas.clickstream.served_by`` of the search's ``search_meta``) into the Prometheus metrics
and into time windows of ``window_s`` seconds by search time, which ``render_chart`` draws: one line
per model in each of click-through rate, MRR, irrelevant rate and abandonment, a shaded 95% interval
(normal approximation) and a dashed line where each model served its first search, so a drop after a
new model went live shows at a glance, and a window too small to tell shows as a wide band.

A session seen twice (the sessions path is at-least-once) counts once while its id is remembered
(the last ``remember`` ids).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from observability import metrics as m
from schemas.clickstream import served_by
from schemas.sessions import ClosedSession


@dataclass(frozen=True)
class SessionJudgement:
    model: str
    searched_at: datetime
    clicked: bool
    reciprocal_rank: float
    irrelevant: bool

    @property
    def abandoned(self) -> bool:
        return not self.clicked


def judge(session: ClosedSession) -> SessionJudgement:
    positions = {result.object_id: n for n, result in
                 enumerate(sorted(session.search_results, key=lambda r: r.rank), start=1)}
    events = sorted(session.events, key=lambda e: e.created_at)
    first = events[0] if events else None
    position = positions.get(first.object_id) if first is not None else None
    return SessionJudgement(
        model=served_by(session.search_meta), searched_at=session.created_at, clicked=first is not None,
        reciprocal_rank=1.0 / position if position else 0.0, irrelevant=session.is_irrelevant,
    )


@dataclass
class QualityTotals:
    sessions: int = 0
    clicked: int = 0
    rr_sum: float = 0.0
    rr_squares: float = 0.0
    irrelevant: int = 0

    def add(self, judgement: SessionJudgement) -> None:
        self.sessions += 1
        self.clicked += judgement.clicked
        self.rr_sum += judgement.reciprocal_rank
        self.rr_squares += judgement.reciprocal_rank ** 2
        self.irrelevant += judgement.irrelevant

    @property
    def ctr(self) -> float:
        return self.clicked / self.sessions if self.sessions else math.nan

    @property
    def mrr(self) -> float:
        return self.rr_sum / self.sessions if self.sessions else math.nan

    @property
    def irrelevant_rate(self) -> float:
        return self.irrelevant / self.sessions if self.sessions else math.nan

    @property
    def abandonment(self) -> float:
        return 1.0 - self.ctr if self.sessions else math.nan

    def half_width(self, attribute: str, z: float = 1.96) -> float:
        """Half the width of the normal-approximation 95% interval of one of the four figures."""
        if self.sessions < 2:
            return math.nan
        if attribute == "mrr":
            variance = max(self.rr_squares / self.sessions - self.mrr ** 2, 0.0)
        else:
            share = getattr(self, attribute)
            variance = share * (1 - share)
        return z * math.sqrt(variance / self.sessions)


@dataclass
class QualityTracker:
    window_s: float = 300.0
    remember: int = 200_000
    totals: dict[str, QualityTotals] = field(default_factory=dict)
    windows: dict[tuple[float, str], QualityTotals] = field(default_factory=dict)
    first_seen: dict[str, datetime] = field(default_factory=dict)
    _seen: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, session: ClosedSession) -> bool:
        """Count one closed session; False when it was counted already."""
        with self._lock:
            if session.session_id in self._seen:
                return False
            self._seen[session.session_id] = None
            if len(self._seen) > self.remember:
                self._seen.popitem(last=False)
            judgement = judge(session)
            model = judgement.model
            self.totals.setdefault(model, QualityTotals()).add(judgement)
            start = math.floor(judgement.searched_at.timestamp() / self.window_s) * self.window_s
            self.windows.setdefault((start, model), QualityTotals()).add(judgement)
            if model not in self.first_seen or judgement.searched_at < self.first_seen[model]:
                self.first_seen[model] = judgement.searched_at
                m.SEARCH_MODEL_FIRST_SEEN.labels(model).set(judgement.searched_at.timestamp())
            _export(model, judgement, self.totals[model])
            return True

    def series(self) -> dict[str, list[tuple[datetime, QualityTotals]]]:
        """Per model, its windows in time order (start of window, totals)."""
        with self._lock:
            by_model: dict[str, list[tuple[datetime, QualityTotals]]] = {}
            for (start, model), totals in sorted(self.windows.items()):
                by_model.setdefault(model, []).append((datetime.fromtimestamp(start, timezone.utc), totals))
            return by_model


def _export(model: str, judgement: SessionJudgement, totals: QualityTotals) -> None:
    m.SEARCH_SESSIONS.labels(model).inc()
    if judgement.clicked:
        m.SEARCH_CLICKED.labels(model).inc()
    else:
        m.SEARCH_ABANDONED.labels(model).inc()
    m.SEARCH_RR_SUM.labels(model).inc(judgement.reciprocal_rank)
    if judgement.irrelevant:
        m.SEARCH_IRRELEVANT.labels(model).inc()
    m.SEARCH_CTR.labels(model).set(totals.ctr)
    m.SEARCH_MRR.labels(model).set(totals.mrr)
    m.SEARCH_IRRELEVANT_RATE.labels(model).set(totals.irrelevant_rate)
    m.SEARCH_ABANDONMENT.labels(model).set(totals.abandonment)


PANELS = (("click-through rate", "ctr"), ("MRR of the first click", "mrr"),
          ("marked irrelevant", "irrelevant_rate"), ("abandoned (no click)", "abandonment"))


def render_chart(tracker: QualityTracker, path: Path) -> Path:
    """A PNG of the four figures over time, one line per model, a dashed line where each model went live."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datetime import timedelta

    series = tracker.series()
    half_window = timedelta(seconds=tracker.window_s / 2)
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(10, 9), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = sorted(series, key=lambda model: tracker.first_seen.get(model, datetime.max.replace(tzinfo=timezone.utc)))
    for axis, (title, attribute) in zip(axes, PANELS):
        for n, model in enumerate(order):
            points = series[model]
            colour = colours[n % len(colours)]
            times = [t + half_window for t, _ in points]  # a window's figure sits at its middle
            values = [getattr(s, attribute) for _, s in points]
            spread = [s.half_width(attribute) for _, s in points]
            axis.plot(times, values, marker="o", markersize=3, color=colour,
                      label=f"{_short(model)} ({tracker.totals[model].sessions} sessions)")
            axis.fill_between(times, [v - w for v, w in zip(values, spread)], [v + w for v, w in zip(values, spread)],
                              color=colour, alpha=0.15, linewidth=0)
            axis.axvline(tracker.first_seen[model], color=colour, linestyle="--", linewidth=1)
        axis.set_ylabel(title)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0].set_title(f"Live search quality per serving model ({tracker.window_s:.0f} s windows, shaded: 95% "
                      "interval; dashed: the model's first search)", fontsize=10)
    if order:
        axes[0].legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("search time (UTC)")
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp.png")
    figure.savefig(partial, dpi=90)
    plt.close(figure)
    partial.replace(path)
    return path


def _short(model: str, keep: int = 48) -> str:
    return model if len(model) <= keep else "…" + model[-keep:]
