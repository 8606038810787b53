"""The composition root: the command line, the embedded runtime and the wiring of the components.

Components (schemas, ingest, session_store, stream_processors, trainer) never import this package.
"""
