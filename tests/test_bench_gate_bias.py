"""The gate-bias bench on the plain-spoken shop and the tiny model: every figure for each kind of relevance
and user; both estimates treat all orders alike where no order is better and users never stop early, and
only the click-model one (the gate's default) still does when users stop after a few clicks."""

from __future__ import annotations

import pytest

from bench.gate_bias import ESTIMATES, ORDERINGS, main
from simulation.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow


def test_the_bench_prints_each_orderings_estimate_and_truth_and_the_estimate_is_fair_without_early_stops(
        tmp_path, capsys):
    model = build_tiny_model(tmp_path / "model")
    assert main(["--model", str(model), "--max-clicks", "3", "10", "--sessions-per-query", "3"]) == 0
    figures = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert figures["dataset"] == "shop-plain"
    for prefix in ("judged_max3", "judged_max10", "flat_max3", "flat_max10"):
        assert int(figures[f"{prefix}_queries"]) > 500
        for name in ORDERINGS:
            for kind in ESTIMATES:
                assert 0.0 <= float(figures[f"{prefix}_{kind}_{name}"]) <= 1.0 + 1e-9
        for name in ORDERINGS[1:]:
            assert f"{prefix}_true_lift_{name}" in figures
    # Every item equally relevant: the truth ties every order, and with users who look on after their
    # clicks both estimates do too (within the noise of a few thousand sessions).
    for name in ORDERINGS[1:]:
        assert float(figures[f"flat_max10_true_lift_{name}"]) == 0.0
        for kind in ESTIMATES:
            assert abs(float(figures[f"flat_max10_{kind}_lift_{name}"])) < 0.01, (kind, name)
    # Users who stop after 3 clicks: below their last click nothing was looked at. Counting it as
    # skipped (ips) prefers the logged order; the click model sees that they stopped.
    assert float(figures["flat_max3_ips_lift_reversed"]) < -0.05
    for name in ORDERINGS[1:]:
        assert abs(float(figures[f"flat_max3_cm_lift_{name}"])) < 0.01, name
    for kind in ESTIMATES:
        assert float(figures[f"judged_max10_{kind}_lift_reversed"]) < 0.0


@pytest.mark.parametrize("argv, says", [
    (["--sessions-per-query", "0"], "--sessions-per-query: must be at least 1"),
    (["--max-clicks", "3", "x"], "--max-clicks: not a whole number: 'x'"),
    (["--eta", "-0.5"], "--eta must be >= 0"),
])
def test_nonsense_options_are_usage_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2 and says in capsys.readouterr().err


def test_a_folder_that_is_not_a_beir_collection_is_a_usage_error_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--dataset", str(tmp_path)])
    assert stopped.value.code == 2 and f"{tmp_path} has no corpus.jsonl" in capsys.readouterr().err
