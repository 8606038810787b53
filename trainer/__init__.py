"""The trainer: turns a closed batch (or an operator's command) into a fine-tuned model announced
only when it is shown to be better. ``service`` is the consume loop of commands and BatchClosed
events, ``task_states`` the tasks' state machine, ``task_worker`` the fine-tune thread; an
iteration (``iteration``) builds training data from the batch (``examples``, ``triples``,
``propensity``, item ``loaders``), searches parameters with Optuna and fine-tunes with PyTorch
Lightning (``fine_tune``, ``lightning_module``, ``towers``, ``losses``), judges the result on
held-out queries (``evaluation``, ``judgement``, ``metrics``), records everything in MLflow
(``tracking``) and publishes status and ModelReady events (``publisher``). Plugins
(``plugins``, ``plugin_loader``) are the fine-tuning methods it runs. Depends on ``schemas``,
``messaging`` and ``session_store``.
"""
