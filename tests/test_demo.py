"""`embedding-studio demo` end to end, on a tiny random model so that it takes seconds: simulated
shoppers → producer SDK → broker → stream worker → store → trainer → ModelReady (or the starting
model kept) → base vs fine-tuned figures printed and charted. A random model is not expected to
improve, so only the shape of the outcome is checked, not the lift."""

from __future__ import annotations

import logging
import re

import pytest

from embedding_studio.cli import main
from simulation.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

FIGURE = r"\s+(\d\.\d{3})\s+(\d\.\d{3})\s+([+-]\d\.\d{3})$"


def test_demo_runs_the_whole_pipeline_and_draws_its_chart(tmp_path, monkeypatch, capfd):
    # Every part embedded, whatever the environment names; the demo's quieting stays in this test.
    for name in ("ES_KAFKA_BOOTSTRAP", "ES_MLFLOW_TRACKING_URI", "ES_STORE_URL", "ES_ITEMS_URL", "ES_BASE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # 80 sessions leave a handful of judged test queries: let the task train and the gate judge them,
    # so the run goes through the fine-tune, its per-epoch lines and the trial chart.
    monkeypatch.setenv("ES_GATE_MIN_TEST_QUERIES", "1")
    root_level = logging.getLogger().level
    # Five layers: the default method's grid freezes up to four.
    model = build_tiny_model(tmp_path / "tiny", layers=5)
    out = tmp_path / "chart"
    try:
        code = main(["demo", "--model", str(model), "--sessions", "80", "--trials", "1", "--epochs", "1",
                     "--seed", "3", "--out", str(out)])
    finally:
        logging.getLogger().setLevel(root_level)
    captured = capfd.readouterr()
    printed = captured.out
    assert code == 0, printed
    # Every producer is gone before the broker stops: no librdkafka reconnect noise at the end.
    assert "Connection refused" not in captured.err, captured.err[-2000:]

    assert re.search(r"^simulated shoppers: 80 sessions", printed, re.M), printed
    assert re.search(r"^  80 of 80 sessions stored$", printed, re.M), printed
    assert re.search(r"^task \w+ done in \d+ s: ", printed, re.M), printed
    assert "at least 1 needed" not in printed, printed  # it trained: the gate judged a fine-tuned model
    base = re.search(r"^base model on held-out queries: nDCG@10 (\d\.\d{3}), Recall@10 (\d\.\d{3})$", printed, re.M)
    ndcg = re.search(r"^nDCG@10" + FIGURE, printed, re.M)
    recall = re.search(r"^Recall@10" + FIGURE, printed, re.M)
    assert base and ndcg and recall, printed
    assert (ndcg[1], recall[1]) == base.groups()  # the same base figures, before and after
    for figure in (ndcg, recall):
        assert abs(float(figure[2]) - float(figure[1]) - float(figure[3])) < 0.0015
    assert re.search(r"^mlflow UI: http://127\.0\.0\.1:\d+ ", printed, re.M), printed

    if re.search(r"^ModelReady: ", printed, re.M):  # the refreshed index answers the held-out searches
        assert re.search(r"^index refreshed: v2 serves \d+ items embedded with the new model", printed, re.M), printed
        assert re.search(r"^held-out searches, top 5: index v1 \(starting model\)", printed, re.M), printed
        assert len(re.findall(r"^  '.+': \d → \d relevant in the top 5 \(answered by v2\)$", printed, re.M)) == 4
    assert re.search(r"^demo took \d+ s$", printed, re.M), printed

    chart = out / "demo-metrics.png"
    assert re.search(rf"^chart: {re.escape(str(chart))}$", printed, re.M), printed
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
