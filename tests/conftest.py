"""Fixtures live in tests/fixtures/, one module per real part (broker, stores, services)."""

import os

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.stores",
    "tests.fixtures.services",
    "tests.fixtures.trainer",
    "tests.fixtures.index",
]
