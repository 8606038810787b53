"""Fine-tuning methods shipped with the package (registered as entry points in pyproject.toml).

Users' own methods live in the folders of ``ES_PLUGINS_PATH``; these are always available.
"""
