"""What an operator sees of a running system. ``metrics`` defines every Prometheus metric once;
``exposition`` serves a process's ``/metrics`` and announces where it listens; ``stream`` gathers the
stream worker's counters (its sessionizer child processes' too) at scrape time; ``tasks`` and ``index``
turn trainer statuses and index refreshes into metrics; ``search_quality`` judges closed sessions per
serving model and draws the chart; ``summary`` reads endpoints back for ``embedding-studio status``;
``logs`` gives JSON lines carrying session, batch and task ids. It sits at the layer of
``session_store``: it depends on ``schemas`` only, and the processes hook into it.
"""
