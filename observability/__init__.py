"""What an operator sees of a running system: every Prometheus metric the processes expose
(``metrics``, each defined once), the HTTP endpoint that serves them and announces where it listens
(``exposition``), structured JSON logs carrying session, batch and task ids (``logs``), search
quality computed from closed sessions per model version (``search_quality``), and the one-screen
summary ``embedding-studio status`` prints from the endpoints (``summary``). It sits at the layer of
``session_store``: it depends on ``schemas`` only, and the processes hook into it.
"""
