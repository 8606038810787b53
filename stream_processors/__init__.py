"""Stream processors: raw clickstream → sessions → batches in the session store → BatchClosed.

- ``app``: the Faust app (``create_app(settings, store)``), its agents and timers, in data order;
- ``sessionizer``: the session rules as a pure function (state, events, now) → outcome;
- ``raw_events``: what makes a raw record usable, and why not;
- ``sessionizer_loop`` / ``sessionizer_process``: the batched read → sessionize → emit → save → commit
  loop, and the processes that run it;
- ``records``: what the sessionizer, the command path and the age timer send the batcher;
- ``batcher`` / ``announcements``: the open batch's rules, and exactly-once BatchClosed;
- ``replay``: raw events of a time range re-sessionized, by the same rules, into a new batch;
- ``dead_letters``, ``metrics``, ``gc_pause``: the small pieces they share.

Depends on ``schemas``, ``session_store`` and ``ingest.partitioner`` (the key → partition rule) only.
"""
