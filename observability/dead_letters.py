"""A dead-letter reason's kind: a short, bounded label for the metrics (the reason itself quotes
user input and cannot be a Prometheus label)."""

from __future__ import annotations

# First prefix that matches wins; the stream worker's reasons start with these words.
_KINDS = (
    ("empty value", "empty"),
    ("oversized", "oversized"),
    ("invalid event", "invalid"),
    ("missing key", "bad_key"),
    ("key is not utf-8", "bad_key"),
    ("key ", "bad_key"),
    ("misrouted", "misrouted"),
    ("failed ", "repeated_failure"),
    ("sessionizer failed", "sessionizer_error"),
)


def reason_kind(reason: str) -> str:
    lowered = reason.lower()
    for prefix, kind in _KINDS:
        if lowered.startswith(prefix):
            return kind
    return "other"
