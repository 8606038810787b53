"""How the gate's click estimates score rankings whose true quality is known.

Each model ranks the items the batch showed for a test query (``trainer.evaluation``), judged by one of
two estimates: ``ips`` (``ips_ndcg_at_10``), where each click counts by the inverse of its position's
examination propensity and every other item as skipped, and ``cm`` (``cm_ndcg_at_10``, the gate's
default), where each item counts by its clicks over the times it was likely examined, knowing when
users stop. This bench asks whether an estimate prefers the ranking the clicks were logged on.
Simulated users search a BEIR collection's training queries with the starting model's top 10 (the
quality bench's users); the trainer's own code turns their sessions into held-out queries; then
orderings of each query's shown items are scored by the estimate and by the true judgments:

- ``logged``: the starting model's order, the one the users saw;
- ``perfect``: relevant items first, ties among them in random order, as a model that has learnt
  orders items the clicks cannot tell apart;
- ``perfect_logged_ties``: relevant items first, ties in the logged order;
- ``shuffled``, ``reversed`` and ``demoted`` (the logged order with its most relevant item moved
  last): worse orders.

Each figure is reported for the collection's own judgments and for ``flat`` ones (every item equally
relevant: no order is better than another, so an unbiased estimate scores them all alike), with users
who stop after ``--max-clicks`` clicks (3, the quality bench's users) and with users who never stop
early (10). ``*_ips_lift_*`` and ``*_cm_lift_*`` are an ordering's estimate minus the logged one's,
``*_true_lift_*`` the same in true nDCG@10 of the shown items. When users stop is estimated from the
sessions (``trainer.propensity.estimate_continuation``), as the trainer does.

``python -m bench.gate_bias`` writes the plain-spoken shop (``simulation.shop_catalog --plain``) to a
temporary folder and measures it; ``--dataset DIR`` measures a BEIR folder instead.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

ORDERINGS = ("logged", "perfect", "perfect_logged_ties", "shuffled", "reversed", "demoted")
ESTIMATES = {"ips": "gains", "cm": "relevance"}  # figure prefix -> the HeldOutQuery field it judges by


def _orderings(logged: Sequence[str], truth: Mapping[str, float], rng: random.Random) -> dict[str, dict[str, float]]:
    """Scores (higher first) of each ordering of a query's shown items, ``logged`` being in shown order."""
    place = {item: -position for position, item in enumerate(logged)}
    best = max(logged, key=lambda i: truth.get(i, 0.0), default=None)  # the first of the most relevant
    return {
        "logged": dict(place),
        "perfect": {i: truth.get(i, 0.0) + 1e-3 * rng.random() for i in logged},
        "perfect_logged_ties": {i: truth.get(i, 0.0) + 1e-6 * place[i] for i in logged},
        "shuffled": {i: rng.random() for i in logged},
        "reversed": {i: -place[i] for i in logged},
        "demoted": {i: place[i] - (len(logged) if i == best else 0) for i in logged},
    }


