"""The index bench end to end on the tiny model: every figure the README row needs is printed, and the
refresh's vectors are compared with plain float32 ones."""

from __future__ import annotations

import pytest

from bench.index import bench_refresh

pytestmark = pytest.mark.slow


def test_the_refresh_bench_prints_its_figures_and_what_its_precision_costs():
    figures = dict(bench_refresh(items=60, model="tiny", repeats=1))
    for name in ("index_refresh_items_per_s", "st_encode_insert_items_per_s", "index_refresh_ratio",
                 "index_refresh_precision"):
        assert name in figures, name
    assert figures["index_refresh_precision"] in ("fp32", "bf16")
    assert float(figures["index_refresh_cosine_to_fp32_min"]) > 0.99
