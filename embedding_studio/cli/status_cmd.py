from __future__ import annotations

import argparse

HELP = "One screen on a running system: stream, trainer, index and live search quality, from the metrics endpoints."
DESCRIPTION = (
    "Scrapes the Prometheus metrics endpoints of the running processes (those announced under "
    "ES_DATA_DIR/metrics/, as `embedding-studio up` and every process started with the same ES_DATA_DIR do, "
    "plus any --url) and prints: events in, dead letters by reason, late events, sessions closed, open "
    "sessions, the open batch and the consumer lag of the stream workers; tasks by state and training "
    "steps/s of the trainer; the served index version and its refreshes; and per serving model "
    "(search_meta `model_uri`) the click-through rate, MRR of the first click, irrelevant rate and "
    "abandonment of closed sessions. The latest tasks come from the task status topic when a broker is "
    "set (ES_KAFKA_BOOTSTRAP). The chart of search quality over time is ES_DATA_DIR/search-quality.png. "
    "Exit code 1 when no endpoint answered."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", action="append", default=[],
                        help="A metrics endpoint to read as well (repeatable), e.g. http://worker:9400/metrics.")
    parser.add_argument("--tasks", type=int, default=5, help="Latest tasks to list from the status topic (0: none).")
    parser.add_argument("--timeout", type=float, default=5.0, help="Seconds to wait for each source.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from observability.exposition import announced_endpoints
    from observability.summary import scrape
    from schemas.settings import Settings

    settings = Settings()
    endpoints = announced_endpoints(settings.data_dir)
    urls = [e.url for e in endpoints] + [u for u in args.url if u not in {e.url for e in endpoints}]
    if not urls:
        print(f"status: no metrics endpoint announced under {settings.data_dir}/metrics and no --url given; "
              "is the system running with this ES_DATA_DIR?")
        return 1
    result = scrape(urls, args.timeout)
    roles = {e.url: f"{e.role} (pid {e.pid})" for e in endpoints}
    for url in urls:
        state = "unreachable: " + result.failed[url] if url in result.failed else "ok"
        print(f"endpoint  {roles.get(url, 'given'):<22} {url}  {state}")
    for line in summary_lines(result):
        print(line)
    if args.tasks and settings.kafka_bootstrap:
        _print_tasks(settings, args.tasks, args.timeout)
    chart = settings.data_dir / "search-quality.png"
    if chart.exists():
        print(f"chart     {chart.resolve()}")
    return 0 if result.reached else 1


def summary_lines(result) -> list[str]:
    from observability.summary import search_quality

    t = result.total
    lines = []
    if result.has("es_stream_events_in_total"):
        dead = result.by_label("es_stream_dead_letters_total", "reason")
        closed = result.by_label("es_stream_sessions_closed_total", "reason")
        lag = result.by_label("es_stream_consumer_lag", "partition")
        lines.append(f"stream    events in {t('es_stream_events_in_total'):.0f}, "
                     f"late {t('es_stream_late_events_total'):.0f}, duplicates {t('es_stream_duplicate_events_total'):.0f}, dead letters "
                     f"{sum(dead.values()):.0f}{_parts(dead)}")
        lines.append(f"          sessions closed {sum(closed.values()):.0f}{_parts(closed)}, open "
                     f"{t('es_stream_open_sessions'):.0f}; open batch {t('es_stream_open_batch_sessions'):.0f} "
                     f"sessions, {t('es_stream_open_batch_age_seconds'):.0f} s old; batches announced "
                     f"{t('es_stream_batches_announced_total'):.0f}")
        lines.append(f"          consumer lag {sum(lag.values()):.0f}"
                     + (" (" + " ".join(f"p{p}:{v:.0f}" for p, v in sorted(lag.items(), key=lambda i: int(i[0])))
                        + ")" if lag else ""))
    if result.has("es_trainer_tasks"):  # labelled series only a trainer creates
        states = {k: v for k, v in result.by_label("es_trainer_tasks", "state").items() if v}
        lines.append(f"trainer   tasks {', '.join(f'{k} {v:.0f}' for k, v in sorted(states.items())) or 'none'}; "
                     f"training steps {t('es_trainer_training_steps_total'):.0f} "
                     f"({t('es_trainer_training_steps_per_second'):.2f}/s now)")
    if result.has("es_index_refreshes_total"):  # labelled series only an indexer creates
        refreshes = result.by_label("es_index_refreshes_total", "outcome")
        version = t("es_index_served_version")
        served = f"v{version:.0f} served, {t('es_index_served_items'):.0f} items" if version else "nothing served"
        lines.append(f"index     {served}; refreshes {sum(refreshes.values()):.0f}{_parts(refreshes)}")
    if result.has("es_search_requests_total"):
        served = result.by_label("es_search_requests_total", "model")
        lines.append(f"search    answered {sum(served.values()):.0f}{_parts(served)}")
    quality = search_quality(result)
    if quality:
        width = max(len("serving model"), *(len(q.model) for q in quality))
        lines.append("search quality of closed sessions, per serving model, in the order they went live:")
        lines.append(f"  {'serving model':<{width}}  sessions    CTR    MRR  irrelevant  abandoned  vs the model before")
        for before, q in zip([None, *quality], quality):
            lines.append(f"  {q.model:<{width}}  {q.sessions:8d}  {q.ctr:5.3f}  {q.mrr:5.3f}  {q.irrelevant_rate:10.3f}"
                         f"  {q.abandonment:9.3f}  {_versus(before, q)}")
    elif result.has("es_stream_events_in_total"):
        lines.append("search quality: no closed session judged yet")
    return lines


def _versus(before, now) -> str:
    """CTR and MRR change against the model that went live before; DROP when either fell by more than
    twice its standard error (for MRR an upper bound: m(1-m) bounds the variance of a figure in [0, 1]).
    A flag for a person to look at the chart, not a significance test."""
    if before is None:
        return "-"
    flags = []
    for name, old, new in (("CTR", before.ctr, now.ctr), ("MRR", before.mrr, now.mrr)):
        error = ((old * (1 - old) / before.sessions) + (new * (1 - new) / now.sessions)) ** 0.5
        flags.append(f"{name} {new - old:+.3f}" + (" DROP" if new < old - 2 * error else ""))
    return ", ".join(flags)


def _parts(values: dict[str, float]) -> str:
    shown = {k: v for k, v in values.items() if v}
    return " (" + ", ".join(f"{k} {v:.0f}" for k, v in sorted(shown.items())) + ")" if shown else ""


def _print_tasks(settings, limit: int, timeout_s: float) -> None:
    from embedding_studio.cli.errors import CliError
    from embedding_studio.cli.task_status import latest_states
    from messaging import KafkaCluster

    try:
        states, complete = latest_states(KafkaCluster.from_settings(settings), settings.topics(), timeout_s)
    except CliError as error:
        print(f"tasks     not read: {error}")
        return
    rows = sorted(states.values(), key=lambda s: (s.updated_at, s.task_id), reverse=True)[:limit]
    note = "" if complete else " (status topic not read to its end)"
    print(f"tasks     {len(states)} on {settings.topics().task_status.name}{note}" + (", latest:" if rows else ""))
    for s in rows:
        print(f"  {s.task_id}  {s.status.value:<10} {s.progress.fraction:4.0%} {s.progress.stage:<16} "
              f"batch {s.batch_id or '-'}")


def print_metrics_endpoints(system, expected: int) -> None:
    """`up`'s lines about metrics: each process's endpoint once it announced itself."""
    from observability.exposition import wait_for_endpoints

    settings = system.settings
    if not settings.metrics_enabled:
        print("metrics  off (ES_METRICS_ENABLED=false)")
        return
    found = wait_for_endpoints(settings.data_dir, expected, alive=lambda: not system.problems())
    for endpoint in found:
        print(f"metrics  {endpoint.role:<8} {endpoint.url}")
    print(f"status   `embedding-studio status` (ES_DATA_DIR={settings.data_dir}); search-quality chart "
          f"{settings.data_dir / 'search-quality.png'}")
