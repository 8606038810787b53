"""The training bench runs end to end on the tiny model and prints its figures (no timing is judged)."""

from __future__ import annotations

import pytest

from bench import train

pytestmark = pytest.mark.slow


def test_the_training_bench_prints_both_rates_and_their_ratio(capsys):
    assert train.main(["--model", "tiny", "--steps", "3", "--repeats", "1", "--device", "cpu"]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    for name in ("train_pairs_per_s", "st_trainer_pairs_per_s", "train_speedup"):
        assert float(printed[name]) > 0, name
    assert printed["train_steps"] == "3"


def test_the_bench_data_fills_exactly_the_steps_asked_for():
    data = train.bench_data(5)
    assert data.steps == 5 and len(data.triples) > 4 * train.BATCH_SIZE
    assert all(t.positive is not None and t.negative is not None for t in data.triples)
