"""Stream processors: raw clickstream → sessions → batches in the session store → BatchClosed.

- ``app``: the Faust app (``create_app(settings, store)``), wired in data order from
  ``batcher_agent`` (the one agent that changes the open batch, and announces what it closes),
  ``commands_agent`` (release commands to the batcher, unreadable ones to dead letters) and
  ``sessionizer_service`` (the sessionizer loops, started and stopped with the app);
- ``sessionizer``: the session rules as a pure function (state, events, now) → outcome;
- ``raw_events``: what makes a raw record usable, and why not;
- ``sessionizer_loop`` / ``sessionizer_process``: the batched read → sessionize → emit → save → commit
  loop, and the processes that run it;
- ``batcher_records``: what the sessionizer, the command path and the age timer send the batcher;
- ``batcher`` / ``announcements``: the open batch's rules, and exactly-once BatchClosed;
- ``replay`` / ``replay_batches``: raw events of a time range re-sessionized, by the same rules, into
  new batches;
- ``counters``, ``gc_pause``: the small pieces they share.

Depends on ``schemas``, ``messaging``, ``session_store`` and ``ingest.partitioner`` (the key →
partition rule) only.
"""