def measure(queries: Sequence, rank: Callable, *, max_clicks: int, eta: float, sessions_per_query: int,
            seed: int) -> dict[str, float]:
    """Mean estimate and mean true nDCG@10 of each ordering, over the queries with a click."""
    from simulation.click_model import PositionBiasedClickModel
    from simulation.user_simulator import simulate_sessions
    from trainer.evaluation import judged_dcg
    from trainer.examples import HeldOutSession, ItemRef, group_held_out
    from trainer.propensity import estimate_continuation, prior
    from trainer.ranking_measures import ndcg_at_k, rerank

    top_gain = max((g for q in queries for g in q.gains.values()), default=1.0)
    click_model = PositionBiasedClickModel(eta=eta, max_gain=top_gain, max_clicks=max_clicks)
    simulated = simulate_sessions(queries, rank, len(queries) * sessions_per_query, click_model=click_model, seed=seed)
    held = [HeldOutSession(
        f"s{number}", s.query.text, tuple(ItemRef(item, float(position)) for position, item in enumerate(s.shown, 1)),
        frozenset() if s.reaction.marked_irrelevant else frozenset(s.shown[p] for p in s.reaction.clicked),
        s.reaction.marked_irrelevant) for number, s in enumerate(simulated)]
    # The shown lists never change between sessions here, so the trainer's examination estimate would
    # be its prior; when users stop is estimated from the sessions, as the trainer does.
    propensity = replace(prior(10, eta), continuation=estimate_continuation(held))
    grouped = group_held_out(held, propensity)
    truth = {s.query.text: s.query.gains for s in simulated}
    estimate = {(kind, name): [] for kind in ESTIMATES for name in ORDERINGS}
    true: dict[str, list[float]] = {name: [] for name in ORDERINGS}
    ideals: dict[str, list[float]] = {kind: [] for kind in ESTIMATES}
    for query in grouped:
        logged = [item.object_id for item in query.sessions[0].shown]
        gains = truth[query.text]
        orderings = _orderings(logged, gains, random.Random(f"{seed}:{query.key}"))
        for kind, judged_by in ESTIMATES.items():
            found = {name: judged_dcg(getattr(query, judged_by), scores) for name, scores in orderings.items()}
            if found["logged"] is None:
                continue
            ideals[kind].append(found["logged"][1])
            for name in ORDERINGS:
                estimate[kind, name].append(found[name][0])
        if query.gains:
            for name, scores in orderings.items():
                true[name].append(ndcg_at_k(rerank([scores[i] for i in logged], [gains.get(i, 0.0) for i in logged]), 10))
    figures = {"queries": float(len(true["logged"]))}
    for name in ORDERINGS:
        figures[f"true_{name}"] = statistics.mean(true[name]) if true[name] else 0.0
    for kind in ESTIMATES:
        scale = statistics.mean(ideals[kind]) if ideals[kind] else 1.0  # the gate's constant normalisation
        for name in ORDERINGS:
            figures[f"{kind}_{name}"] = statistics.mean(estimate[kind, name]) / scale if ideals[kind] else 0.0
    for name in ORDERINGS[1:]:
        for kind in ESTIMATES:
            figures[f"{kind}_lift_{name}"] = figures[f"{kind}_{name}"] - figures[f"{kind}_logged"]
        figures[f"true_lift_{name}"] = figures[f"true_{name}"] - figures["true_logged"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gate_bias", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help="A BEIR-layout folder (default: the plain-spoken shop).")
    parser.add_argument("--max-clicks", type=_at_least_one, nargs="+", default=[3, 10],
                        help="Users stop after this many clicks; one measurement each (default 3 10).")
    parser.add_argument("--sessions-per-query", type=_at_least_one, default=4,
                        help="Simulated sessions a query (default 4).")
    parser.add_argument("--eta", type=float, default=0.5, help="Position bias 1/rank**eta, >= 0 (default 0.5).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--model", help="Starting model folder (default: the packaged all-MiniLM-L6-v2).")
    args = parser.parse_args(argv)
    if args.eta < 0:
        parser.error(f"--eta must be >= 0, got {args.eta}")

    from bench.quality import load_dataset
    from simulation.user_simulator import SimQuery
    from trainer.retrieval_eval import CorpusIndex, ranker

    with tempfile.TemporaryDirectory(prefix="es-gate-bias-") as scratch:
        folder = args.dataset
        if folder is None:
            from simulation.shop_catalog import load_shop, write_beir

            folder = write_beir(load_shop(plain=True), Path(scratch) / "shop-plain")
        try:
            data = load_dataset(folder)
        except FileNotFoundError as error:
            parser.error(str(error))
    model = _model(args.model, args.max_seq_length)
    rank = ranker(model, CorpusIndex.build(model, data.ids, data.texts, progress=False))
    print(f"dataset: {data.name}")
    print(f"training_queries: {len(data.train)}")
    for relevance in ("judged", "flat"):
        everything = {i: 1.0 for i in data.ids}
        queries = [SimQuery(q, data.queries[q], everything if relevance == "flat" else data.train[q])
                   for q in sorted(data.train)]
        for max_clicks in args.max_clicks:
            figures = measure(queries, rank, max_clicks=max_clicks, eta=args.eta,
                              sessions_per_query=args.sessions_per_query, seed=args.seed)
            for name, value in figures.items():
                print(f"{relevance}_max{max_clicks}_{name}: {value:.4f}" if name != "queries"
                      else f"{relevance}_max{max_clicks}_{name}: {int(value)}")
            sys.stdout.flush()
    return 0


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _model(path: str | None, max_seq_length: int):
    from trainer.base_model import minilm_path
    from trainer.serving import load_model

    model = load_model(str(path or minilm_path()), device="cpu")
    model.max_seq_length = max_seq_length
    return model


if __name__ == "__main__":
    sys.exit(main())
