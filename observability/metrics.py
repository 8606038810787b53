"""Every Prometheus metric of the system, defined once, in the process-wide default registry.

Names follow Prometheus' conventions (``es_`` prefix, ``_total`` for counters, base units). A process
exposes only the metrics it touches; a metric a process never touches still shows with its help
text, so a dashboard finds every name everywhere.

The stream worker's counters are kept by its sessionizer loops (some in child processes) as plain
counters and read at scrape time by ``observability.stream.StreamCollector``; their families are
described in ``STREAM_COUNTERS`` here, beside the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

# --- stream worker (families produced by observability.stream.StreamCollector) -----------------


@dataclass(frozen=True)
class CounterFamily:
    name: str
    help: str
    label: str | None = None  # the label a counter key's suffix goes into


STREAM_EVENTS_IN = CounterFamily("es_stream_events_in_total", "Raw clickstream records the sessionizers read.")
STREAM_DEAD_LETTERS = CounterFamily(
    "es_stream_dead_letters_total", "Records and sessions sent to the clickstream dead-letter topic, by reason.",
    "reason")
STREAM_LATE_EVENTS = CounterFamily("es_stream_late_events_total",
                                   "Events for sessions already closed, routed to the late topic.")
STREAM_SESSIONS_CLOSED = CounterFamily("es_stream_sessions_closed_total", "Sessions closed, by why they closed.",
                                       "reason")
STREAM_DUPLICATES = CounterFamily("es_stream_duplicate_events_total", "Events seen again (same event id), ignored.")
STREAM_BATCHES_ANNOUNCED = CounterFamily("es_stream_batches_announced_total",
                                         "Closed batches announced on the batches topic.")
STREAM_BATCH_FAILURES = CounterFamily("es_stream_batch_failures_total",
                                      "Sessionizer read batches that failed and were retried.")

# Counter keys of the sessionizer and batcher (stream_processors.counters.StreamCounters) -> family,
# label value. A key ending in ``_*`` is a prefix whose rest is the label value.
STREAM_COUNTERS: dict[str, tuple[CounterFamily, str | None]] = {
    "events_in": (STREAM_EVENTS_IN, None),
    "dead_letter_*": (STREAM_DEAD_LETTERS, None),
    "orphan_sessions": (STREAM_DEAD_LETTERS, "orphan_session"),
    "sessions_too_big": (STREAM_DEAD_LETTERS, "session_too_big"),
    "states_refused": (STREAM_DEAD_LETTERS, "store_refused"),
    "commands_dead_lettered": (STREAM_DEAD_LETTERS, "unreadable_command"),
    "late_events": (STREAM_LATE_EVENTS, None),
    "sessions_closed_*": (STREAM_SESSIONS_CLOSED, None),
    "duplicates": (STREAM_DUPLICATES, None),
    "batches_announced": (STREAM_BATCHES_ANNOUNCED, None),
    "batch_failures": (STREAM_BATCH_FAILURES, None),
}

STREAM_OPEN_SESSIONS = ("es_stream_open_sessions", "Sessions open in the session store (not yet closed).")
STREAM_BATCH_SESSIONS = ("es_stream_open_batch_sessions", "Sessions in the open batch (0: none open).")
STREAM_BATCH_AGE = ("es_stream_open_batch_age_seconds", "Age of the open batch (0: none open).")
STREAM_CONSUMER_LAG = ("es_stream_consumer_lag",
                       "Clickstream records not yet committed by the sessionizers, per partition "
                       "(high watermark minus committed offset).")

# --- trainer -----------------------------------------------------------------------------------

TASKS = Gauge("es_trainer_tasks", "Tasks this trainer has seen, by their latest state.", ["state"])
TASK_TRANSITIONS = Counter("es_trainer_task_transitions_total", "Task status changes published, by new state.",
                           ["state"])
TASK_DURATION = Histogram(
    "es_trainer_task_duration_seconds", "From a task's creation to its final state, by that state.", ["state"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf")))
TRAINING_STEPS = Counter("es_trainer_training_steps_total", "Optimiser steps of fine-tuning runs.")
TRAINING_STEPS_PER_S = Gauge("es_trainer_training_steps_per_second",
                             "Optimiser steps per second of the running fine-tune (0 when none runs).")

# --- indexer -----------------------------------------------------------------------------------

INDEX_REFRESHES = Counter("es_index_refreshes_total", "Index refreshes, by outcome (served or failed).",
                          ["outcome"])
INDEX_REFRESH_DURATION = Histogram(
    "es_index_refresh_duration_seconds", "Seconds a successful refresh took (embedding the catalog).",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf")))
INDEX_SERVED_VERSION = Gauge("es_index_served_version", "Version number of the served index version.")
INDEX_SERVED_ITEMS = Gauge("es_index_served_items", "Items in the served index version.")

# --- search endpoint ---------------------------------------------------------------------------

SEARCH_REQUESTS = Counter("es_search_requests_total", "Searches the endpoint answered, by the model that ranked them.",
                          ["model"])
SEARCH_LATENCY = Histogram("es_search_request_duration_seconds", "Seconds to embed the query and search the index.",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf")))

# --- search quality (from closed sessions, per model that served the search) --------------------

SEARCH_SESSIONS = Counter("es_search_sessions_total", "Closed search sessions, by the model that ranked them.",
                          ["model"])
SEARCH_CLICKED = Counter("es_search_clicked_sessions_total", "Closed sessions with at least one interaction.",
                         ["model"])
SEARCH_RR_SUM = Counter("es_search_first_click_reciprocal_rank",
                        "Sum over closed sessions of 1/position of the first clicked result (0 without a click).",
                        ["model"])
SEARCH_IRRELEVANT = Counter("es_search_irrelevant_sessions_total", "Closed sessions the user marked irrelevant.",
                            ["model"])
SEARCH_ABANDONED = Counter("es_search_abandoned_sessions_total", "Closed sessions without any interaction.",
                           ["model"])

SEARCH_CTR = Gauge("es_search_click_through_rate", "Share of closed sessions with a click, since start.", ["model"])
SEARCH_MRR = Gauge("es_search_mean_reciprocal_rank", "Mean reciprocal rank of the first click, since start.",
                   ["model"])
SEARCH_IRRELEVANT_RATE = Gauge("es_search_irrelevant_rate", "Share of closed sessions marked irrelevant.", ["model"])
SEARCH_ABANDONMENT = Gauge("es_search_abandonment_rate", "Share of closed sessions without a click.", ["model"])
SEARCH_MODEL_FIRST_SEEN = Gauge("es_search_model_first_search_timestamp_seconds",
                                "When the model served its first search (of the sessions judged): when it went live.",
                                ["model"])


def initialise(role: str) -> None:
    """Label values a process of this role reports, created at zero: a series exists before its first
    event (Prometheus' rate() needs the zero), and ``status`` tells the running roles apart by them."""
    if role == "trainer":
        from schemas.tasks import TaskState

        for state in TaskState:
            TASKS.labels(state.value)
            TASK_TRANSITIONS.labels(state.value)
    elif role == "indexer":
        for outcome in ("served", "failed"):
            INDEX_REFRESHES.labels(outcome)
